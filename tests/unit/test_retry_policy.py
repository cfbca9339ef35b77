"""Which failures a device retries (with a fresh handshake) and which it never does."""

from __future__ import annotations

import pytest

from atls.errors import Reason, Refusal
from atls.session import IncompleteFlightError, NotTLSError, SessionStateError, TLSAlertError
from atls_client.client import CarrierError, retryable


@pytest.mark.parametrize(
    "error",
    [
        CarrierError("connection reset"),
        IncompleteFlightError("cut short"),
        NotTLSError("garbled"),
        TLSAlertError("x", alert="bad_record_mac", origin="local"),
        TLSAlertError("x", alert="decrypt_error", origin="peer"),
        Refusal(Reason.CLIENT_HANDSHAKE_LIMIT, "d", status=429),
        Refusal(Reason.HANDSHAKE_CAPACITY, "d", status=503),
        Refusal(Reason.INCOMPLETE_FLIGHT, "d", status=400),
        # the middlebox's own 502 page: it lost the service connection (a fleet met it)
        Refusal(Reason.UNEXPECTED_RESPONSE, "text/html: '<html>502 Bad Gateway'", status=502),
    ],
    ids=lambda e: type(e).__name__ + ":" + str(getattr(e, "alert", "") or getattr(e, "slug", "")),
)
def test_damage_and_overload_are_retried(error):
    assert retryable(error)


@pytest.mark.parametrize(
    "error",
    [
        TLSAlertError("x", alert="unknown_ca", origin="local"),
        TLSAlertError("x", alert="bad_certificate", origin="local"),
        TLSAlertError("x", alert="certificate_required", origin="peer"),
        TLSAlertError("x", alert=None, origin=None),
        Refusal(Reason.BLOCKED_BY_POLICY, "d", status=403),
        Refusal(Reason.UNKNOWN_SESSION, "d", status=404),
        SessionStateError("misuse"),
    ],
    ids=lambda e: type(e).__name__ + ":" + str(getattr(e, "alert", "") or getattr(e, "slug", "")),
)
def test_verdicts_and_refusals_are_never_retried(error):
    assert not retryable(error)
