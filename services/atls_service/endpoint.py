"""The ATLS endpoint: ``POST /.well-known/atls`` (and draft-00 ``/atls``).

Each POST carries one flight. Before the handshake completes it is fed to the
session's TLS; afterwards it is either TLS application data (records mode) or
an ``aes128gcm`` body keyed from the exporter (export mode, chosen by the
client with ``Content-Encoding``). The inner bytes are one HTTP/1.1 request,
dispatched to the service's own API. Every refusal is a problem document.
"""

from __future__ import annotations

import logging

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp

from atls.http_binding import (
    ATLS_MEDIA_TYPES,
    LEGACY_MEDIA_TYPE,
    LEGACY_PATH,
    MEDIA_TYPE,
    PROBLEM_MEDIA_TYPE,
    SESSION_COOKIE,
    Mode,
    Problem,
    media_type_of,
    tls_alert_problem,
)
from atls.inner_http import (
    InnerHTTPError,
    InnerResponse,
    decode_request,
    encode_response,
)
from atls.keys import ExporterSettings, UnsupportedSuiteError, export_keys
from atls.protection import CONTENT_CODING, ProtectionError, ReplayError, ServerProtector
from atls.session import (
    ApplicationData,
    ATLSSession,
    CloseNotify,
    IncompleteFlightError,
    NotTLSError,
    TLSAlertError,
    TLSContext,
)

from .dispatch import ATLSContext, dispatch
from .logs import log_event
from .store import SessionEntry, SessionStore, StoreError


