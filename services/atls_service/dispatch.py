"""Run an inner (decrypted) HTTP request through an ASGI app, in process.

The session facts travel in ``scope["extensions"]["atls"]``, where the client
cannot forge them (a header could be). ``atls_context(request)`` reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.types import ASGIApp, Message

from atls.inner_http import InnerRequest, InnerResponse
from atls.keys import ExportedKeys
from atls.session import SessionInfo


@dataclass(frozen=True)
class ATLSContext:
    """What an API handler learns about the ATLS session a request came in."""

    session_id: str
    mode: str
    info: SessionInfo
    exporter_fingerprint: str | None
    keys: ExportedKeys | None = None  # the session's export (OSCORE is keyed from it)
    identity: str | None = None  # the device identity (certificate serial), when known
    handle: str | None = None  # the session's handle (server side only: OSCORE ties to it)


def atls_context(request: Request) -> ATLSContext | None:
    """The ATLS session of this request, or None when it came over plain HTTP(S)."""
    value = request.scope.get("extensions", {}).get("atls")
    return value if isinstance(value, ATLSContext) else None


async def dispatch(
    app: ASGIApp,
    inner: InnerRequest,
    context: ATLSContext,
    client: tuple[str, int] | None,
) -> InnerResponse:
    split = urlsplit(inner.target)
    path = split.path or "/"
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": inner.method.upper(),
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": split.query.encode(),
        "root_path": "",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in inner.headers],
        "client": client,
        "server": ("atls", 443),
        "extensions": {"atls": context},
    }
    body_sent = False

    async def receive() -> Message:
        nonlocal body_sent
        if body_sent:
            return {"type": "http.disconnect"}
        body_sent = True
        return {"type": "http.request", "body": inner.body, "more_body": False}

    status = 500
    headers: list[tuple[str, str]] = []
    chunks: list[bytes] = []

    async def send(message: Message) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status = message["status"]
            headers = [
                (k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", [])
            ]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return InnerResponse(status=status, headers=headers, body=b"".join(chunks))
