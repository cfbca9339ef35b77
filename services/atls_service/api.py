"""The service's own API: health and a small demo, reachable over ATLS too.

These routes are served both on the network (plain HTTPS) and inside ATLS
sessions; a handler tells which with ``atls_context``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .dispatch import atls_context
from .limits import read_body

MAX_ECHO_BYTES = 65536


def _session_facts(request: Request) -> dict[str, Any]:
    ctx = atls_context(request)
    if ctx is None:
        return {"atls": False}
    return {
        "atls": True,
        "session": ctx.session_id,
        "mode": ctx.mode,
        "version": ctx.info.version,
        "cipher": ctx.info.cipher,
        "peer": ctx.info.peer_subject,
        "exporter_fingerprint": ctx.exporter_fingerprint,
    }


async def hello(request: Request) -> Response:
    return JSONResponse({"message": "hello from the ATLS service", **_session_facts(request)})


async def whoami(request: Request) -> Response:
    return JSONResponse(_session_facts(request))


async def echo(request: Request) -> Response:
    body = await read_body(request, MAX_ECHO_BYTES)  # a refusal is answered by the app
    return Response(
        body,
        media_type=request.headers.get("content-type", "application/octet-stream"),
        headers={"x-echo-length": str(len(body))},
    )


def api_routes(health: Callable[[], dict[str, Any]]) -> list[Route]:
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", **health()})

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/api/hello", hello, methods=["GET"]),
        Route("/api/whoami", whoami, methods=["GET"]),
        Route("/api/echo", echo, methods=["POST"]),
    ]
