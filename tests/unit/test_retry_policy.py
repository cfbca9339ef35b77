"""Which failures a device retries (with a fresh handshake) and which it never does."""

from __future__ import annotations

import pytest

from atls.http_binding import Problem, ServiceRefusedError
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
        ServiceRefusedError(Problem(429, "client-handshake-limit", "t", "d")),
        ServiceRefusedError(Problem(503, "handshake-capacity", "t", "d")),
        ServiceRefusedError(Problem(400, "incomplete-flight", "t", "d")),
    ],
    ids=lambda e: (
        type(e).__name__
        + ":"
        + str(getattr(e, "alert", "") or getattr(getattr(e, "problem", None), "slug", ""))
    ),
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
        ServiceRefusedError(Problem(403, "blocked-by-policy", "t", "d")),
        ServiceRefusedError(Problem(404, "unknown-session", "t", "d")),
        SessionStateError("misuse"),
    ],
    ids=lambda e: (
        type(e).__name__
        + ":"
        + str(getattr(e, "alert", "") or getattr(getattr(e, "problem", None), "slug", ""))
    ),
)
def test_verdicts_and_refusals_are_never_retried(error):
    assert not retryable(error)
