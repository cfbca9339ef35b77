"""The ATLS endpoint: ``POST /.well-known/atls`` (and draft-00 ``/atls``) over HTTP.

A thin adapter over the core's ``ServerDriver``: it reads the request (media
type, content coding, the session cookie, the body up to the limit), hands
them to the driver, serves an inner request when the driver yields one, and
maps the outcome to HTTP: a reply as ``application/atls`` (with the cookie on
a session's first answer), a refusal as its status and problem document.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp

from atls.errors import Reason, Refusal
from atls.http_binding import (
    MEDIA_TYPE,
    MODE_HEADER,
    PROBLEM_MEDIA_TYPE,
    SESSION_COOKIE,
    Problem,
    Variant,
    coding_of,
    media_type_of,
    mode_of,
)
from atls.inner_http import InnerHTTPError, InnerResponse, decode_request, encode_response
from atls.protection import CONTENT_CODING
from atls.server import ApplicationRequest, Coding, Refused, Reply, ServerDriver, too_large

from .dispatch import ATLSContext, dispatch
from .limits import read_body
from .logs import log_event


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> Response:
    return Response(
        problem.to_json(),
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def refusal_response(refusal: Refusal) -> Response:
    """A refusal as HTTP: its status, its problem document, Retry-After when it has one."""
    headers = {"retry-after": str(refusal.retry_after)} if refusal.retry_after else None
    return problem_response(Problem.from_refusal(refusal), headers)


EstablishedHook = Callable[[Reply | ApplicationRequest], None]


class ATLSEndpoint:
    """Starlette handler for the ATLS paths."""

    def __init__(
        self, driver: ServerDriver, api: ASGIApp, on_established: EstablishedHook | None = None
    ) -> None:
        self.driver = driver
        self.api = api
        self.on_established = on_established
        self.counters: dict[str, int] = {}

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

    async def handle(self, request: Request) -> Response:
        variant = Variant.of_media_type(request.headers.get("content-type"))
        coding = coding_of(request.headers.get("content-encoding"))
        try:
            if variant is None:
                raise Refusal(
                    Reason.NOT_ATLS,
                    f"Content-Type must be {MEDIA_TYPE} (or {Variant.DRAFT00.media_type}), "
                    f"got {media_type_of(request.headers.get('content-type')) or 'none'!r}",
                    title="not an ATLS message",
                )
            if coding is None:
                raise Refusal(
                    Reason.UNSUPPORTED_CODING,
                    f"ATLS accepts no content coding or {CONTENT_CODING}, "
                    f"got {request.headers.get('content-encoding')!r}",
                    title="unsupported content coding",
                )
            body = await read_body(request, self.driver.store.limits.max_flight_bytes, too_large)
        except Refusal as refusal:
            return self._refused(request, Refused(refusal))
        except ClientDisconnect:
            return Response(status_code=400)
        outcome = self.driver.receive(
            request.cookies.get(SESSION_COOKIE),
            coding,
            body,
            client=_client_host(request),
            mode=mode_of(request.headers.get(MODE_HEADER)),
        )
        if isinstance(outcome, Refused):
            return self._refused(request, outcome)
        if outcome.established:
            self._established(outcome)
        if isinstance(outcome, ApplicationRequest):
            inner = await self._serve(request, outcome)
            outcome = self.driver.respond(outcome, encode_response(inner))
        return self._reply(request, variant, outcome)

    def _reply(self, request: Request, variant: Variant, reply: Reply) -> Response:
        headers = {"content-encoding": CONTENT_CODING} if reply.coding is Coding.PROTECTED else None
        response = Response(reply.body, media_type=variant.media_type, headers=headers)
        if reply.new_session and not reply.closed:
            # Starlette's set_cookie goes through http.cookies (~25 us a handshake,
            # profiled); the handle is URL-safe base64 and the path one of ours,
            # so nothing here needs quoting. The same header, written directly.
            cookie = (
                f"{SESSION_COOKIE}={reply.handle}; HttpOnly; "
                f"Path={request.scope['path']}; SameSite=strict"
            )
            response.raw_headers.append((b"set-cookie", cookie.encode("latin-1")))
        if reply.closed and reply.entry is not None:
            log_event("atls.closed", session=reply.entry.public_id, client=reply.entry.client)
        return response

    def _refused(self, request: Request, refused: Refused) -> Response:
        refusal = refused.refusal
        self._count(f"refused:{refusal.slug}")
        entry = refused.entry
        if refusal.reason is Reason.TLS_ALERT:
            log_event(
                "atls.tls_failure",
                logging.WARNING,
                session=entry.public_id if entry else None,
                client=_client_host(request),
                alert=refusal.extra.get("tls_alert"),
                origin=refusal.extra.get("tls_alert_origin"),
                reason=refusal.detail,
            )
        log_event(
            "atls.refused",
            logging.WARNING,
            client=_client_host(request),
            path=request.url.path,
            session=entry.public_id if entry else None,
            problem=refusal.slug,
            detail=refusal.detail,
            session_ended=refused.session_ended,
        )
        return refusal_response(refusal)

    def _established(self, outcome: Reply | ApplicationRequest) -> None:
        entry = outcome.entry
        assert entry is not None  # only a DTLS HelloVerifyRequest names no session
        self._count("handshakes")
        if self.on_established is not None:
            self.on_established(outcome)
        info = entry.info
        assert info is not None
        log_event(
            "atls.established",
            session=entry.public_id,
            client=entry.client,
            mode=entry.mode.value,
            version=info.version,
            cipher=info.cipher,
            peer=entry.identity,
            exporter_fingerprint=entry.keys.fingerprint if entry.keys else None,
        )

    async def _serve(self, request: Request, outcome: ApplicationRequest) -> InnerResponse:
        """Decode and dispatch one inner request; a bad one gets an inner 400."""
        entry = outcome.entry
        try:
            inner = decode_request(outcome.data)
        except InnerHTTPError as exc:
            log_event(
                "atls.inner_malformed", logging.WARNING, session=entry.public_id, error=str(exc)
            )
            return InnerResponse(
                400,
                [("content-type", PROBLEM_MEDIA_TYPE)],
                Problem(400, "inner-http-malformed", "malformed inner request", str(exc)).to_json(),
            )
        context = ATLSContext(
            session_id=entry.public_id,
            mode=outcome.mode.value,
            info=outcome.info,
            exporter_fingerprint=entry.keys.fingerprint if entry.keys else None,
            keys=entry.keys,
            identity=entry.identity,
            handle=entry.token,
        )
        client = request.client
        response = await dispatch(
            self.api, inner, context, (client.host, client.port) if client else None
        )
        self._count(f"inner:{outcome.mode.value}")
        log_event(
            "atls.request",
            session=entry.public_id,
            mode=outcome.mode.value,
            method=inner.method,
            target=inner.target,
            status=response.status,
        )
        return response


def _client_host(request: Request) -> str:
    return request.client.host if request.client else "unknown"
