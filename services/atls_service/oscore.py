"""OSCORE after a key-export ATLS session: the ID exchange and the OSCORE route.

Where OSCORE terminates: here, in the service, reached over HTTP. A device's
OSCORE request travels CoAP to the gateway, which copies it unread into
``POST /.well-known/atls-oscore`` (RFC 8613 section 11: the OSCORE option in
the ``OSCORE`` header, base64url; the ciphertext as an ``application/oscore``
body), through the middlebox like every ATLS flight. Why not a CoAP endpoint
on the service: the gateway would then need a CoAP forward proxy *and* the
UDP leg would bypass the HTTP middlebox; this way the gateway stays a blind
copier of bytes, the middlebox sees every OSCORE message,
and the service keeps one network surface.

- ``POST /oscore/ids`` (inside an ATLS session, key-export mode only): the
  device sends ``{"recipient_id": hex}``, the ID it receives with; the
  service allocates its own Recipient ID (unique among its contexts: it is
  how an incoming request finds its context) and answers
  ``{"recipient_id": hex, "aead": ..., "label": ...}``. Both ends derive the
  context (``atls.oscore.ATLSSecurityContext``) from the session's export.
- ``POST /.well-known/atls-oscore``: unprotects with aiocoap's OSCORE code
  (replay window 32), renders the inner CoAP request with the service's CoAP
  resources, protects the answer. Refusals are problem documents whose
  reason the gateway maps to CoAP codes (a replay is 4.01).
- A context lives as long as the ATLS session it was keyed from: each OSCORE
  message looks the session up (keeping it alive while readings flow); once
  the session is closed, evicted or expired, the context is dropped (4.04).
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

import aiocoap
import aiocoap.resource as coap_resource
from aiocoap import oscore as aiocoap_oscore
from aiocoap.message import Direction
from aiocoap.numbers.codes import Code
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from atls.errors import Reason, Refusal
from atls.keys import ExporterSettings
from atls.oscore import MAX_ID_LENGTH, ATLSSecurityContext, OSCOREContextError
from atls.store import SessionStore

from .dispatch import atls_context
from .endpoint import refusal_response
from .logs import log_event

OSCORE_PATH = "/.well-known/atls-oscore"
IDS_PATH = "/oscore/ids"
OSCORE_MEDIA_TYPE = "application/oscore"
MAX_OSCORE_BYTES = 2048
MAX_READINGS = 1024


@dataclass
class _Context:
    context: ATLSSecurityContext
    session: str  # the ATLS session's public id
    handle: str | None  # the ATLS session's handle: the context lives as long as the session
    identity: str | None
    last_used: float


class OSCOREContexts:
    """The service's OSCORE contexts by Recipient ID, bounded in count and idle time."""

    def __init__(self, max_contexts: int = 4096, idle_ttl: float = 300.0) -> None:
        self.max_contexts = max_contexts
        self.idle_ttl = idle_ttl
        self._by_kid: OrderedDict[bytes, _Context] = OrderedDict()
        self._by_session: dict[str, bytes] = {}

    def __len__(self) -> int:
        return len(self._by_kid)

    def _expire(self, now: float) -> None:
        while self._by_kid:
            kid, oldest = next(iter(self._by_kid.items()))
            if now - oldest.last_used < self.idle_ttl and len(self._by_kid) <= self.max_contexts:
                break
            self._drop(kid)

    def _drop(self, kid: bytes) -> None:
        entry = self._by_kid.pop(kid, None)
        if entry is not None and self._by_session.get(entry.session) == kid:
            del self._by_session[entry.session]

    def drop_session(self, session: str) -> None:
        kid = self._by_session.get(session)
        if kid is not None:
            self._drop(kid)

    def new_recipient_id(self) -> bytes:
        for length in (1, 2, 3, 4):
            for _ in range(8):
                kid = secrets.token_bytes(length)
                if kid not in self._by_kid:
                    return kid
        raise Refusal(Reason.HANDSHAKE_CAPACITY, "no free OSCORE Recipient ID", retry_after=1)

    def add(self, kid: bytes, entry: _Context) -> None:
        old = self._by_session.get(entry.session)
        if old is not None:  # a session has one context: a new exchange replaces it
            self._drop(old)
        self._by_kid[kid] = entry
        self._by_session[entry.session] = kid
        self._expire(time.monotonic())

    def find(self, kid: bytes) -> _Context | None:
        now = time.monotonic()
        self._expire(now)
        entry = self._by_kid.get(kid)
        if entry is not None:
            entry.last_used = now
            self._by_kid.move_to_end(kid)
        return entry


