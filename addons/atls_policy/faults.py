"""Fault injection: what a ``fault`` decision does to the flight in flight.

Bit flips, truncation, duplication and replays rewrite the body; ``delay``
waits (an async hook, so other flows go on); ``drop`` kills the connection;
``content-type`` rewrites the label. Replays draw on the session's earlier
flights (or another session's), which only this addon keeps (bounded).

Attacks (issue #12): ``strip-versions`` removes supported_versions from a
ClientHello (a downgrade), ``reorder`` reverses a flight's records, and
``swap-cookie`` sends a request under another session's cookie. For that one
addon keeps the raw cookies of recent sessions in memory only (never saved
or logged).
"""

from __future__ import annotations

import asyncio
import random
from collections import OrderedDict

from mitmproxy import ctx, http

from atls.records import ContentType, HandshakeType, RecordError, iter_records

from .guard import fail_closed
from .policy import Action, Decision, Fault
from .tracking import atls_meta

_HISTORY = 16
_MAX_SESSIONS = 10000


class ATLSFaults:
    def __init__(self) -> None:
        self.history: OrderedDict[str, dict[str, list[bytes]]] = OrderedDict()
        self.cookies: OrderedDict[str, str] = OrderedDict()  # session key -> raw cookie

    @fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        await self._apply(flow, "request")

    @fail_closed
    async def response(self, flow: http.HTTPFlow) -> None:
        await self._apply(flow, "response")

    def _history(self, session: str) -> dict[str, list[bytes]]:
        found = self.history.get(session)
        if found is None:
            found = self.history[session] = {"request": [], "response": []}
            while len(self.history) > _MAX_SESSIONS:
                self.history.popitem(last=False)
        return found

    async def _apply(self, flow: http.HTTPFlow, direction: str) -> None:
        meta = atls_meta(flow)
        if meta is None or "decision" not in meta.get(direction, {}):
            return
        message = flow.request if direction == "request" else flow.response
        assert message is not None
        body = message.raw_content or b""
        pending = f"pending:{flow.id}"
        if meta["session"] != pending and pending in self.history:  # the cookie is known now
            self.history[meta["session"]] = self.history.pop(pending)
        self._remember_cookie(flow, meta["session"])
        history = self._history(meta["session"])[direction]
        decision = Decision.from_dict(meta[direction]["decision"])
        if decision.action is Action.FAULT and decision.fault is not None:
            fault = decision.fault
            if fault.type == "delay":  # noted first: the client may give up meanwhile
                meta[direction]["fault"] = f"delayed {fault.seconds:g}s"
            if fault.type == "swap-cookie":
                note = await self._swap_cookie(flow, meta["session"], fault)
            elif fault.type == "replay" and fault.other_session:
                note = await self._replay_other(message, meta["session"], direction, fault.wait)
            else:
                note = await self._fault(flow, message, fault, decision.fault_use, history)
            note = note.replace("{direction}", direction)
            meta[direction]["fault"] = note
        history.append(body)
        del history[:-_HISTORY]

    def _remember_cookie(self, flow: http.HTTPFlow, session: str) -> None:
        if session.startswith("pending:"):
            return
        name = ctx.options.atls_session_cookie
        raw = flow.request.cookies.get(name)
        if raw is None and flow.response is not None:
            issued = flow.response.cookies.get(name)
            raw = issued[0] if issued else None
        if raw:
            self.cookies[session] = raw
            self.cookies.move_to_end(session)
            while len(self.cookies) > _MAX_SESSIONS:
                self.cookies.popitem(last=False)

    def _other_cookie(self, session: str) -> str | None:
        for key in reversed(self.cookies):
            if key != session:
                return self.cookies[key]
        return None

    async def _swap_cookie(self, flow: http.HTTPFlow, session: str, fault: Fault) -> str:
        name = ctx.options.atls_session_cookie
        if flow.request.cookies.get(name) is None:
            return "swap-cookie: the request names no session, passed unchanged"
        waited = 0.0
        other = self._other_cookie(session)
        while other is None and waited < fault.wait:  # bounded: wait for a second session
            await asyncio.sleep(0.05)
            waited += 0.05
            other = self._other_cookie(session)
        if other is None:
            return "swap-cookie: no other session seen, passed unchanged"
        flow.request.cookies[name] = other
        return "sent the request under another session's cookie"

    def _other_flight(self, session: str, direction: str) -> bytes | None:
        for key in reversed(self.history):
            if key != session and self.history[key][direction]:
                return self.history[key][direction][-1]
        return None

    async def _replay_other(
        self, message: http.Message, session: str, direction: str, wait: float
    ) -> str:
        waited, earlier = 0.0, self._other_flight(session, direction)
        while earlier is None and waited < wait:  # bounded: wait for another session's flight
            await asyncio.sleep(0.05)
            waited += 0.05
            earlier = self._other_flight(session, direction)
        if earlier is None:
            return "replay: no other session's flight, passed unchanged"
        _set_body(message, earlier)
        return "replayed another session's latest {direction} flight"

    @staticmethod
    async def _fault(
        flow: http.HTTPFlow,
        message: http.Message,
        fault: Fault,
        use: int,
        history: list[bytes],
    ) -> str:
        kind = fault.type
        body = message.raw_content or b""
        if kind == "delay":
            await asyncio.sleep(fault.seconds)
            return f"delayed {fault.seconds:g}s"
        if kind == "drop":
            flow.kill()
            return "dropped the connection"
        if kind == "content-type":
            if fault.content_type:
                message.headers["content-type"] = fault.content_type
                return f"content type set to {fault.content_type}"
            message.headers.pop("content-type", None)
            return "content type stripped"
        new_body, note = body, kind
        if kind == "bitflip" and body:
            rng = random.Random(f"{fault.seed}:{use}")
            position = (
                fault.offset % len(body) if fault.offset is not None else rng.randrange(len(body))
            )
            bit = fault.bit if fault.bit is not None else rng.randrange(8)
            flipped = bytearray(body)
            flipped[position] ^= 1 << bit
            new_body, note = bytes(flipped), f"flipped bit {bit} of byte {position}"
        elif kind == "truncate" and fault.keep_records is not None:
            try:
                ends = [r.wire_length for r in iter_records(body)]
            except RecordError:
                return "truncate: not TLS records, passed unchanged"
            kept = ends[: fault.keep_records]
            new_body = body[: sum(kept)]
            note = f"truncated {len(ends)} records to {len(kept)} ({len(new_body)} bytes)"
        elif kind == "truncate":
            keep = fault.keep if fault.keep is not None else len(body) // 2
            new_body = body[:keep]
            note = f"truncated {len(body)} to {len(new_body)} bytes"
        elif kind == "reorder":
            try:
                parts = [body[r.offset : r.offset + r.wire_length] for r in _located(body)]
            except RecordError:
                return "reorder: not TLS records, passed unchanged"
            new_body = b"".join(reversed(parts))
            note = f"reversed the order of {len(parts)} records"
        elif kind == "strip-versions":
            stripped = strip_supported_versions(body)
            if stripped is None:
                return "strip-versions: no ClientHello with supported_versions, passed unchanged"
            new_body, note = stripped, "removed supported_versions from the ClientHello"
        elif kind == "duplicate":
            new_body, note = body + body, "duplicated the flight"
        elif kind == "replay":
            if fault.replay_flight is not None:
                index = fault.replay_flight - 1
                earlier = history[index] if 0 <= index < len(history) else None
            else:
                earlier = history[-1] if history else None
            if earlier is None:
                return "replay: no earlier flight to replay, passed unchanged"
            new_body, note = earlier, "replayed an earlier {direction} flight"
        _set_body(message, new_body)
        return note


