"""The CoAP binding end to end: a real aiocoap device, the gateway, the service, on loopback.

The service is a real ``atls-service`` process (network TLS with the test
PKI); the gateway and the device are aiocoap endpoints in this process.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiocoap
import pytest
from aiocoap.numbers.codes import Code
from aiocoap.numbers.optionnumbers import OptionNumber
from aiocoap.optiontypes import OpaqueOption

from atls.coap_binding import CONTENT_FORMAT_ATLS
from atls.config import Mode, TLSVersion
from atls.errors import Reason, Refusal
from atls.pki import PKIDirectory
from atls_client.coap_device import CoAPDevice
from coap_gateway.gateway import Gateway, GatewayLimits, GatewaySettings, start_gateway
from tests.conftest import client_config

pytestmark = pytest.mark.integration


def udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SMALL = GatewayLimits(
    max_sessions=4, max_transfers=3, max_flight_bytes=8192, max_responses=3, transfer_ttl=5
)


@pytest.fixture
async def gateway(service, pki: PKIDirectory) -> AsyncIterator[tuple[Gateway, str]]:  # type: ignore[no-untyped-def]
    settings = GatewaySettings(service.url, network_tls_verify=pki.vendor_ca_cert, limits=SMALL)
    for attempt in range(5):  # a port found free may be taken before the bind: try another
        port = udp_port()
        try:
            gw = await start_gateway(settings, "127.0.0.1", port)
            break
        except OSError:
            if attempt == 4:
                raise
    try:
        yield gw, f"coap://127.0.0.1:{port}"
    finally:
        await gw.shutdown()


async def test_tls13_handshake_blockwise_and_oscore_readings(gateway, pki) -> None:  # type: ignore[no-untyped-def]
    gw, uri = gateway
    async with CoAPDevice(uri, client_config(pki), mode=Mode.EXPORT) as device:
        info = await device.handshake()
        assert info.version == "TLSv1.3"
        # the default ClientHello (hybrid PQ key share) and the certificate flight
        # both pass one datagram: both directions went blockwise
        assert device.stats.up[0] > 1024 and device.stats.down[0] > 1024
        ids = await device.setup_oscore()
        assert ids["aead"] == "A256GCM" and ids["hkdf"] == "SHA-256"
        reading = await device.send_reading({"device": "device-0001", "t": 21.5, "canary": "X1"})
        assert reading.code == "2.04", reading.payload
        assert json.loads(reading.payload)["stored"] >= 1
        code, payload = await device.replay(reading.outer)
        assert code == "4.01", payload
        assert payload.startswith(b"replayed-message")
        # a claim for another device is refused by the resource itself
        other = await device.send_reading({"device": "device-0002", "t": 1})
        assert other.code == "4.03"
        # the OSCORE context lives as long as the ATLS session it came from
        await device.close_session()
        after = await device.send_reading({"device": "device-0001", "t": 3})
        assert after.code == "4.04" and b"has ended" in after.payload, after
    stats = gw.stats()
    assert stats["transfers"] == 0


async def test_constrained_profile_fits_datagrams_and_maps_ccm(gateway, pki) -> None:  # type: ignore[no-untyped-def]
    _, uri = gateway
    config = client_config(pki).with_profile("constrained")
    async with CoAPDevice(uri, config) as device:
        info = await device.handshake()
        assert "CCM" in info.cipher or "GCM" in info.cipher
        assert device.stats.up[0] < 1024  # P-256 only: the ClientHello fits one datagram
        ids = await device.setup_oscore()
        assert ids["aead"].startswith(("AES-CCM", "A128GCM"))
        assert (await device.send_reading({"t": 1})).code == "2.04"


async def test_tls12_records_mode_inner_request(gateway, pki) -> None:  # type: ignore[no-untyped-def]
    _, uri = gateway
    async with CoAPDevice(uri, client_config(pki, TLSVersion.TLS1_2), mode=Mode.RECORDS) as device:
        await device.handshake()
        from atls.inner_http import InnerRequest

        answer = await device.request_inner(InnerRequest("GET", "/api/whoami", [], b""))
        assert answer.status == 200 and json.loads(answer.body)["mode"] == "records"


async def test_dtls_over_coap(gateway, pki) -> None:  # type: ignore[no-untyped-def]
    _, uri = gateway
    config = client_config(pki).with_profile("constrained")
    async with CoAPDevice(uri, config, dtls=True) as device:
        info = await device.handshake()
        assert "DTLS" in info.version
        await device.setup_oscore()
        assert (await device.send_reading({"t": 2})).code == "2.04"


async def test_untrusted_service_fails_at_the_device(gateway, pki, rogue_ca) -> None:  # type: ignore[no-untyped-def]
    _, uri = gateway
    config = client_config(pki, trust_anchors=rogue_ca.cert_pem)
    async with CoAPDevice(uri, config) as device:
        with pytest.raises(Exception) as caught:
            await device.handshake()
        assert "certificate" in str(caught.value).lower() or "unknown_ca" in str(caught.value)


async def _post(ctx: aiocoap.Context, uri: str, **kw) -> aiocoap.Message:  # type: ignore[no-untyped-def]
    message = aiocoap.Message(code=Code.POST, uri=f"{uri}/.well-known/atls", **kw)
    return await asyncio.wait_for(ctx.request(message).response, 10)


async def test_hostile_devices_get_errors_and_bounded_memory(gateway) -> None:  # type: ignore[no-untyped-def]
    gw, uri = gateway
    ctx = await aiocoap.Context.create_client_context()
    try:
        # garbage with the right Content-Format: the service's refusal, as CoAP
        r = await _post(ctx, uri, payload=b"\x00garbage", content_format=CONTENT_FORMAT_ATLS)
        assert str(r.code).startswith("4.00") and r.payload.startswith(b"not-tls")
        # the wrong Content-Format
        r = await _post(ctx, uri, payload=b"x", content_format=0)
        assert r.code == Code.UNSUPPORTED_CONTENT_FORMAT and b"Content-Format" in r.payload
        # an unknown session handle
        m = aiocoap.Message(code=Code.POST, uri=f"{uri}/.well-known/atls", payload=b"\x16")
        m.opt.content_format = CONTENT_FORMAT_ATLS
        m.opt.add_option(OpaqueOption(OptionNumber(65003), b"12345678"))
        r = await asyncio.wait_for(ctx.request(m).response, 10)
        assert r.code == Code.NOT_FOUND and r.payload.startswith(b"unknown-session")
        # a Uri-Path that is not UTF-8 (aiocoap let that escape as a traceback): dropped
        bad = aiocoap.Message(code=Code.POST, mtype=aiocoap.CON, mid=1, token=b"\x01")
        raw = bytearray(bad.encode())
        raw += bytes([0xB2, 0xFF, 0xFE])  # option 11 (Uri-Path), length 2, invalid UTF-8
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(bytes(raw), ("127.0.0.1", int(uri.rsplit(":", 1)[1])))
        # not ATLS, not OSCORE, elsewhere (and the gateway still answers)
        r = await asyncio.wait_for(
            ctx.request(aiocoap.Message(code=Code.POST, uri=f"{uri}/x", payload=b"x")).response, 10
        )
        assert int(r.code) >> 5 == 4
        # blockwise transfers that never end: each is dropped at the flight limit,
        # and no more than max_transfers are ever held
        for n in range(6):
            for block in range(3):
                m = aiocoap.Message(
                    code=Code.POST,
                    uri=f"{uri}/.well-known/atls",
                    payload=bytes(1024),
                    content_format=CONTENT_FORMAT_ATLS,
                )
                m.opt.block1 = (block, True, 6)
                m.opt.add_option(OpaqueOption(OptionNumber(65003), bytes([n + 1])))
                r = await asyncio.wait_for(ctx.request(m, handle_blockwise=False).response, 10)
                assert r.code in (Code.CONTINUE, Code.REQUEST_ENTITY_INCOMPLETE), r
            assert len(gw.atls.blocks) <= SMALL.max_transfers
        assert gw.atls.blocks.buffered_bytes <= SMALL.max_transfers * SMALL.max_flight_bytes
        # one that passes the flight limit is dropped with 4.13 and Size1
        for block in range(10):
            m = aiocoap.Message(
                code=Code.POST,
                uri=f"{uri}/.well-known/atls",
                payload=bytes(1024),
                content_format=CONTENT_FORMAT_ATLS,
            )
            m.opt.block1 = (block, True, 6)
            r = await asyncio.wait_for(ctx.request(m, handle_blockwise=False).response, 10)
            if r.code == Code.REQUEST_ENTITY_TOO_LARGE:
                assert r.opt.size1 == SMALL.max_flight_bytes
                assert r.payload.startswith(b"flight-too-large")
                break
        else:
            pytest.fail("a never-ending transfer was not cut off")
        # a flood of ClientHello-less datagrams: answered, nothing kept
        answers = await asyncio.gather(
            *(
                _post(
                    ctx,
                    uri,
                    payload=bytes([0x17, 3, 3, 0, 1, n]),
                    content_format=CONTENT_FORMAT_ATLS,
                )
                for n in range(40)
            ),
            return_exceptions=True,
        )
        assert all(isinstance(a, aiocoap.Message) and int(a.code) >> 5 in (4, 5) for a in answers)
        assert gw.stats()["sessions"] == 0
    finally:
        await ctx.shutdown()


def test_refusal_round_trip() -> None:
    from atls.coap_binding import COAP_CODE, diagnostic, refusal_from_diagnostic

    for reason in Reason:
        refusal = Refusal(reason, "what went wrong")
        code = COAP_CODE[reason]
        back = refusal_from_diagnostic(code, diagnostic(refusal))
        assert back.reason is reason and back.detail == "what went wrong"
    assert set(COAP_CODE) == set(Reason)


def _unused(_: Path) -> None:  # keep Path imported for fixtures' annotations
    return None
