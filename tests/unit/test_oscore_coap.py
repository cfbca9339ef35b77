"""OSCORE from the exporter, and the sans-I/O CoAP binding (blockwise bounds, codes)."""

from __future__ import annotations

import asyncio
import socket

import aiocoap
import aiocoap.resource as resource
import pytest
from aiocoap import oscore as aiocoap_oscore
from aiocoap.credentials import CredentialsMap
from aiocoap.message import Direction
from aiocoap.numbers.codes import Code
from aiocoap.oscore_sitewrapper import OscoreSiteWrapper

from atls.coap_binding import (
    COAP_CODE,
    BlockAssembler,
    BlockwiseError,
    CoAPSettings,
    ResponseBlocks,
    block_slice,
    coap_code,
)
from atls.config import Role, TLSConfig
from atls.errors import Reason
from atls.keys import DRAFT05_OSCORE_LABEL, ExporterSettings, export_keys
from atls.loopback import run_handshake
from atls.oscore import ATLSSecurityContext, OSCOREContextError
from atls.pki import PKIDirectory
from atls.server import Coding
from atls.session import ATLSSession
from tests.conftest import client_config


def _pair(pki: PKIDirectory, profile: str = "default", settings: ExporterSettings | None = None):  # type: ignore[no-untyped-def]
    server = TLSConfig(
        Role.SERVER, identity=pki.service(), trust_anchors=pki.vendor_ca().cert_pem
    ).with_profile(profile)
    client = ATLSSession(client_config(pki).with_profile(profile).build())
    srv = ATLSSession(server.build())
    run_handshake(client, srv)
    return export_keys(client, settings), export_keys(srv, settings)


def _request(payload: bytes = b"21.5") -> aiocoap.Message:
    m = aiocoap.Message(code=Code.POST, uri="coap://gw.example/readings", payload=payload)
    m.direction = Direction.OUTGOING
    return m


def _deliver(message: aiocoap.Message) -> aiocoap.Message:
    copy = message.copy()
    copy.direction = Direction.INCOMING
    return copy


@pytest.mark.parametrize("profile", ["default", "constrained"])
def test_both_ends_derive_contexts_that_interoperate(pki: PKIDirectory, profile: str) -> None:
    device_keys, service_keys = _pair(pki, profile)
    assert device_keys.master_secret == service_keys.master_secret
    device = ATLSSecurityContext(device_keys, b"\x07", b"\x01")
    service = ATLSSecurityContext(service_keys, b"\x01", b"\x07", claims=["device-0001"])
    assert device.alg_aead is aiocoap_oscore.algorithms[device_keys.aead.cose_name]
    outer, request_id = device.protect(_request())
    assert b"21.5" not in outer.payload and not outer.opt.uri_path  # the path is inside
    inner, service_request_id = service.unprotect(_deliver(outer))
    assert inner.payload == b"21.5" and inner.opt.uri_path == ("readings",)
    answer = aiocoap.Message(code=Code.CHANGED, payload=b"ok")
    answer.direction = Direction.OUTGOING
    protected, _ = service.protect(answer, service_request_id)
    plain, _ = device.unprotect(_deliver(protected), request_id)
    assert plain.payload == b"ok"
    # the same message again: the replay window refuses it
    with pytest.raises(aiocoap_oscore.ReplayError):
        service.unprotect(_deliver(outer))


def test_wrong_ids_or_keys_fail(pki: PKIDirectory) -> None:
    device_keys, service_keys = _pair(pki)
    other_keys, _ = _pair(pki)  # another session's export
    device = ATLSSecurityContext(device_keys, b"\x07", b"\x01")
    outer, _ = device.protect(_request())
    wrong_id = ATLSSecurityContext(service_keys, b"\x01", b"\x08")  # expects kid 08
    with pytest.raises(aiocoap_oscore.ProtectionInvalid):
        wrong_id.unprotect(_deliver(outer))
    swapped = ATLSSecurityContext(service_keys, b"\x07", b"\x01")  # IDs the wrong way round
    with pytest.raises(aiocoap_oscore.ProtectionInvalid):
        swapped.unprotect(_deliver(outer))
    wrong_key = ATLSSecurityContext(other_keys, b"\x01", b"\x07")
    with pytest.raises(aiocoap_oscore.ProtectionInvalid):
        wrong_key.unprotect(_deliver(outer))
    with pytest.raises(OSCOREContextError):
        ATLSSecurityContext(device_keys, b"\x01", b"\x01")
    with pytest.raises(OSCOREContextError):
        ATLSSecurityContext(device_keys, bytes(8), b"\x01")


def test_label_is_a_setting_and_changes_the_keys(pki: PKIDirectory) -> None:
    default, _ = _pair(pki)
    draft05, peer = _pair(pki, settings=ExporterSettings(label=DRAFT05_OSCORE_LABEL))
    assert draft05.settings.label == "atls-oscore" and draft05.master_secret == peer.master_secret
    assert default.settings.label == "application-layer-tls"


def _udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Claims(resource.Resource):
    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        claims = request.remote.authenticated_claims
        return aiocoap.Message(code=Code.CHANGED, payload=",".join(claims).encode())