class ReadingsResource(coap_resource.Resource):
    """``POST readings`` (inner CoAP): a device's reading, accepted only from an authenticated peer.

    aiocoap's OSCORE machinery tells a resource who the peer is
    (``request.remote.authenticated_claims``) and checks nothing itself, so
    the check is here: an unprotected or unauthenticated request gets 4.01.
    """

    def __init__(self, readings: deque[dict[str, Any]], record: Any = None) -> None:
        super().__init__()
        self.readings = readings
        self.record = record

    async def needs_blockwise_assembly(self, request: aiocoap.Message) -> bool:
        return False

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        claims = list(getattr(request.remote, "authenticated_claims", None) or [])
        if not claims:
            return aiocoap.Message(code=Code.UNAUTHORIZED, payload=b"authentication required")
        if len(request.payload) > 512:
            return aiocoap.Message(code=Code.REQUEST_ENTITY_TOO_LARGE, payload=b"512 bytes max")
        try:
            reading = json.loads(request.payload)
        except (ValueError, UnicodeDecodeError):
            return aiocoap.Message(code=Code.BAD_REQUEST, payload=b"a reading is a JSON object")
        if not isinstance(reading, dict):
            return aiocoap.Message(code=Code.BAD_REQUEST, payload=b"a reading is a JSON object")
        claimed = reading.get("device")
        if claimed is not None and claimed not in claims:
            return aiocoap.Message(
                code=Code.FORBIDDEN,
                payload=f"this session is {claims[0]}, not {claimed}".encode(),
            )
        self.readings.append({"device": claims[0], "reading": reading, "time": time.time()})
        if self.record is not None:  # the canary, when a test put one in, proves arrival
            self.record("oscore-reading", serial=claims[0], canary=reading.get("canary"))
        return aiocoap.Message(
            code=Code.CHANGED, payload=json.dumps({"stored": len(self.readings)}).encode()
        )


