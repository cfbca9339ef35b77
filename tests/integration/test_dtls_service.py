"""DTLS records in ATLS bodies through the running service: forgeries dropped, sessions go on."""

from __future__ import annotations

import dataclasses

import pytest

from atls.dtls import DTLSContext
from atls.http_binding import MEDIA_TYPE, SESSION_COOKIE, Mode, OutgoingMessage
from atls_client.client import ATLSClient, CarrierSettings
from atls_scenarios.processes import ServiceProcess
from tests.conftest import client_config
from tests.integration.conftest import raw_http

pytestmark = pytest.mark.integration


def dtls_client(pki, url: str, mode: Mode = Mode.RECORDS, **tls: object) -> ATLSClient:
    config = client_config(pki, **{"server_name": "127.0.0.1", **tls})
    carrier = CarrierSettings(network_tls_verify=pki.vendor_ca_cert)
    return ATLSClient(url, DTLSContext(config), mode=mode, carrier=carrier, retries=2)


def _recording(client: ATLSClient) -> list[OutgoingMessage]:
    sent: list[OutgoingMessage] = []
    real_post = client._post  # noqa: SLF001 - watch the messages as sent

    def recording(message):  # type: ignore[no-untyped-def]
        sent.append(message)
        return real_post(message)

    client._post = recording  # type: ignore[method-assign]
    return sent


@pytest.mark.parametrize("mode", list(Mode), ids=lambda m: m.value)
def test_dtls_session_through_the_service(pki, service, mode):
    with dtls_client(pki, service.url, mode) as client:
        info = client.handshake()
        assert info.version == "DTLSv1.2"
        assert client.binding and client.binding.round_trips == 3  # HelloVerifyRequest first
        assert client.http.post("/api/echo", content=b"hi").content == b"hi"
        who = client.http.get("/api/whoami").json()
        assert who["version"] == "DTLSv1.2" and "device-0001" in who["peer"]


def test_forged_and_replayed_records_are_dropped_and_the_session_goes_on(pki, service):
    with dtls_client(pki, service.url, Mode.RECORDS) as client:
        client.handshake()
        sent = _recording(client)
        assert client.http.get("/api/hello").status_code == 200
        request = sent[-1]
        cookie = client.binding.cookie if client.binding else None
        assert cookie
        forged = bytearray(request.body)
        forged[-2] ^= 0x04  # in the authentication tag
        stale_epoch = bytearray(request.body)
        stale_epoch[4] ^= 0x01  # epoch 1 -> 0: not this epoch's record
        hostile = {
            "replayed request": request.body,
            "forged record": bytes(forged),
            "record from another epoch": bytes(stale_epoch),
            "plaintext fatal alert": b"\x15\xfe\xfd\x00\x00" + b"\x00" * 6 + b"\x00\x02\x02\x28",
            "made-up application data": b"\x17\xfe\xfd\x00\x01"
            + b"\x00" * 6
            + b"\x00\x20"
            + b"\x00" * 32,
        }
        with raw_http(pki) as http:
            for name, body in hostile.items():
                answer = http.post(
                    service.url + "/.well-known/atls",
                    content=body,
                    headers={"content-type": MEDIA_TYPE, "cookie": f"{SESSION_COOKIE}={cookie}"},
                )
                assert (answer.status_code, answer.content) == (200, b""), name
        assert client.http.post("/api/echo", content=b"still").content == b"still"


def test_a_request_forged_in_transit_is_sent_again(pki, service):
    """The service drops the forged records unserved (empty answer); the client resends."""
    with dtls_client(pki, service.url, Mode.RECORDS) as client:
        client.handshake()
        real_post = client._post  # noqa: SLF001
        forged = []

        def forging(message):  # type: ignore[no-untyped-def]
            if not forged:
                body = bytearray(message.body)
                body[-1] ^= 0x80
                forged.append(message)
                message = OutgoingMessage(message.path, message.headers, bytes(body))
            return real_post(message)

        client._post = forging  # type: ignore[method-assign]
        assert client.http.post("/api/echo", content=b"once").content == b"once"
        assert forged and client.binding and client.binding.dropped == 1


@pytest.fixture(scope="module")
def constrained_service(pki, logs):
    with ServiceProcess(
        pki.root, logs / "constrained", extra_args=["--profile", "constrained"]
    ) as s:
        yield s


def test_service_profile_pins_suites_and_groups(pki, constrained_service):
    url = constrained_service.url
    carrier = CarrierSettings(network_tls_verify=pki.vendor_ca_cert)
    # a default client: its hybrid key share is refused (HelloRetryRequest to P-256)
    with ATLSClient(url, client_config(pki, server_name="127.0.0.1"), carrier=carrier) as client:
        info = client.handshake()
        assert info.cipher == "TLS_AES_128_GCM_SHA256" and info.group == "secp256r1"
        assert client.binding and client.binding.round_trips == 3
    # a constrained client: CCM, P-256 straight away, in DTLS too
    config = client_config(pki, server_name="127.0.0.1").with_profile("constrained")
    with ATLSClient(url, config, carrier=carrier) as client:
        info = client.handshake()
        assert info.cipher == "TLS_AES_128_CCM_SHA256" and info.group == "secp256r1"
        assert client.binding and client.binding.round_trips == 2
    with ATLSClient(url, DTLSContext(config), carrier=carrier) as client:
        assert client.handshake().cipher == "ECDHE-ECDSA-AES128-CCM"
        assert client.http.get("/api/hello").status_code == 200


def test_a_damaged_handshake_answer_costs_one_dtls_retransmission(pki, service):
    with dtls_client(pki, service.url, Mode.RECORDS) as client:
        real_post = client._post  # noqa: SLF001
        posts = []

        def damaging(message):  # type: ignore[no-untyped-def]
            response = real_post(message)
            posts.append(message)
            if len(posts) == 2:  # the answer to the proven ClientHello: ServerHello ...
                body = bytearray(response.content)
                body[4] ^= 0x02  # first record's epoch: DTLS drops it
                response = dataclasses.replace(response, content=bytes(body))
            return response

        client._post = damaging  # type: ignore[method-assign]
        client.handshake()
        assert client.handshake_attempts == 1 and len(posts) == 4  # one retransmission
        assert client.http.get("/api/hello").status_code == 200