async def test_contexts_work_in_aiocoaps_own_oscore_transports(pki: PKIDirectory) -> None:
    """Our contexts plugged into aiocoap's client credentials and its OSCORE site wrapper."""
    device_keys, service_keys = _pair(pki, "constrained")
    site = resource.Site()
    site.add_resource(["claims"], _Claims())
    server_credentials = CredentialsMap()
    server_credentials[":device"] = ATLSSecurityContext(
        service_keys, b"\x01", b"\x07", claims=["device-0001"]
    )
    for attempt in range(5):  # a port found free may be taken before the bind (shared host)
        port = _udp_port()
        try:
            server = await aiocoap.Context.create_server_context(
                OscoreSiteWrapper(site, server_credentials), bind=("127.0.0.1", port)
            )
            break
        except OSError:
            if attempt == 4:
                raise
    client = await aiocoap.Context.create_client_context()
    try:
        uri = f"coap://127.0.0.1:{port}"
        client.client_credentials[f"{uri}/*"] = ATLSSecurityContext(device_keys, b"\x07", b"\x01")
        request = aiocoap.Message(code=Code.POST, uri=f"{uri}/claims", payload=b"")
        answer = await asyncio.wait_for(client.request(request).response, 10)
        assert answer.code == Code.CHANGED and answer.payload == b"device-0001"
    finally:
        await client.shutdown()
        await server.shutdown()


# -- the sans-I/O binding ---------------------------------------------------------------


def test_every_reason_has_a_coap_code() -> None:
    assert set(COAP_CODE) == set(Reason)
    assert COAP_CODE[Reason.REPLAYED] == (4, 1)
    assert COAP_CODE[Reason.FLIGHT_TOO_LARGE] == (4, 13)


def test_settings_validate_numbers() -> None:
    settings = CoAPSettings()
    assert settings.coding_of(65000) is Coding.TLS
    assert settings.coding_of(65001) is Coding.PROTECTED
    assert settings.coding_of(0) is None
    with pytest.raises(ValueError):
        CoAPSettings(session_option=65004)  # elective: a server could ignore it
    with pytest.raises(ValueError):
        CoAPSettings(content_format=70000)
    assert CoAPSettings(content_format=65100).format_of(Coding.TLS) == 65100


def test_block_assembler_reassembles_and_stays_bounded() -> None:
    now = [0.0]
    asm = BlockAssembler(max_transfers=2, max_bytes=64, ttl=10, clock=lambda: now[0])
    assert asm.feed("a", 0, True, 16, b"A" * 16) is None
    assert asm.feed("a", 1, False, 16, b"B" * 5) == b"A" * 16 + b"B" * 5
    assert len(asm) == 0
    # more transfers than allowed: the stalest goes
    for key in ("x", "y", "z"):
        asm.feed(key, 0, True, 16, bytes(16))
    assert len(asm) == 2 and asm.evicted == 1
    with pytest.raises(BlockwiseError) as gone:
        asm.feed("x", 1, True, 16, bytes(16))
    assert gone.value.refusal.reason is Reason.INCOMPLETE_FLIGHT
    assert coap_code(gone.value.refusal) == (4, 8)  # RFC 7959 Request Entity Incomplete
    # a transfer that never ends is cut at max_bytes
    with pytest.raises(BlockwiseError) as big:
        for n in range(1, 10):
            asm.feed("y", n, True, 16, bytes(16))
    assert big.value.refusal.reason is Reason.FLIGHT_TOO_LARGE
    assert asm.buffered_bytes <= 2 * 64
    # a gap, and a short block that claims more
    asm.feed("g", 0, True, 16, bytes(16))
    with pytest.raises(BlockwiseError):
        asm.feed("g", 2, True, 16, bytes(16))
    with pytest.raises(BlockwiseError):
        asm.feed("h", 0, True, 16, bytes(3))
    # idle transfers expire
    asm.feed("z2", 0, True, 16, bytes(16))
    now[0] = 11
    with pytest.raises(BlockwiseError):
        asm.feed("z2", 1, False, 16, b"")
    assert len(asm) == 0


def test_response_blocks_bounded_and_sliced() -> None:
    now = [0.0]
    cache = ResponseBlocks(max_entries=2, ttl=5, clock=lambda: now[0])
    for key in "abc":
        cache.put(key, key.encode() * 100)
    assert len(cache) == 2 and cache.get("a") is None
    now[0] = 6
    assert cache.get("b") is None
    body = bytes(range(256)) * 10
    chunk, more = block_slice(body, 0, 6)
    assert len(chunk) == 1024 and more
    chunk, more = block_slice(body, 2, 6)
    assert len(chunk) == len(body) - 2048 and not more


def test_gateway_session_map_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from coap_gateway import gateway as gw

    now = [100.0]
    monkeypatch.setattr(gw.time, "monotonic", lambda: now[0])
    sessions = gw.SessionMap(max_sessions=2, ttl=10)
    a = sessions.open("cookie-a", "dev-a")
    b = sessions.open("cookie-b", "dev-b")
    assert len(a) == 8 and sessions.get(a) is not None  # a is now the most recent
    c = sessions.open("cookie-c", "dev-c")  # evicts b, the least recently used
    assert sessions.get(b) is None and sessions.evicted == 1
    found = sessions.get(c)
    assert found is not None and found.cookie == "cookie-c"
    now[0] += 11
    assert sessions.get(a) is None and len(sessions) == 0  # idle too long


async def test_gateway_refuses_when_too_many_forwards_are_in_flight() -> None:
    from coap_gateway import gateway as gw

    settings = gw.GatewaySettings("http://127.0.0.1:9", limits=gw.GatewayLimits(max_forwards=1))
    fw = gw._Forwarding(settings, None)  # type: ignore[arg-type]
    fw.in_flight = 1
    with pytest.raises(gw.Refusal) as busy:
        await fw.post("/x", {}, b"")
    assert busy.value.reason is Reason.HANDSHAKE_CAPACITY and busy.value.retry_after == 1
    message = gw.error_message(busy.value)
    assert str(message.code).startswith("5.03") and message.opt.max_age == 1
    assert message.payload.startswith(b"handshake-capacity: ")
    assert gw.GatewayLimits().memory_bound == 2 * 1024 * 1024
