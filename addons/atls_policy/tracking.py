"""Detection and session tracking: which flows are ATLS, and which session each belongs to.

Runs first on every flight. It writes what the other ATLS addons act on into
``flow.metadata["atls"]`` (plain data, saved with the flows):

    {"variant", "session", "flight",
     "hello": {versions, sni, cipher_suites, groups, key_shares, alpn, extensions},
     "client_cert": {subjects, serials},        # TLS 1.2 only: TLS 1.3 encrypts it
     "request" / "response": {"summary", "line", "session_bytes"}}

The middlebox never keeps plaintext: a session is named by a hash of its
cookie, and what it remembers is counts and ClientHello facts.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from mitmproxy import ctx, http

from atls.store import session_public_id

from .detect import classify_request, classify_response
from .guard import fail_closed
from .observe import FlightSummary, summarize

_MAX_SESSIONS = 10000


@dataclass
class SessionState:
    """What the middlebox remembers of one ATLS session (never plaintext)."""

    flights: int = 0
    byte_count: int = 0
    hello: dict[str, Any] = field(default_factory=dict)
    client_cert: dict[str, list[str]] = field(default_factory=dict)

    def learn(self, summary: FlightSummary) -> None:
        """Keep what the session's handshake shows in clear: the ClientHello, a TLS 1.2 cert."""
        ch = summary.client_hello
        if ch is not None:
            self.hello = {
                "versions": ch.versions,
                "sni": ch.sni,
                "cipher_suites": ch.cipher_suites,
                "groups": ch.supported_groups,
                "key_shares": ch.key_share_groups,
                "alpn": ch.alpn,
                "extensions": ch.extensions,
            }
        if summary.certificates and "client_hello" not in summary.handshake:
            self.client_cert = {
                "subjects": list(summary.certificates),
                "serials": list(summary.certificate_serials),
            }


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
        state.learn(summary)
        flow.metadata["atls"] = {
            "variant": variant,
            "session": key,
            "flight": state.flights,
            "hello": state.hello,
            "client_cert": state.client_cert,
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
                "hello": {},
                "client_cert": {},
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


def _flight(summary: FlightSummary, session_bytes: int) -> dict[str, Any]:
    return {
        "summary": summary.to_dict(),
        "line": summary.one_line(),
        "session_bytes": session_bytes,
        "records": summary.record_state,
    }
