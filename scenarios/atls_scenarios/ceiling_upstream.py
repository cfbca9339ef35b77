"""The cheapest HTTPS upstream for the middlebox ceiling: answers ``?size=N`` with N bytes.

A raw ASGI app (no framework) on uvicorn, so the middlebox in front of it is the
bound. ``uvicorn atls_scenarios.ceiling_upstream:app --ssl-certfile ... --ssl-keyfile ...``
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:  # read (and drop) the body
        message = await receive()
        more = message.get("more_body", False)
    query = parse_qs(scope.get("query_string", b"").decode())
    size = int(query.get("size", ["2"])[0])
    body = b"x" * min(size, 1 << 20)
    headers = [(b"content-type", b"application/octet-stream")]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
