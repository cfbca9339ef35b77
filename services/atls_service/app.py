"""The ASGI application: ATLS endpoint + the service's own API."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from atls.errors import Reason, Refusal
from atls.http_binding import LEGACY_PATH, WELL_KNOWN_PATH
from atls.keys import ExporterSettings
from atls.pki import Identity, PKIDirectory
from atls.server import ServerDriver
from atls.session import Role, TLSConfig, TLSVersion
from atls.store import SessionLimits, SessionStore

from .api import api_routes
from .bootstrap import BootstrapAPI, Registry
from .endpoint import ATLSEndpoint, EstablishedHook, refusal_response
from .limits import BodyTimeout, ConnectionLimits, release_memory
from .logs import log_event
from .oscore import OSCOREContexts, OSCOREService

SWEEP_INTERVAL = 5.0


@dataclass(frozen=True)
class ServiceSettings:
    """What the service needs: its identity, whom it trusts, and its limits."""

    identity: Identity
    client_anchors: bytes | None
    require_client_certificate: bool = True
    limits: SessionLimits = field(default_factory=SessionLimits)
    exporter: ExporterSettings = field(default_factory=ExporterSettings)
    min_version: TLSVersion = TLSVersion.TLS1_2
    max_version: TLSVersion = TLSVersion.TLS1_3
    voucher_signer: Identity | None = None
    operator_token: str | None = None
    voucher_lifetime: datetime.timedelta = datetime.timedelta(minutes=10)
    keylog: Callable[[bytes], None] | None = None  # SSLKEYLOGFILE writer (open_keylog)
    # TLSConfig fields beyond the above: suites, groups, ALPN (atls.cli_options)
    tls_options: dict[str, Any] = field(default_factory=dict)
    connection: ConnectionLimits = field(default_factory=ConnectionLimits)

    @classmethod
    def from_pki(cls, root: Path | str, **kwargs: Any) -> ServiceSettings:
        """Service certificate from ``root``; devices must chain to its vendor CA."""
        pki = PKIDirectory(Path(root))
        signer = pki.voucher_signer() if pki.voucher_signer_cert.exists() else None
        return cls(
            identity=pki.service(),
            client_anchors=pki.vendor_ca().cert_pem,
            **{"voucher_signer": signer, **kwargs},
        )

    def tls_config(self) -> TLSConfig:
        return TLSConfig(
            Role.SERVER,
            identity=self.identity,
            trust_anchors=self.client_anchors,
            require_client_certificate=self.require_client_certificate,
            min_version=self.min_version,
            max_version=self.max_version,
            keylog=self.keylog,
            **self.tls_options,
        )


async def _http_problem(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 as problem documents, like every other refusal."""
    assert isinstance(exc, HTTPException)
    reason = {404: Reason.NOT_FOUND, 405: Reason.METHOD_NOT_ALLOWED}.get(
        exc.status_code, Reason.HTTP_ERROR
    )
    detail = f"{request.method} {request.url.path}: {exc.detail}"
    if exc.status_code == 405 and request.url.path in (WELL_KNOWN_PATH, LEGACY_PATH):
        detail += "; ATLS messages are POSTed"
    response = refusal_response(
        Refusal(reason, detail, title=str(exc.detail), status=exc.status_code)
    )
    response.headers.update(dict(exc.headers or {}))
    return response


async def _refusal(request: Request, exc: Exception) -> Response:
    """A refusal a route raised (body too large, request timeout) as its problem document."""
    assert isinstance(exc, Refusal)
    return refusal_response(exc)


EXCEPTION_HANDLERS = {HTTPException: _http_problem, Refusal: _refusal}


def create_app(
    settings: ServiceSettings, on_established: EstablishedHook | None = None
) -> Starlette:
    """The service; ``on_established`` is told of every session whose handshake completes."""
    store = SessionStore(settings.limits)

    def health() -> dict[str, Any]:
        # `endpoint` is bound below, before the first request can call this.
        return {"store": store.stats(), "counters": dict(endpoint.counters)}

    registry = Registry()
    bootstrap = BootstrapAPI(
        registry, settings.voucher_signer, settings.operator_token, settings.voucher_lifetime
    )
    oscore = OSCOREService(
        settings.exporter,
        OSCOREContexts(settings.limits.max_sessions, settings.limits.idle_ttl),
        registry.record,
        store,
    )
    own_routes = [*api_routes(health), *bootstrap.routes(), *oscore.inner_routes()]
    api = Starlette(routes=own_routes, exception_handlers=EXCEPTION_HANDLERS)
    api.router.redirect_slashes = False
    driver = ServerDriver(settings.tls_config().build(), store, settings.exporter)
    endpoint = ATLSEndpoint(driver, api, on_established)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async def sweeper() -> None:
            while True:
                await asyncio.sleep(SWEEP_INTERVAL)
                gone = store.sweep()
                release_memory()
                if gone:
                    log_event("atls.expired", sessions=gone)

        task = asyncio.create_task(sweeper())
        log_event("service.started", limits=settings.limits.__dict__)
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            log_event("service.stopped", **health())

    routes = [
        Route(WELL_KNOWN_PATH, endpoint.handle, methods=["POST"]),
        Route(LEGACY_PATH, endpoint.handle, methods=["POST"]),
        *oscore.routes(),
        *own_routes,
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[Middleware(BodyTimeout, timeout=settings.connection.body_timeout)],
    )
    # no redirect to "/path/" (or away from it): an unknown path is a 404 problem document
    app.router.redirect_slashes = False
    app.state.store = store
    app.state.endpoint = endpoint
    app.state.registry = registry
    app.state.oscore = oscore
    return app
