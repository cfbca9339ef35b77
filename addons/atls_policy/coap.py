"""The middlebox on the constrained side: ATLS inside CoAP datagrams (mitmproxy UDP mode).

    mitmdump --mode reverse:udp://GATEWAY:5683@5683 -s addons/atls_policy/coap_script.py \\
             --set atls_policy=policy.yaml --set atls_audit_log=coap-audit.jsonl

mitmproxy's ``udp_message`` hook sees every datagram between devices and
the gateway (``flow.messages[-1]``, its ``content`` may be changed). This
addon decodes the CoAP header and options (no keys, no TLS state), and
recognises ATLS by Content-Format (``application/atls`` and its
``aes128gcm`` variant), or TLS/DTLS records in a payload under another
Content-Format (``unlabelled``); OSCORE messages by their option. It logs
what an observer can see (CoAP code, message ID, token length, blockwise
options, the ATLS-Session handle's length, record types and ClientHello
details from ``atls_policy.observe``, OSCORE key ID and sequence number) and
applies the same policy file as the HTTP middlebox (``Policy.decide``), with
``transport: coap`` in the flight's context:

- ``allow``/``audit``/``mark``: the datagram passes;
- ``block``: a request is dropped and the device gets ``4.03`` with the
  diagnostic ``blocked-by-policy: ...`` (in an ACK, as the gateway would
  answer); a response is replaced by that ``4.03``;
- faults: ``drop`` (UDP flows cannot be killed: the datagram is emptied, and
  an empty datagram is no CoAP message), ``bitflip`` (in the payload),
  ``delay``, ``duplicate``; the others apply to HTTP bodies only and pass.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiocoap
from aiocoap.numbers.codes import Code
from aiocoap.numbers.optionnumbers import OptionNumber
from aiocoap.numbers.types import Type

from atls.coap_binding import (
    CONTENT_FORMAT_ATLS,
    CONTENT_FORMAT_ATLS_PROTECTED,
    SESSION_OPTION,
)
from atls.records import RecordError, iter_records

from .observe import summarize
from .policy import Action, Decision, FlightContext, Policy, PolicyError, PolicyState, load_policy

logger = logging.getLogger("atls_policy.coap")
MAX_FLOWS = 10000


@dataclass
class CoAPView:
    """What an observer reads from one CoAP datagram."""

    message: aiocoap.Message
    kind: str  # atls | oscore
    variant: str  # current | unlabelled
    coding: str | None  # tls | aes128gcm | None (OSCORE)
    path: str
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def first_block(self) -> bool:
        block = self.message.opt.block1 or self.message.opt.block2
        return block is None or block.block_number == 0


def _records_only(payload: bytes) -> bool:
    try:
        return bool(payload) and sum(1 for _ in iter_records(payload)) > 0
    except RecordError:
        return False


def inspect_datagram(
    raw: bytes,
    *,
    content_format: int = CONTENT_FORMAT_ATLS,
    protected_format: int = CONTENT_FORMAT_ATLS_PROTECTED,
    session_option: int = SESSION_OPTION,
) -> CoAPView | None:
    """The datagram as ATLS or OSCORE, or None for anything else (never raises)."""
    try:
        message = aiocoap.Message.decode(raw)
    except Exception:  # noqa: BLE001 - not CoAP: not ours
        return None
    if message.code is None or int(message.code) == 0:
        return None  # empty ACK/RST
    cf = message.opt.content_format
    cf_number = int(cf) if cf is not None else None
    facts: dict[str, Any] = {
        "code": str(message.code),
        "type": str(message.mtype),
        "mid": message.mid,
        "token_bytes": len(message.token),
        "payload_bytes": len(message.payload),
    }
    for name, block in (("block1", message.opt.block1), ("block2", message.opt.block2)):
        if block is not None:
            facts[name] = [block.block_number, int(block.more), block.size]
    handle = message.opt.get_option(OptionNumber(session_option))
    if handle:
        facts["session_handle_bytes"] = len(bytes(handle[0].value))
    path = "/" + "/".join(message.opt.uri_path)
    if message.opt.oscore is not None:
        option = bytes(message.opt.oscore)
        facts["oscore"] = _oscore_facts(option)
        return CoAPView(message, "oscore", "current", None, path or "/", facts)
    if cf_number in (content_format, protected_format):
        coding = "tls" if cf_number == content_format else "aes128gcm"
        facts["content_format"] = cf_number
        return CoAPView(message, "atls", "current", coding, path, facts)
    if _records_only(message.payload):
        facts["content_format"] = cf_number
        return CoAPView(message, "atls", "unlabelled", "tls", path, facts)
    return None


def _oscore_facts(option: bytes) -> dict[str, Any]:
    """Partial IV (the sender's sequence number) and key ID, as RFC 8613 6.1 lays them out."""
    if not option:
        return {}
    flags = option[0]
    n = flags & 0x07
    at = 1
    piv = option[at : at + n]
    at += n
    facts: dict[str, Any] = {"seq": int.from_bytes(piv, "big") if piv else None}
    if flags & 0x10 and at < len(option):  # kid context
        at += 1 + option[at]
    if flags & 0x08:
        facts["kid"] = option[at:].hex()
    return facts


def error_datagram(request: aiocoap.Message, code: Code, text: str) -> bytes:
    """A CoAP error answer to ``request``: piggybacked on an ACK for a CON, else NON."""
    answer = aiocoap.Message(code=code, payload=text.encode()[:512])
    answer.token = request.token
    if request.mtype == Type.CON:
        answer.mtype = Type.ACK
        answer.mid = request.mid
    else:
        answer.mtype = Type.NON
        answer.mid = (request.mid + 1) & 0xFFFF
    return answer.encode()


def inject(flow: Any, *, to_client: bool, data: bytes) -> bool:
    """Send a datagram on a UDP flow's connection, as ``inject.udp`` would.

    mitmproxy 12.3's ``inject.udp`` looks UDP connections up by (peername,
    sockname) while the servers register them by client id, so the command
    always answers "Flow is not from a live connection"; this goes to the
    registered handler directly, with the same injected event.
    """
    from mitmproxy import ctx, udp  # noqa: PLC0415
    from mitmproxy.proxy.layers.udp import UdpMessageInjected  # noqa: PLC0415

    proxyserver = ctx.master.addons.get("proxyserver")
    handler = getattr(proxyserver, "connections", {}).get(flow.client_conn.id)
    if handler is None:
        logger.warning("no live UDP connection for %s: cannot inject", flow.client_conn.peername)
        return False
    event = UdpMessageInjected(flow, udp.UDPMessage(not to_client, data))
    task = asyncio.ensure_future(handler.server_event(event))
    _pending.add(task)
    task.add_done_callback(_pending.discard)
    return True


_pending: set[asyncio.Future[Any]] = set()


class ATLSCoAP:
    """mitmproxy addon for UDP mode: recognise, log and police ATLS over CoAP."""

    def __init__(self) -> None:
        self.policy = Policy.allow_all()
        self.state = PolicyState()
        self.audit: TextIO | None = None
        self.flights: dict[tuple[str, str], int] = {}
        self.counters: dict[str, int] = {}
        self._rng = random.Random(7)

    def load(self, loader: Any) -> None:
        loader.add_option("atls_policy", str, "", "ATLS policy file (YAML); empty allows all.")
        loader.add_option("atls_audit_log", str, "", "JSON lines, one per ATLS datagram.")
        loader.add_option("atls_coap_content_format", int, CONTENT_FORMAT_ATLS, "application/atls")
        loader.add_option(
            "atls_coap_protected_format", int, CONTENT_FORMAT_ATLS_PROTECTED, "aes128gcm variant"
        )
        loader.add_option("atls_coap_session_option", int, SESSION_OPTION, "ATLS-Session")

    def configure(self, updated: set[str]) -> None:
        from mitmproxy import ctx, exceptions  # noqa: PLC0415

        if "atls_policy" in updated:
            path = ctx.options.atls_policy
            try:
                self.policy = load_policy(path) if path else Policy.allow_all()
            except PolicyError as exc:
                raise exceptions.OptionsError(str(exc)) from None
            self.state = PolicyState()
        if "atls_audit_log" in updated:
            if self.audit:
                self.audit.close()
            path = ctx.options.atls_audit_log
            self.audit = Path(path).open("a", buffering=1) if path else None

    def done(self) -> None:
        if self.audit:
            self.audit.close()
            self.audit = None

    async def udp_message(self, flow: Any) -> None:
        from mitmproxy import ctx  # noqa: PLC0415

        message = flow.messages[-1]
        view = inspect_datagram(
            message.content,
            content_format=ctx.options.atls_coap_content_format,
            protected_format=ctx.options.atls_coap_protected_format,
            session_option=ctx.options.atls_coap_session_option,
        )
        if view is None:
            return
        direction = "request" if message.from_client else "response"
        client = str(flow.client_conn.peername[0]) if flow.client_conn.peername else "unknown"
        server = flow.server_conn.address or ("", 0)
        key = (flow.id, direction)
        if view.first_block:
            if len(self.flights) >= MAX_FLOWS and key not in self.flights:
                self.flights.clear()
            self.flights[key] = self.flights.get(key, 0) + 1
        flight = self.flights.get(key, 1)
        summary: dict[str, Any] = {}
        offered: frozenset[str] = frozenset()
        sni = None
        if view.kind == "atls" and view.first_block:
            seen = summarize(view.message.payload, view.coding)
            summary, offered, sni = seen.to_dict(), frozenset(seen.offered_versions), seen.sni
        context = FlightContext(
            client=client,
            host=str(server[0]),
            port=int(server[1]),
            path=view.path,
            variant=view.variant,
            direction=direction,
            flight=flight,
            offered_versions=offered,
            sni=sni,
            body_bytes=len(view.message.payload),
            transport="coap",
        )
        decision = self.policy.decide(context, self.state)
        applied = await self._apply(flow, message, view, decision, ctx)
        self.counters[decision.action.value] = self.counters.get(decision.action.value, 0) + 1
        line = {
            "time": round(time.time(), 3),
            "transport": "coap",
            "kind": view.kind,
            "client": client,
            "server": f"{server[0]}:{server[1]}",
            "direction": direction,
            "variant": view.variant,
            "coding": view.coding,
            "path": view.path,
            "flight": flight,
            "bytes": len(view.message.payload),
            "coap": view.facts,
            "summary": summary,
            "decision": decision.action.value,
            "rule": decision.rule,
            "applied": applied,
            "audit": decision.audit,
        }
        if self.audit:
            self.audit.write(json.dumps(line) + "\n")
        logger.info(
            "coap %s %s %s %s B: %s (%s)",
            view.kind,
            direction,
            view.facts.get("code"),
            len(view.message.payload),
            decision.action.value,
            decision.rule,
        )

    async def _apply(
        self, flow: Any, message: Any, view: CoAPView, decision: Decision, ctx: Any
    ) -> str:
        if decision.action is Action.BLOCK:
            text = f"blocked-by-policy: rule {decision.rule}" + (
                f": {decision.detail}" if decision.detail else ""
            )
            if message.from_client:
                message.content = b""
                reply = error_datagram(view.message, Code.FORBIDDEN, text)
                if inject(flow, to_client=True, data=reply):
                    return "dropped; 4.03 sent to the device"
                return "dropped (no connection to answer on)"
            answer = view.message.copy(code=Code.FORBIDDEN, payload=text.encode())
            for number in list(answer.opt._options):  # the answer is a bare error
                answer.opt.delete_option(number)
            message.content = answer.encode()
            return "answer replaced by 4.03"
        if decision.action is not Action.FAULT or decision.fault is None:
            return "passed"
        fault = decision.fault
        kind = fault.type
        if kind == "drop":
            message.content = b""
            return "dropped"
        if kind == "bitflip":
            payload_at = len(message.content) - len(view.message.payload)
            if not view.message.payload:
                return "nothing to flip"
            rng = random.Random(fault.seed) if fault.seed is not None else self._rng
            offset = (
                fault.offset
                if fault.offset is not None
                else rng.randrange(len(view.message.payload))
            )
            offset = min(offset, len(view.message.payload) - 1)
            bit = fault.bit if fault.bit is not None else rng.randrange(8)
            data = bytearray(message.content)
            data[payload_at + offset] ^= 1 << bit
            message.content = bytes(data)
            return f"bit {bit} flipped at payload offset {offset}"
        if kind == "delay":
            await asyncio.sleep(fault.seconds)
            return "delayed"
        if kind == "duplicate":
            inject(flow, to_client=not message.from_client, data=message.content)
            return "duplicated"
        return f"fault {kind} applies to HTTP bodies only: passed"
