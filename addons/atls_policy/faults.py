"""Fault injection: what a ``fault`` decision does to the flight in flight.

Bit flips, truncation, duplication and replays rewrite the body; ``delay``
waits (an async hook, so other flows go on); ``drop`` kills the connection;
``content-type`` rewrites the label. Replays draw on the session's earlier
flights, which only this addon keeps (bounded).
"""

from __future__ import annotations

import asyncio
import random
from collections import OrderedDict

from mitmproxy import http

from .guard import fail_closed
from .policy import Action, Decision, Fault
from .tracking import atls_meta

_HISTORY = 16
_MAX_SESSIONS = 10000


class ATLSFaults:
    def __init__(self) -> None:
        self.history: OrderedDict[str, dict[str, list[bytes]]] = OrderedDict()

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
        history = self._history(meta["session"])[direction]
        decision = Decision.from_dict(meta[direction]["decision"])
        if decision.action is Action.FAULT and decision.fault is not None:
            note = await self._fault(flow, message, decision.fault, decision.fault_use, history)
            note = note.replace("{direction}", direction)
            meta[direction]["fault"] = note
        history.append(body)
        del history[:-_HISTORY]

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
        elif kind == "truncate":
            keep = fault.keep if fault.keep is not None else len(body) // 2
            new_body = body[:keep]
            note = f"truncated {len(body)} to {len(new_body)} bytes"
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
        message.raw_content = new_body
        return note