def _set_body(message: http.Message, body: bytes) -> None:
    """Replace the body and keep a declared Content-Length true.

    ``raw_content`` leaves the header as it was: a shorter body under the old
    length left the receiver waiting for bytes that never came (a truncation
    looked like a hang).
    """
    message.raw_content = body
    if "content-length" in message.headers:
        message.headers["content-length"] = str(len(body))


class _Located:
    def __init__(self, offset: int, wire_length: int) -> None:
        self.offset, self.wire_length = offset, wire_length


def _located(body: bytes) -> list[_Located]:
    out, at = [], 0
    for record in iter_records(body):
        out.append(_Located(at, record.wire_length))
        at += record.wire_length
    return out


_SUPPORTED_VERSIONS = 43


def strip_supported_versions(body: bytes) -> bytes | None:
    """The flight with supported_versions cut out of its ClientHello (lengths fixed).

    Handles a ClientHello in the first record (as every client here sends it);
    returns None when there is none to strip.
    """
    try:
        records = list(iter_records(body))
    except RecordError:
        return None
    if not records or records[0].content_type != ContentType.HANDSHAKE:
        return None
    payload = records[0].payload
    if payload[:1] != bytes([HandshakeType.CLIENT_HELLO]) or len(payload) < 4:
        return None
    hello = payload[4 : 4 + int.from_bytes(payload[1:4])]
    try:
        at = 2 + 32  # legacy_version, random
        at += 1 + hello[at]  # session id
        at += 2 + int.from_bytes(hello[at : at + 2])  # cipher suites
        at += 1 + hello[at]  # compression methods
        ext_start = at + 2
        ext_end = ext_start + int.from_bytes(hello[at : at + 2])
        kept, pos, found = b"", ext_start, False
        while pos + 4 <= ext_end:
            ext_type = int.from_bytes(hello[pos : pos + 2])
            ext_len = int.from_bytes(hello[pos + 2 : pos + 4])
            if ext_type == _SUPPORTED_VERSIONS:
                found = True
            else:
                kept += hello[pos : pos + 4 + ext_len]
            pos += 4 + ext_len
    except IndexError:
        return None
    if not found:
        return None
    new_hello = hello[:at] + len(kept).to_bytes(2) + kept
    new_payload = bytes([HandshakeType.CLIENT_HELLO]) + len(new_hello).to_bytes(3) + new_hello
    rest = payload[4 + len(hello) :]
    new_payload += rest
    header = bytes([ContentType.HANDSHAKE]) + records[0].legacy_version.to_bytes(2)
    first = header + len(new_payload).to_bytes(2) + new_payload
    return first + body[records[0].wire_length :]
