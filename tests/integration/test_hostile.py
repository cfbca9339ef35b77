"""Hostile input against the running service: documented refusals, nothing else.

After each attack the service must still be healthy and sessions that were
established before it must keep working.
"""

from __future__ import annotations

import time
from collections import Counter

import httpx
import pytest

from atls.http_binding import LEGACY_MEDIA_TYPE, MEDIA_TYPE, SESSION_COOKIE, Mode
from atls.session import ATLSSession
from atls_client.client import ATLSClient
from tests.conftest import client_config
from tests.integration.conftest import atls_client, raw_http

pytestmark = pytest.mark.integration

DOCUMENTED = {400, 404, 405, 409, 410, 413, 415, 429, 503}


def _problem(response: httpx.Response, status: int, slug: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == f"urn:atls-testbed:problem:{slug}", body
    assert body["status"] == status and body["detail"]
    return body


def _post(
    http: httpx.Client,
    url: str,
    body: bytes,
    content_type: str = MEDIA_TYPE,
    cookie: str | None = None,
    **headers: str,
) -> httpx.Response:
    http.cookies.clear()  # send only the cookie this request means to send
    hdrs = {"content-type": content_type, **headers}
    if cookie:
        hdrs["cookie"] = f"{SESSION_COOKIE}={cookie}"
    return http.post(url + "/.well-known/atls", content=body, headers=hdrs)


@pytest.fixture
def survivor(pki, service):
    """An established session that must outlive every attack."""
    client = atls_client(pki, service.url, mode=Mode.RECORDS)
    client.handshake()
    yield client
    assert client.http.get("/api/hello").status_code == 200, "established session broke"
    with raw_http(pki) as http:
        assert http.get(service.url + "/healthz").json()["status"] == "ok"
    client.close()


def _client_hello(pki) -> bytes:
    return ATLSSession(client_config(pki).build()).initiate()


def test_garbage_body(pki, service, survivor):
    with raw_http(pki) as http:
        body = _problem(_post(http, service.url, b"\x00garbage" * 50), 400, "not-tls")
        assert "not TLS" in body["detail"]
        _problem(_post(http, service.url, b""), 400, "incomplete-flight")


def test_wrong_content_type(pki, service, survivor):
    with raw_http(pki) as http:
        body = _problem(
            _post(http, service.url, _client_hello(pki), "application/octet-stream"),
            415,
            "unsupported-media-type",
        )
        assert "application/octet-stream" in body["detail"]
        _problem(
            _post(http, service.url, _client_hello(pki), "text/plain; charset=utf-8"),
            415,
            "unsupported-media-type",
        )
        # Both drafts' types are accepted, with parameters and in any case.
        ok = _post(http, service.url, _client_hello(pki), "Application/ATLS; v=1")
        assert ok.status_code == 200 and ok.headers["content-type"] == MEDIA_TYPE
        legacy = http.post(
            service.url + "/atls",
            content=_client_hello(pki),
            headers={"content-type": LEGACY_MEDIA_TYPE},
        )
        assert legacy.status_code == 200
        assert legacy.headers["content-type"] == LEGACY_MEDIA_TYPE
        _problem(
            _post(
                http, service.url, _client_hello(pki), MEDIA_TYPE, **{"content-encoding": "gzip"}
            ),
            415,
            "unsupported-content-coding",
        )


def test_wrong_method_and_path(pki, service):
    with raw_http(pki) as http:
        _problem(http.get(service.url + "/.well-known/atls"), 405, "method-not-allowed")
        _problem(http.post(service.url + "/.well-known/atlsx", content=b"x"), 404, "not-found")


def test_oversized_body(pki, service, survivor):
    with raw_http(pki) as http:
        big = b"\x16\x03\x03" + b"\x00" * 200_000
        body = _problem(_post(http, service.url, big), 413, "flight-too-large")
        assert body["max_bytes"] == 65536

        def chunks():  # no Content-Length: the limit must hold while streaming
            for _ in range(40):
                yield b"\x00" * 4096

        streamed = http.post(
            service.url + "/.well-known/atls",
            content=chunks(),
            headers={"content-type": MEDIA_TYPE},
        )
        _problem(streamed, 413, "flight-too-large")


def test_unknown_cookie(pki, service, survivor):
    with raw_http(pki) as http:
        body = _problem(
            _post(http, service.url, _client_hello(pki), cookie="forged-cookie"),
            404,
            "unknown-session",
        )
        assert "start a new handshake" in body["detail"]


def test_expired_cookie(pki, limited_service):
    with raw_http(pki) as http:
        first = _post(http, limited_service.url, _client_hello(pki))
        assert first.status_code == 200
        cookie = first.cookies[SESSION_COOKIE]
        time.sleep(3.5)  # the limited service's handshake TTL is 3 s
        body = _problem(
            _post(http, limited_service.url, b"\x16\x03\x03\x00\x01\x00", cookie=cookie),
            410,
            "session-expired",
        )
        assert "handshake timeout" in body["detail"]


def test_cookie_replayed_from_another_session(pki, service, survivor):
    """Session A's flight posted under session B's cookie: TLS rejects it."""
    config = client_config(pki, server_name="127.0.0.1").build()
    with raw_http(pki) as http:
        sessions = []
        for _ in range(2):
            tls = ATLSSession(config)
            answer = _post(http, service.url, tls.initiate())
            tls.receive_flight(answer.content)
            sessions.append((tls, answer.cookies[SESSION_COOKIE], tls.data_to_send()))
        (a, cookie_a, flight_a), (b, cookie_b, flight_b) = sessions
        body = _problem(_post(http, service.url, flight_a, cookie=cookie_b), 400, "tls-alert")
        assert body["tls_alert"] and body["tls_alert_origin"] == "local"
        # Session A is untouched by the attack and completes.
        assert _post(http, service.url, flight_a, cookie=cookie_a).status_code == 200


def test_records_from_another_session_end_only_that_session(pki, service, survivor):
    with (
        atls_client(pki, service.url, mode=Mode.RECORDS) as victim,
        atls_client(pki, service.url, mode=Mode.RECORDS) as other,
    ):
        victim.handshake()
        other.handshake()
        assert other.binding is not None and victim.binding is not None
        from atls.inner_http import InnerRequest

        message, _ = other.binding.wrap_request(InnerRequest("GET", "/api/hello"))
        with raw_http(pki) as http:
            forged = _post(http, service.url, message.body, cookie=victim.binding.cookie)
            _problem(forged, 400, "tls-alert")
            # TLS semantics: a bad record is fatal to the session it hit (draft:
            # the cookie is not a credential). The client is told plainly.
            gone = _post(http, service.url, message.body, cookie=victim.binding.cookie)
            _problem(gone, 410, "session-expired")


def test_export_mode_replay_and_tamper(pki, service, survivor):
    with atls_client(pki, service.url, mode=Mode.EXPORT) as client:
        client.handshake()
        assert client.binding is not None
        from atls.inner_http import InnerRequest

        message, _ = client.binding.wrap_request(InnerRequest("GET", "/api/hello"))
        with raw_http(pki) as http:
            assert (
                http.post(
                    service.url + message.path, content=message.body, headers=message.headers
                ).status_code
                == 200
            )
            replay = http.post(
                service.url + message.path, content=message.body, headers=message.headers
            )
            _problem(replay, 400, "replayed-message")
            message2, _ = client.binding.wrap_request(InnerRequest("GET", "/api/hello"))
            tampered = bytearray(message2.body)
            tampered[-1] ^= 0x40
            _problem(
                http.post(
                    service.url + message.path, content=bytes(tampered), headers=message2.headers
                ),
                400,
                "protection-failed",
            )
        # Neither a replay nor a forgery hurts the export-mode session.
        assert client.http.get("/api/hello").status_code == 200


def test_protected_message_before_handshake_end(pki, service):
    with raw_http(pki) as http:
        first = _post(http, service.url, _client_hello(pki))
        cookie = first.cookies[SESSION_COOKIE]
        _problem(
            _post(
                http, service.url, b"\x00" * 40, cookie=cookie, **{"content-encoding": "aes128gcm"}
            ),
            409,
            "handshake-not-finished",
        )


def test_malformed_inner_request_gets_an_inner_400(pki, service, survivor):
    with atls_client(pki, service.url, mode=Mode.RECORDS) as client:
        client.handshake()
        binding = client.binding
        assert binding is not None
        binding.session.send(b"NOT HTTP AT ALL\r\n\r\n")
        message = binding._message(binding.session.data_to_send())
        with raw_http(pki) as http:
            answer = http.post(
                service.url + message.path, content=message.body, headers=message.headers
            )
        assert answer.status_code == 200
        from atls.inner_http import decode_response
        from atls.session import ApplicationData

        events = binding.session.receive_data(answer.content)
        inner = decode_response(b"".join(e.data for e in events if isinstance(e, ApplicationData)))
        assert inner.status == 400 and b"inner-http-malformed" in inner.body
        assert client.http.get("/api/hello").status_code == 200


def test_client_hello_flood_is_bounded(pki, limited_service):
    """ClientHellos beyond the limits get only 429/503; an established session keeps working.

    The flood comes from several loopback source addresses (per-client limit 3,
    global 8), bounded to 60 requests and 20 seconds.
    """
    established = atls_client(pki, limited_service.url)
    established.handshake()
    hello = _client_hello(pki)
    statuses: Counter[int] = Counter()
    clients = [raw_http(pki, f"127.0.0.{i}") for i in range(1, 5)]
    deadline = time.monotonic() + 20
    try:
        for n in range(60):
            if time.monotonic() > deadline:
                break
            # A burst from one address first (meets the per-client limit), then all.
            source = clients[0] if n < 5 else clients[n % 4]
            response = _post(source, limited_service.url, hello)
            statuses[response.status_code] += 1
            if response.status_code != 200:
                assert response.headers["content-type"] == "application/problem+json"
                assert int(response.headers["retry-after"]) >= 1
        assert set(statuses) <= {200, 429, 503}, statuses
        assert statuses[200] == 8 and statuses[429] > 0 and statuses[503] > 0, statuses
        # The session established before the flood still works.
        assert established.http.get("/api/hello").status_code == 200
        health = clients[0].get(limited_service.url + "/healthz").json()
        assert health["status"] == "ok" and health["store"]["handshakes"] == 8
        # Once the flood's handshakes time out, new handshakes are admitted again.
        time.sleep(3.5)
        with atls_client(pki, limited_service.url) as late:
            assert late.handshake().version
    finally:
        for c in clients:
            c.close()
        established.close()


def test_hostile_mix_leaves_only_documented_statuses(pki, service, survivor):
    """A bounded burst of assorted bad requests: every answer is a documented refusal."""
    import random

    rng = random.Random(99)
    hello = _client_hello(pki)
    statuses: Counter[int] = Counter()
    with raw_http(pki) as http:
        for i in range(120):
            kind = i % 6
            if kind == 0:
                r = _post(http, service.url, rng.randbytes(rng.randrange(1, 3000)))
            elif kind == 1:
                r = _post(http, service.url, hello[: rng.randrange(1, len(hello))])
            elif kind == 2:
                flipped = bytearray(hello)
                flipped[rng.randrange(5, len(hello))] ^= 0xFF
                r = _post(http, service.url, bytes(flipped), cookie=f"c{i}")
            elif kind == 3:
                r = _post(http, service.url, hello, rng.choice(["", "x/y", "application/json"]))
            elif kind == 4:
                r = _post(
                    http,
                    service.url,
                    b"\x17\x03\x03\x00\x10" + rng.randbytes(16),
                    **{"content-encoding": rng.choice(["aes128gcm", "br"])},
                )
            else:
                r = http.request(
                    rng.choice(["PUT", "DELETE", "GET"]), service.url + "/.well-known/atls"
                )
            statuses[r.status_code] += 1
            if r.status_code != 200:
                assert r.headers["content-type"] == "application/problem+json", r.text
    assert set(statuses) - {200} <= DOCUMENTED, statuses


def test_service_refuses_devices_from_unknown_vendors(pki, service, rogue_ca):
    identity = rogue_ca.issue_device("device-rogue")
    config = client_config(pki, server_name="127.0.0.1", identity=identity)
    with ATLSClient(service.url, config, carrier=atls_client(pki, service.url).carrier) as c:
        from atls.session import TLSAlertError

        with pytest.raises(TLSAlertError) as failure:
            c.handshake()
    assert failure.value.alert == "unknown_ca" and failure.value.origin == "peer"


def test_export_session_survives_unauthenticated_messages(pki, service):
    """Item: no unauthenticated message can end a key-export session (through the service)."""
    with atls_client(pki, service.url, mode=Mode.EXPORT) as client:
        flights: list[bytes] = []
        real_post = client._post  # noqa: SLF001 - record the handshake flights as sent

        def recording(message):  # type: ignore[no-untyped-def]
            flights.append(message.body)
            return real_post(message)

        client._post = recording  # type: ignore[method-assign]
        client.handshake()
        client._post = real_post  # type: ignore[method-assign]
        cookie = client.binding.cookie if client.binding else None
        assert cookie and len(flights) == 2
        hostile = {
            "forged record": b"\x17\x03\x03\x00\x10" + b"\x00" * 16,
            "plaintext alert": b"\x15\x03\x03\x00\x02\x02\x28",
            "second ClientHello": _client_hello(pki),
            "replayed ClientHello": flights[0],
            "replayed Finished": flights[1],
        }
        with raw_http(pki) as http:
            for name, body in hostile.items():
                answer = _problem(_post(http, service.url, body, cookie=cookie), 409, "wrong-mode")
                assert "session goes on" in answer["detail"], name
        assert client.http.get("/api/hello").status_code == 200


def test_cookieless_protected_messages_take_no_slot(pki, limited_service):
    """40 cookieless protected messages from one address, then a real handshake succeeds."""
    with raw_http(pki) as http:
        for _ in range(40):
            refused = _post(
                http, limited_service.url, b"\x00" * 40, **{"content-encoding": "aes128gcm"}
            )
            _problem(refused, 400, "not-a-client-hello")
            assert "set-cookie" not in refused.headers
    with atls_client(pki, limited_service.url) as client:
        client.handshake()
        assert client.http.get("/api/hello").status_code == 200


def test_closing_a_client_frees_its_server_session(pki, service):
    for mode in Mode:
        before = service_sessions(pki, service)
        client = atls_client(pki, service.url, mode=mode)
        client.handshake()
        assert service_sessions(pki, service) == before + 1
        client.close()
        assert service_sessions(pki, service) == before, f"{mode.value}: freed at once"


def service_sessions(pki, service) -> int:
    with raw_http(pki) as http:
        return int(http.get(service.url + "/healthz").json()["store"]["sessions"])


async def test_closing_an_async_client_frees_its_server_session(pki, service):
    from atls_client.client import AsyncATLSClient, CarrierSettings

    before = service_sessions(pki, service)
    config = client_config(pki, server_name="127.0.0.1")
    async with AsyncATLSClient(
        service.url, config, carrier=CarrierSettings(network_tls_verify=pki.vendor_ca_cert)
    ) as client:
        await client.handshake()
        assert (await client.http.get("/api/hello")).status_code == 200
        assert service_sessions(pki, service) == before + 1
    assert service_sessions(pki, service) == before
