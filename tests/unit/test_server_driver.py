"""The server driver and the client binding, talking entirely in memory.

The "service" below is the smallest possible adapter: it maps HTTP-shaped
messages to ``ServerDriver.receive`` and outcomes back, as the Starlette
endpoint does, and echoes inner requests. Everything else is the real core.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from atls.config import Mode
from atls.errors import Reason, Refusal
from atls.events import SessionState
from atls.http_binding import (
    MODE_HEADER,
    SESSION_COOKIE,
    ClientBinding,
    OutgoingMessage,
    Problem,
    Variant,
    coding_of,
    mode_of,
)
from atls.inner_http import InnerRequest, InnerResponse, decode_request, encode_response
from atls.protection import CONTENT_CODING
from atls.server import ApplicationRequest, Coding, Refused, Reply, ServerDriver
from atls.session import ATLSSession, TLSVersion
from atls.store import SessionLimits, SessionStore
from tests.conftest import client_config


@dataclass
class MemoryService:
    """A transport adapter over the driver, with no I/O at all."""

    driver: ServerDriver
    outcomes: list[object] = field(default_factory=list)
    client: str = "10.0.0.1"

    def post(self, message: OutgoingMessage) -> tuple[int, dict[str, str], bytes]:
        cookie = message.headers.get("cookie", "")
        handle = cookie.split("=", 1)[1] if cookie.startswith(SESSION_COOKIE + "=") else None
        coding = coding_of(message.headers.get("content-encoding"))
        assert coding is not None
        outcome = self.driver.receive(
            handle,
            coding,
            message.body,
            client=self.client,
            mode=mode_of(message.headers.get(MODE_HEADER)),
        )
        self.outcomes.append(outcome)
        if isinstance(outcome, Refused):
            problem = Problem.from_refusal(outcome.refusal)
            return problem.status, {"content-type": "application/problem+json"}, problem.to_json()
        if isinstance(outcome, ApplicationRequest):
            inner = decode_request(outcome.data)
            answer = InnerResponse(200, [("content-type", "text/plain")], b"echo:" + inner.body)
            outcome = self.driver.respond(outcome, encode_response(answer))
            self.outcomes.append(outcome)
        assert isinstance(outcome, Reply)
        headers = {"content-type": Variant.of_path(message.path).media_type}  # type: ignore[union-attr]
        if outcome.coding is Coding.PROTECTED:
            headers["content-encoding"] = CONTENT_CODING
        if outcome.new_session:
            headers["set-cookie"] = f"{SESSION_COOKIE}={outcome.handle}; Path=/"
        return 200, headers, outcome.body


def _driver(pki, server_context, **limits: float) -> ServerDriver:
    return ServerDriver(server_context, SessionStore(SessionLimits(**limits)))  # type: ignore[arg-type]


def _connect(
    pki,
    service: MemoryService,
    mode: Mode,
    variant: Variant = Variant.CURRENT,
    version: TLSVersion | None = None,
) -> ClientBinding:
    session = ATLSSession(client_config(pki, version).build())
    binding = ClientBinding(session, variant=variant, mode=mode)
    message: OutgoingMessage | None = binding.start()
    assert session.state is SessionState.HANDSHAKING
    while message is not None:
        message = binding.receive(*service.post(message))
    assert binding.established and session.state is SessionState.ESTABLISHED
    return binding


def _request(binding: ClientBinding, service: MemoryService, body: bytes) -> InnerResponse:
    message, token = binding.wrap_request(InnerRequest("POST", "/echo", [], body))
    return binding.unwrap_response(token, "POST", *service.post(message))


@pytest.mark.parametrize("variant", list(Variant), ids=lambda v: v.value)
@pytest.mark.parametrize("mode", list(Mode), ids=lambda m: m.value)
@pytest.mark.parametrize("version", [TLSVersion.TLS1_2, TLSVersion.TLS1_3], ids=["1.2", "1.3"])
def test_client_binding_against_the_driver(pki, server_context, mode, variant, version):
    driver = _driver(pki, server_context)
    service = MemoryService(driver)
    binding = _connect(pki, service, mode, variant, version)
    assert binding.session.info.version == f"TLSv{version.label}"
    assert driver.store.sessions == 1 and driver.store.handshakes == 0
    entry = next(o.entry for o in service.outcomes if isinstance(o, Reply) and o.established)
    assert entry.mode is mode and entry.identity == "device-0001"
    assert (entry.session is None) == (mode is Mode.EXPORT), "key export drops the TLS object"
    assert entry.keys and binding.keys and entry.keys.fingerprint == binding.keys.fingerprint
    for i in range(3):
        assert _request(binding, service, b"ping %d" % i).body == b"echo:ping %d" % i
    closing = binding.close()
    assert closing is not None
    message, token = closing
    binding.closed(token, *service.post(message))
    assert driver.store.sessions == 0, "closing ends the server session at once"
    assert isinstance(service.outcomes[-1], Reply) and service.outcomes[-1].closed


def _refusal(service: MemoryService, message: OutgoingMessage) -> Refusal:
    status, headers, body = service.post(message)
    outcome = service.outcomes[-1]
    assert isinstance(outcome, Refused), outcome
    assert status == Problem.from_refusal(outcome.refusal).status
    return outcome.refusal


def _raw(binding: ClientBinding, body: bytes, **headers: str) -> OutgoingMessage:
    message = binding._message(body, headers)  # noqa: SLF001 - a hand-made message
    return message


def test_export_session_survives_every_unauthenticated_message(pki, server_context):
    """Forged records, alerts, a second ClientHello, a replayed flight: refused, session goes on."""
    driver = _driver(pki, server_context)
    service = MemoryService(driver)
    flights: list[bytes] = []
    session = ATLSSession(client_config(pki).build())
    binding = ClientBinding(session, mode=Mode.EXPORT)
    message: OutgoingMessage | None = binding.start()
    while message is not None:
        flights.append(message.body)
        message = binding.receive(*service.post(message))
    other_hello = ATLSSession(client_config(pki).build()).initiate()
    hostile = {
        "forged record": b"\x17\x03\x03\x00\x10" + b"\x00" * 16,
        "plaintext alert": b"\x15\x03\x03\x00\x02\x02\x28",
        "second ClientHello": other_hello,
        "replayed first flight": flights[0],
        "replayed Finished": flights[-1],
        "not TLS": b"hello",
    }
    for name, body in hostile.items():
        refusal = _refusal(service, _raw(binding, body))
        assert refusal.reason is Reason.WRONG_MODE, name
    replayed = _raw(binding, b"\x00" * 40, **{"content-encoding": CONTENT_CODING})
    assert _refusal(service, replayed).reason is Reason.PROTECTION_FAILED
    message, token = binding.wrap_request(InnerRequest("POST", "/echo", [], b"x"))
    assert binding.unwrap_response(token, "POST", *service.post(message)).body == b"echo:x"
    assert _refusal(service, message).reason is Reason.REPLAYED, "a replayed request"
    assert _request(binding, service, b"still here").body == b"echo:still here"
    assert driver.store.sessions == 1


def test_records_session_refuses_protected_messages(pki, server_context):
    service = MemoryService(_driver(pki, server_context))
    binding = _connect(pki, service, Mode.RECORDS)
    protected = _raw(binding, b"\x00" * 40, **{"content-encoding": CONTENT_CODING})
    assert _refusal(service, protected).reason is Reason.WRONG_MODE
    assert _refusal(service, _raw(binding, b"garbage")).reason is Reason.NOT_TLS
    assert _request(binding, service, b"after").body == b"echo:after", "not TLS never reached TLS"
    forged = _raw(binding, b"\x17\x03\x03\x00\x10" + b"\x00" * 16)
    refusal = _refusal(service, forged)
    assert refusal.reason is Reason.TLS_ALERT and refusal.extra["tls_alert"] == "bad_record_mac"
    assert service.driver.store.sessions == 0, "records mode: TLS treats a bad record as fatal"


def test_messages_that_cannot_start_a_handshake_take_no_slot(pki, server_context):
    driver = _driver(pki, server_context, max_handshakes_per_client=3)
    service = MemoryService(driver)
    binding = ClientBinding(ATLSSession(client_config(pki).build()), mode=Mode.EXPORT)
    for _ in range(40):
        protected = _raw(binding, b"\x00" * 40, **{"content-encoding": CONTENT_CODING})
        assert _refusal(service, protected).reason is Reason.NO_HANDSHAKE_TO_START
    server_hello_like = b"\x16\x03\x03\x00\x04\x02\x00\x00\x00"
    assert (
        _refusal(service, _raw(binding, server_hello_like)).reason is Reason.NO_HANDSHAKE_TO_START
    )
    assert _refusal(service, _raw(binding, b"nonsense")).reason is Reason.NOT_TLS
    assert _refusal(service, _raw(binding, b"\x16\x03\x03\x01\x00ab")).reason is (
        Reason.INCOMPLETE_FLIGHT
    )
    assert driver.store.handshakes == 0 and driver.store.stats()["evictions"] == {}
    _connect(pki, service, Mode.EXPORT)  # the address is not locked out


def test_every_store_and_driver_refusal(pki, server_context):
    driver = _driver(pki, server_context, max_handshakes=2, max_handshakes_per_client=1)
    service = MemoryService(driver)
    first = ClientBinding(ATLSSession(client_config(pki).build()), mode=Mode.EXPORT)
    service.post(first.start())
    second = ClientBinding(ATLSSession(client_config(pki).build()), mode=Mode.EXPORT)
    assert _refusal(service, second.start()).reason is Reason.CLIENT_HANDSHAKE_LIMIT
    service.client = "10.0.0.2"
    fresh = ClientBinding(ATLSSession(client_config(pki).build()), mode=Mode.EXPORT)
    service.post(fresh.start())
    third = ClientBinding(ATLSSession(client_config(pki).build()), mode=Mode.EXPORT)
    service.client = "10.0.0.3"
    assert _refusal(service, third.start()).reason is Reason.HANDSHAKE_CAPACITY
    service.client = "10.0.0.1"
    ghost = _raw(first, b"\x16\x03\x03\x00\x01\x00")
    ghost.headers["cookie"] = f"{SESSION_COOKIE}=nope"
    assert _refusal(service, ghost).reason is Reason.UNKNOWN_SESSION
    first.cookie = next(o.handle for o in service.outcomes if isinstance(o, Reply))
    early = _raw(first, b"\x00" * 40, **{"content-encoding": CONTENT_CODING})
    assert _refusal(service, early).reason is Reason.HANDSHAKE_NOT_FINISHED
    big = _raw(first, b"\x16" * 70000)
    refusal = _refusal(service, big)
    assert refusal.reason is Reason.FLIGHT_TOO_LARGE and refusal.extra["max_bytes"] == 65536
    # a broken flight ends that handshake; its handle then names an ended session
    status, _, _ = service.post(_raw(first, b"\x16\x03\x03\x00\x05" + b"\x01" * 5))
    assert status == 400 and driver.store.handshakes == 1, "only the broken one ended"
    assert _refusal(service, _raw(first, b"\x16\x03\x03\x00\x01\x00")).reason is (
        Reason.SESSION_ENDED
    )


def test_a_flight_that_arrives_twice_ends_only_that_handshake(pki, server_context):
    driver = _driver(pki, server_context)
    service = MemoryService(driver)
    binding = ClientBinding(ATLSSession(client_config(pki).build()), mode=Mode.RECORDS)
    first = binding.start()
    second = binding.receive(*service.post(first))
    assert second is not None
    assert binding.receive(*service.post(second)) is None
    assert binding.established
    refusal = _refusal(service, second)  # the client's Finished again, on the established session
    assert refusal.reason is Reason.TLS_ALERT
    bystander = _connect(pki, service, Mode.RECORDS)
    assert _request(bystander, service, b"ok").body == b"echo:ok"


def test_refusals_render_as_problems_and_back():
    refusal = Refusal(Reason.CLIENT_HANDSHAKE_LIMIT, "too many", retry_after=3)
    problem = Problem.from_refusal(refusal)
    assert (problem.status, problem.slug) == (429, "client-handshake-limit")
    back = Problem.from_response(429, "application/problem+json", problem.to_json()).to_refusal()
    assert back.reason is Reason.CLIENT_HANDSHAKE_LIMIT and back.transient and back.status == 429
    odd = Problem.from_response(418, "text/plain", b"teapot").to_refusal()
    assert odd.reason is Reason.UNEXPECTED_RESPONSE and "teapot" in odd.detail


def test_session_states(pki, server_context):
    client = ATLSSession(client_config(pki).build())
    server = ATLSSession(server_context)
    assert client.state is server.state is SessionState.IDLE
    server.receive_flight(client.initiate())
    assert server.state is SessionState.HANDSHAKING
    client.receive_flight(server.data_to_send())
    server.receive_flight(client.data_to_send())
    assert client.state is server.state is SessionState.ESTABLISHED
    client.close()
    assert client.state is SessionState.CLOSED
    server.receive_data(client.data_to_send())
    assert server.state is SessionState.CLOSED
    broken = ATLSSession(server_context)
    with pytest.raises(Exception):  # noqa: B017 - any TLS failure
        broken.receive_flight(b"\x16\x03\x03\x00\x04\x01\x00\x00\x00")
    assert broken.state is SessionState.FAILED


def test_export_mode_needs_a_suite_with_an_aead(pki, server_context):
    """A TLS 1.2 CBC suite has no AEAD to key export with: refused, and said so."""
    service = MemoryService(_driver(pki, server_context))
    config = client_config(pki, TLSVersion.TLS1_2, tls12_cipher_list="ECDHE-ECDSA-AES128-SHA256")
    binding = ClientBinding(ATLSSession(config.build()), mode=Mode.EXPORT)
    message = binding.receive(*service.post(binding.start()))
    assert message is not None
    refusal = _refusal(service, message)
    assert refusal.reason is Reason.EXPORT_UNAVAILABLE and "AES128-SHA256" in refusal.detail
    assert service.driver.store.sessions == 0


def test_a_bare_protected_header_cannot_close_an_export_session(pki, server_context):
    """An empty protected message closes; one with no record authenticates nothing."""
    service = MemoryService(_driver(pki, server_context))
    binding = _connect(pki, service, Mode.EXPORT)
    message, _ = binding.wrap_request(InnerRequest("GET", "/", [], b""))
    header_only = message.body[: 21 + message.body[20]]
    forged = _raw(binding, header_only, **{"content-encoding": CONTENT_CODING})
    assert _refusal(service, forged).reason is Reason.PROTECTION_FAILED
    assert service.driver.store.sessions == 1
