"""Connection and body limits of the service: what slow or oversized clients meet.

Three layers, each independent of the HTTP parser (uvicorn's h11 or httptools):

- ``guarded_protocol(base, limits)``: a subclass of uvicorn's protocol class
  with a *header timeout* (a request head, or the first byte of one, must
  arrive within ``header_timeout``; also between keep-alive requests), a cap
  on the request head's size, a cap on concurrent connections, and problem
  documents instead of uvicorn's plain-text 400.
- ``BodyTimeout``: ASGI middleware; a request body must arrive whole within
  ``body_timeout`` of the request, else 408 (and the connection closes).
- ``read_body``: the one streaming reader every route uses; a declared
  ``Content-Length`` over the limit is refused before reading, a streamed body
  as soon as it passes the limit.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from atls.errors import Reason, Refusal
from atls.http_binding import PROBLEM_MEDIA_TYPE, Problem

from .logs import log_event

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectionLimits:
    """Defaults: sane for a testbed fleet behind one middlebox."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keep_alive: int = 5
    max_connections: int = 1000
    max_header_bytes: int = 16384

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if value <= 0:
                raise ValueError(f"{name.replace('_', '-')} must be positive, got {value}")


# -- request bodies --------------------------------------------------------------------


def body_too_large(size: int, limit: int) -> Refusal:
    return Refusal(
        Reason.BODY_TOO_LARGE,
        f"the body has at least {size} bytes; this route accepts {limit}",
        title="body too large",
        extra={"max_bytes": limit},
    )


async def read_body(request: Request, limit: int, too_large: Any = body_too_large) -> bytes:
    """The body, read chunk by chunk; refused once it (or its declaration) passes ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(int(declared), limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large(len(body), limit)
    return bytes(body)


def request_timeout(what: str, seconds: float) -> Refusal:
    return Refusal(
        Reason.REQUEST_TIMEOUT,
        f"the {what} did not arrive within {seconds:g} s",
        title="request timeout",
        extra={"timeout_seconds": seconds},
    )


class BodyTimeout:
    """ASGI middleware: the body must arrive whole within ``timeout`` seconds.

    Each ``receive`` waits at most until the deadline; past it the app sees a
    ``Refusal`` (request-timeout) from ``receive``. Routes answer it as any
    refusal; if the app lets it escape, the middleware answers 408 itself. An
    answer given before the body was read whole (a timeout, a refusal before
    reading) carries ``Connection: close``: the rest is never read.
    """

    def __init__(self, app: ASGIApp, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        timed_out = False
        started = False
        body_done = not _has_body(scope)

        async def guarded_receive() -> Message:
            nonlocal timed_out, body_done
            if body_done:
                return await receive()  # waiting for a disconnect: not the body's time
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                timed_out = True
                raise request_timeout("request body", self.timeout) from None
            if message["type"] == "http.request" and not message.get("more_body", False):
                body_done = True
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if timed_out or not body_done:
                    # the rest of the body stays unread: end the connection with this answer
                    headers = [h for h in message.get("headers", []) if h[0] != b"connection"]
                    message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Refusal as refusal:
            if started or refusal.reason is not Reason.REQUEST_TIMEOUT:
                raise
            problem = Problem.from_refusal(refusal)
            await guarded_send(
                {
                    "type": "http.response.start",
                    "status": problem.status,
                    "headers": [(b"content-type", PROBLEM_MEDIA_TYPE.encode())],
                }
            )
            await send({"type": "http.response.body", "body": problem.to_json()})
        if timed_out:
            log_event(
                "http.timeout",
                logging.WARNING,
                what="body",
                path=scope.get("path"),
                client=(scope.get("client") or ["unknown"])[0],
            )


def _has_body(scope: Scope) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


_libc: Any = None


def release_memory() -> None:
    """Give freed heap back to the system (glibc keeps it otherwise after a burst).

    Cheap (a few ms) and harmless where ``malloc_trim`` does not exist.
    """
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc.malloc_trim  # noqa: B018 - probe: musl and others have none
        except (OSError, AttributeError):
            _libc = False
    if _libc:
        _libc.malloc_trim(0)


# -- connections -----------------------------------------------------------------------


def raw_problem(refusal: Refusal) -> bytes:
    """A whole HTTP/1.1 response (closing the connection) for a refusal outside any request."""
    problem = Problem.from_refusal(refusal)
    body = problem.to_json()
    head = (
        f"HTTP/1.1 {problem.status} {_PHRASES.get(problem.status, 'Error')}\r\n"
        f"content-type: {PROBLEM_MEDIA_TYPE}\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


_PHRASES = {
    400: "Bad Request",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


def guarded_protocol(base: type[Any], limits: ConnectionLimits) -> type[Any]:
    """``base`` (uvicorn's H11Protocol or HttpToolsProtocol) with the connection limits.

    Both base classes keep ``self.cycle`` (the request being served, set when a
    request head is complete), ``self.transport``, ``self.connections`` and
    ``send_400_response``; this relies on nothing else.
    """

    class Guarded(base):  # type: ignore[misc,valid-type]
        _head_timer: asyncio.TimerHandle | None = None
        _armed_cycle: Any = None
        _head_bytes = 0
        _tail = b""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                self._refuse(
                    Refusal(
                        Reason.TOO_MANY_CONNECTIONS,
                        f"the service holds at most {limits.max_connections} connections",
                        title="too many connections",
                        retry_after=1,
                    )
                )
                return
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            if self.cycle is not None and not self.cycle.response_complete:
                return  # a pipelined request is already being served
            self._armed_cycle = self.cycle
            self._head_bytes = 0
            self._tail = b""
            self._head_timer = self.loop.call_later(limits.header_timeout, self._head_late)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_pending(self) -> bool:
            return self._head_timer is not None and self.cycle is self._armed_cycle

        def _head_late(self) -> None:
            self._head_timer = None
            if self.cycle is self._armed_cycle and not self.transport.is_closing():
                log_event("http.timeout", logging.WARNING, what="head", client=_peer(self))
                self._refuse(request_timeout("request head", limits.header_timeout))

        def data_received(self, data: bytes) -> None:
            if self._head_pending():
                # count the head only: the bytes up to its blank line, if it is here
                end = (self._tail + data).find(b"\r\n\r\n")
                counted = len(data) if end < 0 else max(0, end - len(self._tail))
                self._head_bytes += counted
                self._tail = (self._tail + data)[-3:]
                if self._head_bytes > limits.max_header_bytes:
                    self._refuse(
                        Refusal(
                            Reason.HEADER_TOO_LARGE,
                            f"the request head exceeds {limits.max_header_bytes} bytes",
                            title="request header too large",
                        )
                    )
                    return
            super().data_received(data)
            if self._head_timer is not None and self.cycle is not self._armed_cycle:
                self._disarm()  # a head is complete: the body timeout takes over

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request's head has its own deadline

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def send_400_response(self, msg: str) -> None:
            self._refuse(
                Refusal(Reason.MALFORMED_REQUEST, f"invalid HTTP request: {msg}", title=msg)
            )

        def _refuse(self, refusal: Refusal) -> None:
            self._disarm()
            if not self.transport.is_closing():
                self.transport.write(raw_problem(refusal))
                self.transport.close()

    Guarded.__name__ = f"Guarded{base.__name__}"
    Guarded.__qualname__ = Guarded.__name__
    return Guarded


def _peer(protocol: Any) -> str:
    client = getattr(protocol, "client", None)
    return str(client[0]) if client else "unknown"
