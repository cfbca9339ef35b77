"""The UDP-mode addon: what it recognises in CoAP datagrams, and what it does with them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiocoap
import pytest
from aiocoap.message import Direction
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type
from mitmproxy import udp
from mitmproxy.test import taddons, tflow

import atls_policy.coap as coap_addon
from atls.coap_binding import CONTENT_FORMAT_ATLS
from atls.keys import ExportedKeys, ExporterSettings, aead_for_suite
from atls.oscore import ATLSSecurityContext
from atls.pki import PKIDirectory
from atls.session import ATLSSession
from atls_policy.coap import ATLSCoAP, error_datagram, inspect_datagram
from tests.conftest import client_config

# Raw datagrams need a message ID, token and type, which aiocoap deprecates setting by hand.
pytestmark = pytest.mark.filterwarnings("ignore:Initializing messages with:DeprecationWarning")


def _hello(pki: PKIDirectory) -> bytes:
    return ATLSSession(client_config(pki).with_profile("constrained").build()).initiate()


def _atls_datagram(payload: bytes, cf: int = CONTENT_FORMAT_ATLS) -> bytes:
    m = aiocoap.Message(code=Code.POST, mtype=Type.CON, mid=7, token=b"\x01\x02", payload=payload)
    m.opt.uri_path = (".well-known", "atls")
    m.opt.content_format = cf
    return m.encode()


def _oscore_datagram() -> bytes:
    aead = aead_for_suite("TLS_AES_128_GCM_SHA256")
    keys = ExportedKeys("TLS_AES_128_GCM_SHA256", aead, bytes(16), bytes(16), ExporterSettings())
    ctx = ATLSSecurityContext(keys, b"\x05", b"\x06")
    inner = aiocoap.Message(code=Code.POST, uri="coap://gw/readings", payload=b'{"t": 1}')
    inner.direction = Direction.OUTGOING
    outer, _ = ctx.protect(inner)
    outer.mid, outer.token, outer.mtype = 9, b"\x03", Type.CON
    return outer.encode()


def test_recognises_atls_oscore_and_nothing_else(pki: PKIDirectory) -> None:
    hello = _hello(pki)
    view = inspect_datagram(_atls_datagram(hello))
    assert view is not None and view.kind == "atls" and view.variant == "current"
    assert view.path == "/.well-known/atls" and view.facts["content_format"] == 65000
    unlabelled = inspect_datagram(_atls_datagram(hello, cf=42))
    assert unlabelled is not None and unlabelled.variant == "unlabelled"
    oscore = inspect_datagram(_oscore_datagram())
    assert oscore is not None and oscore.kind == "oscore"
    assert oscore.facts["oscore"] == {"seq": 0, "kid": "05"}
    assert inspect_datagram(b"") is None
    assert inspect_datagram(b"\xff" * 40) is None
    assert inspect_datagram(_atls_datagram(b'{"json": true}', cf=50)) is None


def test_error_datagram_answers_in_an_ack() -> None:
    request = aiocoap.Message.decode(_atls_datagram(b"x"))
    answer = aiocoap.Message.decode(error_datagram(request, Code.FORBIDDEN, "blocked-by-policy"))
    assert answer.mtype == Type.ACK and answer.mid == 7 and answer.token == b"\x01\x02"
    assert answer.code == Code.FORBIDDEN and answer.payload == b"blocked-by-policy"


POLICY = """
rules:
  - {id: no-coap, action: block, match: {transport: coap, direction: request, flight: 3}}
  - {id: lose, action: fault, fault: {type: drop, max_times: 1},
     match: {transport: coap, flight: 2}}
  - {id: flip, action: fault, fault: {type: bitflip, offset: 10, bit: 1},
     match: {transport: coap, direction: response}}
  - {id: http-only, action: block, match: {transport: http}}
"""


async def test_decisions_on_datagrams(
    pki: PKIDirectory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    audit = tmp_path / "audit.jsonl"
    injected: list[tuple[bool, bytes]] = []

    def fake_inject(flow: Any, *, to_client: bool, data: bytes) -> bool:
        injected.append((to_client, data))
        return True

    monkeypatch.setattr(coap_addon, "inject", fake_inject)
    addon = ATLSCoAP()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, atls_policy=str(policy), atls_audit_log=str(audit))
        flow = tflow.tudpflow(messages=[])
        hello = _atls_datagram(_hello(pki))

        async def send(content: bytes, from_client: bool = True) -> bytes:
            flow.messages.append(udp.UDPMessage(from_client, content))
            await addon.udp_message(flow)
            return flow.messages[-1].content

        assert await send(hello) == hello  # flight 1: allowed (http-only does not apply)
        assert await send(hello) == b""  # flight 2: dropped once
        assert await send(hello) == b""  # flight 3: blocked, and the device told why
        assert injected and injected[0][0] is True
        told = aiocoap.Message.decode(injected[0][1])
        assert told.code == Code.FORBIDDEN and told.payload.startswith(b"blocked-by-policy")
        answer = _atls_datagram(b"\x16\x03\x03\x00\x20" + bytes(32))
        flipped = await send(answer, from_client=False)
        diff = [i for i, (a, b) in enumerate(zip(answer, flipped, strict=True)) if a != b]
        assert len(diff) == 1 and answer[diff[0]] ^ flipped[diff[0]] == 2
        assert await send(b"not coap at all") == b"not coap at all"  # ignored, not logged
    lines = [json.loads(x) for x in audit.read_text().splitlines()]
    assert [x["decision"] for x in lines] == ["allow", "fault", "block", "fault"]
    assert lines[0]["summary"]["client_hello"]["sni"] == "atls-service"
    assert all(x["transport"] == "coap" for x in lines)


def test_canary_search_finds_what_it_looks_for(tmp_path: Path) -> None:
    """The 'gateway saw no plaintext' check is only worth something if it can fail."""
    from atls_scenarios.local_engine import search_canary

    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "gateway.log").write_text("nothing here\n")
    (tmp_path / "flows.mitm").write_bytes(b"\x00\x01CANARY-1\x02")
    (tmp_path / "logs" / "service.log").write_text("CANARY-1 (the endpoint may see it)")
    (tmp_path / "devices").mkdir()
    (tmp_path / "devices" / "d.json").write_text("CANARY-1")
    hits, searched = search_canary(tmp_path, "CANARY-1")
    assert hits == ["flows.mitm"]
    assert sorted(searched) == ["flows.mitm", "logs/gateway.log"]
