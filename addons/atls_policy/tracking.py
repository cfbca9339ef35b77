"""Detection and session tracking: which flows are ATLS, and which session each belongs to.

Runs first on every flight. It writes what the other ATLS addons act on into
``flow.metadata["atls"]`` (plain data, saved with the flows):

    {"variant", "session", "flight", "offered_versions", "sni",
     "request" / "response": {"summary", "line", "session_bytes"}}

The middlebox never keeps plaintext: a session is named by a hash of its
cookie, and what it remembers is counts and ClientHello facts.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from mitmproxy import ctx, http

from atls.store import session_public_id

from .detect import classify_request, classify_response
from .guard import fail_closed
from .observe import summarize

_MAX_SESSIONS = 10000


@dataclass
class SessionState:
    """What the middlebox remembers of one ATLS session (never plaintext)."""

    flights: int = 0
    byte_count: int = 0
    offered_versions: tuple[str, ...] = ()
    sni: str | None = None


def atls_meta(flow: http.HTTPFlow) -> dict[str, Any] | None:
    """The tracker's record of an ATLS flow, or None for other flows."""
    meta = flow.metadata.get("atls")
    return meta if isinstance(meta, dict) else None


class ATLSTracker:
    def __init__(self) -> None:
        self.sessions: OrderedDict[str, SessionState] = OrderedDict()

    def load(self, loader: Any) -> None:
        loader.add_option(
            "atls_detect_unlabelled",
            bool,
            True,
            "Also treat well-formed TLS records under other content types as ATLS.",
        )
        loader.add_option(
            "atls_session_cookie", str, "atls_session", "Cookie that names an ATLS session."
        )

    def _session(self, key: str) -> SessionState:
        state = self.sessions.get(key)
        if state is None:
            state = self.sessions[key] = SessionState()
            while len(self.sessions) > _MAX_SESSIONS:
                self.sessions.popitem(last=False)
        else:
            self.sessions.move_to_end(key)
        return state

    @fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:  # answered by someone else already
            return
        req = flow.request
        body = req.raw_content or b""
        variant = classify_request(
            req.method,
            req.path,
            req.headers.get("content-type"),
            body,
            ctx.options.atls_detect_unlabelled,
        )
        if variant is None:
            return
        cookie = req.cookies.get(ctx.options.atls_session_cookie)
        key = session_public_id(cookie) if cookie else f"pending:{flow.id}"
        state = self._session(key)
        state.flights += 1
        summary = summarize(body, req.headers.get("content-encoding"))
        if summary.client_hello:
            state.offered_versions = tuple(summary.client_hello.versions)
            state.sni = summary.client_hello.sni
        flow.metadata["atls"] = {
            "variant": variant,
            "session": key,
            "flight": state.flights,
            "offered_versions": list(state.offered_versions),
            "sni": state.sni,
            "request": _flight(summary, state.byte_count),
        }
        state.byte_count += len(body)

    @fail_closed
    def response(self, flow: http.HTTPFlow) -> None:
        resp = flow.response
        if resp is None:
            return
        meta = atls_meta(flow)
        body = resp.raw_content or b""
        if meta is None:
            variant = classify_response(
                resp.headers.get("content-type"), body, ctx.options.atls_detect_unlabelled
            )
            if variant is None:
                return
            meta = flow.metadata["atls"] = {
                "variant": variant,
                "session": f"pending:{flow.id}",
                "flight": 1,
                "offered_versions": [],
                "sni": None,
            }
        if meta.get("answered_by_policy"):
            return
        key = meta["session"]
        set_cookie = resp.cookies.get(ctx.options.atls_session_cookie)
        if key.startswith("pending:") and set_cookie:
            new_key = session_public_id(set_cookie[0])
            self.sessions[new_key] = self.sessions.pop(key, SessionState(flights=1))
            key = meta["session"] = new_key
        state = self._session(key)
        summary = summarize(body, resp.headers.get("content-encoding"))
        meta["response"] = _flight(summary, state.byte_count)
        state.byte_count += len(body)


def _flight(summary: Any, session_bytes: int) -> dict[str, Any]:
    return {
        "summary": summary.to_dict(),
        "line": summary.one_line(),
        "session_bytes": session_bytes,
        "records": summary.record_state,
    }
