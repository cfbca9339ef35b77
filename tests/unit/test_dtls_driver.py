"""DTLS records in ATLS message bodies, through the server driver, in memory."""

from __future__ import annotations

import time

import pytest

from atls.config import Mode
from atls.dtls import DTLSContext, DTLSSession, split_records
from atls.errors import IncompleteFlightError
from atls.events import SessionState
from atls.http_binding import ClientBinding, OutgoingMessage, ResponseDropped, RetransmitLater
from atls.inner_http import InnerRequest
from atls.records import parse_records
from atls.server import Coding, Refused, Reply, ServerDriver
from atls.store import SessionStore
from atls_client.client import retryable
from tests.conftest import client_config
from tests.unit.test_server_driver import MemoryService, _request


def _connect(pki, service: MemoryService, mode: Mode) -> ClientBinding:
    session = DTLSSession(DTLSContext(client_config(pki)))
    binding = ClientBinding(session, mode=mode)
    message: OutgoingMessage | None = binding.start()
    while message is not None:
        message = binding.receive(*service.post(message))
    assert binding.established and session.state is SessionState.ESTABLISHED
    return binding


@pytest.mark.parametrize("mode", list(Mode), ids=lambda m: m.value)
def test_dtls_session_through_the_driver(pki, server_context, mode):
    driver = ServerDriver(server_context, SessionStore())
    service = MemoryService(driver)
    binding = _connect(pki, service, mode)
    assert binding.session.info.version == "DTLSv1.2"
    hvr, first = service.outcomes[0], service.outcomes[1]
    # the HelloVerifyRequest keeps no state; the proven ClientHello opens the session
    assert isinstance(hvr, Reply) and hvr.entry is None and not hvr.new_session
    assert parse_records(hvr.body)[0].payload[0] == 3
    assert isinstance(first, Reply) and first.new_session
    assert driver.store.sessions == 1 and driver.store.handshakes == 0
    assert binding.round_trips == 3  # the HelloVerifyRequest, then the two of DTLS 1.2
    assert _request(binding, service, b"ping").body == b"echo:ping"
    assert _request(binding, service, b"again").body == b"echo:again"


def test_unproven_hellos_take_no_slot(pki, server_context):
    driver = ServerDriver(server_context, SessionStore())
    service = MemoryService(driver)
    for _ in range(50):
        binding = ClientBinding(DTLSSession(DTLSContext(client_config(pki))), mode=Mode.RECORDS)
        service.post(binding.start())
    assert driver.store.handshakes == 0


def test_forged_and_replayed_records_are_dropped_and_the_session_goes_on(pki, server_context):
    driver = ServerDriver(server_context, SessionStore())
    service = MemoryService(driver)
    binding = _connect(pki, service, Mode.RECORDS)
    message, token = binding.wrap_request(InnerRequest("POST", "/echo", [], b"one"))
    response = binding.unwrap_response(token, "POST", *service.post(message))
    assert response.body == b"echo:one"
    # the middlebox replays the request: DTLS's replay window drops it
    status, _, body = service.post(message)
    assert (status, body) == (200, b"")
    # the middlebox forges a record (a flipped bit in the ciphertext): dropped silently
    forged = bytearray(message.body)
    forged[-3] ^= 0x10
    status, _, body = service.post(OutgoingMessage(message.path, message.headers, bytes(forged)))
    assert (status, body) == (200, b"")
    assert isinstance(service.outcomes[-1], Reply) and not service.outcomes[-1].closed
    assert _request(binding, service, b"two").body == b"echo:two"
    entry = next(iter(driver.store._sessions.values()))
    assert entry.session is not None and entry.session.state is SessionState.ESTABLISHED


def test_a_replayed_handshake_flight_is_dropped(pki, server_context):
    """The same bytes again (a middlebox's replay, or a naive re-POST) are a DTLS replay.

    So the HTTP binding never re-POSTs a flight: a carrier failure restarts the
    handshake (the client's retry policy), and the DTLS timer is not run over
    HTTP. A real DTLS retransmission (``handle_timeout``) re-encrypts under new
    sequence numbers; that is for datagram transports (CoAP NON).
    """
    driver = ServerDriver(server_context, SessionStore())
    service = MemoryService(driver)
    session = DTLSSession(DTLSContext(client_config(pki)))
    binding = ClientBinding(session, mode=Mode.RECORDS)
    message: OutgoingMessage | None = binding.start()
    messages = []
    while message is not None:
        messages.append(message)
        message = binding.receive(*service.post(message))
    status, _, again = service.post(messages[-1])  # Certificate ... Finished, once more
    assert (status, again) == (200, b"")
    assert _request(binding, service, b"still").body == b"echo:still"