class OSCOREService:
    """The two routes and what they share."""

    def __init__(
        self,
        exporter: ExporterSettings,
        contexts: OSCOREContexts | None = None,
        record: Any = None,
        store: SessionStore | None = None,
    ) -> None:
        self.exporter = exporter
        self.contexts = contexts or OSCOREContexts()
        self.readings: deque[dict[str, Any]] = deque(maxlen=MAX_READINGS)
        self.resources: dict[tuple[str, ...], coap_resource.Resource] = {
            ("readings",): ReadingsResource(self.readings, record)
        }
        self.record = record  # the registry's event recorder, when there is one
        self.store = store  # the ATLS sessions: an OSCORE context ends with its session
        self.counters: dict[str, int] = {}

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

    def inner_routes(self) -> list[Route]:
        return [Route(IDS_PATH, self.exchange_ids, methods=["POST"])]

    def routes(self) -> list[Route]:
        return [Route(OSCORE_PATH, self.handle, methods=["POST"])]

    async def exchange_ids(self, request: Request) -> Response:
        ctx = atls_context(request)
        if ctx is None or ctx.keys is None or ctx.mode != "export":
            return refusal_response(
                Refusal(
                    Reason.ATLS_REQUIRED,
                    "OSCORE IDs are exchanged inside a key-export ATLS session",
                )
            )
        try:
            body = json.loads(await request.body())
            device_rid = bytes.fromhex(str(body["recipient_id"]))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            return refusal_response(
                Refusal(Reason.INVALID_JSON, 'send {"recipient_id": "<hex, 0-7 bytes>"}')
            )
        kid = self.contexts.new_recipient_id()
        if kid == device_rid:
            kid = self.contexts.new_recipient_id()
        identity = ctx.info.peer_subject if ctx.info else None
        claims = [c for c in (ctx.identity, identity) if c]
        try:
            security = ATLSSecurityContext(ctx.keys, device_rid, kid, claims=claims)
        except OSCOREContextError as exc:
            return refusal_response(Refusal(Reason.INVALID_JSON, str(exc)))
        self.contexts.add(
            kid, _Context(security, ctx.session_id, ctx.handle, ctx.identity, time.monotonic())
        )
        log_event(
            "oscore.context",
            session=ctx.session_id,
            peer=ctx.identity,
            aead=ctx.keys.aead.cose_name,
            contexts=len(self.contexts),
        )
        return JSONResponse(
            {
                "recipient_id": kid.hex(),
                "aead": ctx.keys.aead.cose_name,
                "hkdf": "SHA-256",
                "replay_window": security.recipient_replay_window._size,
                "label": self.exporter.label,
            }
        )

    async def handle(self, request: Request) -> Response:
        try:
            return await self._handle(request)
        except Refusal as refusal:
            self._count(f"refused:{refusal.slug}")
            log_event("oscore.refused", problem=refusal.slug, detail=refusal.detail)
            return refusal_response(refusal)

    async def _handle(self, request: Request) -> Response:
        header = request.headers.get("oscore")
        if header is None:
            raise Refusal(Reason.PROTECTION_FAILED, "no OSCORE header: not an OSCORE message")
        body = await request.body()
        if len(body) > MAX_OSCORE_BYTES:
            raise Refusal(
                Reason.BODY_TOO_LARGE, f"OSCORE messages here are {MAX_OSCORE_BYTES} B max"
            )
        try:
            option = base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))
        except ValueError:
            raise Refusal(Reason.PROTECTION_FAILED, "the OSCORE header is not base64url") from None
        outer = aiocoap.Message(code=Code.POST, payload=body)
        outer.opt.oscore = option
        outer.direction = Direction.INCOMING
        try:
            unprotected_bag = aiocoap_oscore.verify_start(outer)
        except (aiocoap_oscore.NotAProtectedMessage, aiocoap_oscore.DecodeError, ValueError):
            raise Refusal(Reason.PROTECTION_FAILED, "the OSCORE option does not decode") from None
        kid = unprotected_bag.get(aiocoap_oscore.COSE_KID)
        entry = self.contexts.find(kid) if isinstance(kid, bytes) else None
        if entry is None:
            raise Refusal(
                Reason.UNKNOWN_SESSION,
                "no OSCORE context has this key ID (never set up, expired or evicted): "
                "run a new ATLS handshake",
            )
        if self.store is not None and entry.handle is not None:
            try:  # the ATLS session must still exist (and OSCORE traffic keeps it alive)
                self.store.get(entry.handle)
            except Refusal as gone:
                self.contexts.drop_session(entry.session)
                raise Refusal(
                    gone.reason,
                    f"the ATLS session this OSCORE context came from has ended ({gone.detail})",
                ) from None
        security = entry.context
        try:
            inner, request_id = security.unprotect(outer)
        except aiocoap_oscore.ReplayError as exc:
            self._count("replays")
            if self.record is not None:
                self.record("oscore-replay-refused", serial=entry.identity)
            raise Refusal(
                Reason.REPLAYED, f"OSCORE replay window: {exc}", title="replayed message"
            ) from None
        except (aiocoap_oscore.ProtectionInvalid, ValueError) as exc:
            raise Refusal(Reason.PROTECTION_FAILED, f"OSCORE: {exc}") from None
        inner.remote = _Peer(security)
        response = await self._render(inner)
        response.direction = Direction.OUTGOING
        protected, _ = security.context_for_response().protect(response, request_id)
        self._count("oscore_requests")
        option_out = base64.urlsafe_b64encode(bytes(protected.opt.oscore or b"")).rstrip(b"=")
        return Response(
            protected.payload,
            media_type=OSCORE_MEDIA_TYPE,
            headers={"oscore": option_out.decode()},
        )

    async def _render(self, inner: aiocoap.Message) -> aiocoap.Message:
        target = self.resources.get(tuple(inner.opt.uri_path))
        if target is None:
            return aiocoap.Message(code=Code.NOT_FOUND)
        try:
            return await target.render(inner)
        except aiocoap.error.RenderableError as exc:
            return exc.to_message()


class _Peer:
    """The remote an inner request carries: who the OSCORE context says the peer is."""

    def __init__(self, security: ATLSSecurityContext) -> None:
        self.security_context = security

    @property
    def authenticated_claims(self) -> list[str]:
        return list(self.security_context.authenticated_claims)


__all__ = ["MAX_ID_LENGTH", "OSCOREContexts", "OSCOREService"]