class _BodyTooLarge(Exception):
    pass


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> Response:
    return Response(
        problem.to_json(),
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _BodyTooLarge(int(declared))
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _BodyTooLarge(len(body))
    return bytes(body)


class ATLSEndpoint:
    """Starlette handler for the ATLS paths; owns the session store."""

    def __init__(
        self,
        tls: TLSContext,
        store: SessionStore,
        api: ASGIApp,
        exporter: ExporterSettings | None = None,
    ) -> None:
        self.tls = tls
        self.store = store
        self.api = api
        self.exporter = exporter or ExporterSettings()
        self.counters: dict[str, int] = {}

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

    def _refuse(
        self,
        problem: Problem,
        request: Request,
        entry: SessionEntry | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        self._count(f"refused:{problem.slug}")
        log_event(
            "atls.refused",
            logging.WARNING,
            client=_client_host(request),
            path=request.url.path,
            session=entry.public_id if entry else None,
            status=problem.status,
            problem=problem.slug,
            detail=problem.detail,
        )
        return problem_response(problem, headers)

    async def handle(self, request: Request) -> Response:
        media_type = media_type_of(request.headers.get("content-type"))
        if media_type not in ATLS_MEDIA_TYPES:
            return self._refuse(
                Problem(
                    415,
                    "unsupported-media-type",
                    "not an ATLS message",
                    f"Content-Type must be {MEDIA_TYPE} (or {LEGACY_MEDIA_TYPE}), "
                    f"got {media_type or 'none'!r}",
                ),
                request,
            )
        limit = self.store.limits.max_flight_bytes
        try:
            body = await _read_body(request, limit)
        except _BodyTooLarge as exc:
            return self._refuse(
                Problem(
                    413,
                    "flight-too-large",
                    "ATLS message too large",
                    f"the body has at least {exc.args[0]} bytes; this service accepts {limit}",
                    {"max_bytes": limit},
                ),
                request,
            )
        except ClientDisconnect:
            return Response(status_code=400)
        coding = (request.headers.get("content-encoding") or "").strip().lower()
        if coding and coding != CONTENT_CODING:
            return self._refuse(
                Problem(
                    415,
                    "unsupported-content-coding",
                    "unsupported content coding",
                    f"ATLS accepts no content coding or {CONTENT_CODING}, got {coding!r}",
                ),
                request,
            )
        token = request.cookies.get(SESSION_COOKIE)
        try:
            entry = self._open(request) if token is None else self.store.get(token)
        except StoreError as exc:
            headers = {"retry-after": str(exc.retry_after)} if exc.retry_after else None
            return self._refuse(exc.problem, request, headers=headers)
        async with entry.lock:
            response = await self._step(request, entry, body, coding)
        if token is None and entry.token in self.store:
            response.set_cookie(
                SESSION_COOKIE, entry.token, path=request.url.path, httponly=True, samesite="strict"
            )
        return response

    def _open(self, request: Request) -> SessionEntry:
        return self.store.open(ATLSSession(self.tls), _client_host(request))

    def _atls_response(self, request: Request, body: bytes, coding: str = "") -> Response:
        media_type = LEGACY_MEDIA_TYPE if request.url.path == LEGACY_PATH else MEDIA_TYPE
        headers = {"content-encoding": coding} if coding else None
        return Response(body, media_type=media_type, headers=headers)

    async def _step(
        self, request: Request, entry: SessionEntry, body: bytes, coding: str
    ) -> Response:
        entry.flights += 1
        try:
            if not entry.established:
                if coding:
                    raise _Refusal(
                        Problem(
                            409,
                            "handshake-not-finished",
                            "ATLS handshake not finished",
                            "a protected (aes128gcm) message arrived before the handshake ended",
                        )
                    )
                return await self._handshake(request, entry, body)
            if coding:
                return await self._export_request(request, entry, body)
            return await self._records_request(request, entry, body)
        except _Refusal as exc:
            return self._refuse(exc.problem, request, entry)
        except TLSAlertError as exc:
            self.store.remove(entry, "tls failure")
            log_event(
                "atls.tls_failure",
                logging.WARNING,
                session=entry.public_id,
                client=entry.client,
                alert=exc.alert,
                origin=exc.origin,
                reason=exc.reason,
            )
            return self._refuse(tls_alert_problem(exc), request, entry)
        except NotTLSError as exc:
            if not entry.established and entry.flights == 1:
                self.store.remove(entry, "not tls")
            return self._refuse(
                Problem(400, "not-tls", "body is not TLS", str(exc)), request, entry
            )
        except IncompleteFlightError as exc:
            if not entry.established:
                self.store.remove(entry, "incomplete flight")
            return self._refuse(
                Problem(400, "incomplete-flight", "incomplete TLS flight", str(exc)),
                request,
                entry,
            )

    async def _handshake(self, request: Request, entry: SessionEntry, body: bytes) -> Response:
        events = entry.session.receive_flight(body)
        out = entry.session.data_to_send()
        if entry.session.handshake_complete:
            self._established(entry)
            data = b"".join(e.data for e in events if isinstance(e, ApplicationData))
            if data:  # TLS 1.3 lets a client send its first request with Finished
                out += await self._records_reply(request, entry, data)
        return self._atls_response(request, out)

    def _established(self, entry: SessionEntry) -> None:
        self.store.promote(entry)
        info = entry.session.info
        try:
            entry.keys = export_keys(entry.session, self.exporter)
            entry.protector = ServerProtector(entry.keys)
        except UnsupportedSuiteError:
            entry.keys = None
        self._count("handshakes")
        log_event(
            "atls.established",
            session=entry.public_id,
            client=entry.client,
            version=info.version,
            cipher=info.cipher,
            peer=info.peer_subject,
            exporter_fingerprint=entry.keys.fingerprint if entry.keys else None,
        )

    async def _records_request(
        self, request: Request, entry: SessionEntry, body: bytes
    ) -> Response:
        events = entry.session.receive_flight(body)
        data = b"".join(e.data for e in events if isinstance(e, ApplicationData))
        if any(isinstance(e, CloseNotify) for e in events):
            entry.session.close()
            self.store.remove(entry, "closed by client")
            return self._atls_response(request, entry.session.data_to_send())
        out = await self._records_reply(request, entry, data) if data else b""
        return self._atls_response(request, out + entry.session.data_to_send())

    async def _records_reply(self, request: Request, entry: SessionEntry, data: bytes) -> bytes:
        response = await self._inner(request, entry, data, Mode.RECORDS)
        entry.session.send(encode_response(response))
        return entry.session.data_to_send()

    async def _export_request(self, request: Request, entry: SessionEntry, body: bytes) -> Response:
        if entry.protector is None:
            raise _Refusal(
                Problem(
                    409,
                    "export-unavailable",
                    "key export unavailable",
                    f"suite {entry.session.info.cipher} has no AEAD mapping; use records mode",
                )
            )
        try:
            seq, plaintext = entry.protector.open_request(body)
        except ReplayError as exc:
            raise _Refusal(Problem(400, "replayed-message", "replayed message", str(exc))) from None
        except ProtectionError as exc:
            raise _Refusal(
                Problem(400, "protection-failed", "protected message rejected", str(exc))
            ) from None
        response = await self._inner(request, entry, plaintext, Mode.EXPORT)
        sealed = entry.protector.seal_response(seq, encode_response(response))
        return self._atls_response(request, sealed, CONTENT_CODING)

    async def _inner(
        self, request: Request, entry: SessionEntry, data: bytes, mode: Mode
    ) -> InnerResponse:
        """Decode and dispatch one inner request; a bad one gets an inner 400."""
        entry.requests += 1
        try:
            inner = decode_request(data)
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
            mode=mode.value,
            info=entry.session.info,
            exporter_fingerprint=entry.keys.fingerprint if entry.keys else None,
        )
        client = request.client
        response = await dispatch(
            self.api, inner, context, (client.host, client.port) if client else None
        )
        self._count(f"inner:{mode.value}")
        log_event(
            "atls.request",
            session=entry.public_id,
            mode=mode.value,
            method=inner.method,
            target=inner.target,
            status=response.status,
        )
        return response


class _Refusal(Exception):
    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        super().__init__(problem.detail)


def _client_host(request: Request) -> str:
    return request.client.host if request.client else "unknown"