def test_dtls_message_coded_for_export_mode_is_refused_before_the_handshake(pki, server_context):
    driver = ServerDriver(server_context, SessionStore())
    outcome = driver.receive(None, Coding.PROTECTED, b"\0" * 40, client="10.0.0.1")
    assert isinstance(outcome, Refused)


def _damaged_handshake(pki, service, mode: Mode, damage_answer: int):
    """Run a DTLS handshake whose answer number ``damage_answer`` arrives damaged.

    Yields what the client binding raises at that answer, then lets the test go on.
    """
    binding = ClientBinding(DTLSSession(DTLSContext(client_config(pki))), mode=mode)
    message: OutgoingMessage | None = binding.start()
    while message is not None:
        status, headers, body = service.post(message)
        if binding.round_trips + 1 == damage_answer:
            records = split_records(body)
            last = bytearray(records[-1])
            last[4] ^= 0x02  # the epoch: a record of no epoch this session has
            body = b"".join(records[:-1]) + bytes(last)
        try:
            message = binding.receive(status, headers, body)
        except IncompleteFlightError as stalled:
            return binding, stalled
    raise AssertionError("the damage went unnoticed")


@pytest.mark.parametrize("damage_answer", [2, 3], ids=["server-hello-flight", "finished"])
def test_a_damaged_handshake_answer_is_retransmitted_by_the_dtls_timer(
    pki, server_context, damage_answer
):
    """HTTP delivered the answer damaged: DTLS's timer resends, the service answers again."""
    service = MemoryService(ServerDriver(server_context, SessionStore()))
    binding, stalled = _damaged_handshake(pki, service, Mode.RECORDS, damage_answer)
    assert isinstance(stalled, RetransmitLater) and 0 < stalled.delay <= 1.0
    assert retryable(stalled)  # an adapter that does not know it starts afresh
    time.sleep(stalled.delay + 0.01)
    message: OutgoingMessage | None = binding.retransmit()
    while message is not None:
        message = binding.receive(*service.post(message))
    assert binding.established
    assert _request(binding, service, b"after").body == b"echo:after"


def test_a_damaged_last_answer_in_export_mode_needs_a_fresh_handshake(pki, server_context):
    """The key-export service keeps no DTLS object after its Finished: nothing to resend."""
    service = MemoryService(ServerDriver(server_context, SessionStore()))
    _, stalled = _damaged_handshake(pki, service, Mode.EXPORT, 3)
    assert not isinstance(stalled, RetransmitLater) and retryable(stalled)
    _, early = _damaged_handshake(pki, service, Mode.EXPORT, 2)
    assert isinstance(early, RetransmitLater)


def test_a_tls13_only_service_takes_no_dtls(pki):
    from atls.config import Role, TLSConfig, TLSVersion
    from atls.errors import Reason

    strict = TLSConfig(
        Role.SERVER,
        identity=pki.service(),
        trust_anchors=pki.vendor_ca().cert_pem,
        min_version=TLSVersion.TLS1_3,
    ).build()
    driver = ServerDriver(strict, SessionStore())
    hello = b"".join(DTLSSession(DTLSContext(client_config(pki))).initiate())
    outcome = driver.receive(None, Coding.TLS, hello, client="10.0.0.1")
    assert isinstance(outcome, Refused)
    assert outcome.refusal.reason is Reason.NO_HANDSHAKE_TO_START
    assert "DTLS 1.2 only" in outcome.refusal.detail


def test_a_damaged_answer_to_a_request_is_reported_not_resent(pki, server_context):
    service = MemoryService(ServerDriver(server_context, SessionStore()))
    binding = _connect(pki, service, Mode.RECORDS)
    message, token = binding.wrap_request(InnerRequest("POST", "/echo", [], b"once"))
    status, headers, body = service.post(message)
    damaged = body[:-1] + bytes([body[-1] ^ 1])
    with pytest.raises(ResponseDropped):
        binding.unwrap_response(token, "POST", status, headers, damaged)
    assert _request(binding, service, b"next").body == b"echo:next"  # the session goes on
