"""The CoAP gateway: ATLS flights from constrained devices, forwarded to the service over HTTP.

aiocoap has no CoAP-to-HTTP cross-proxy, so this is one, for exactly two
kinds of message:

- ``POST /.well-known/atls`` (Content-Format ``application/atls``, or its
  ``aes128gcm`` variant): the flight is reassembled if it came blockwise
  (bounded: ``atls.coap_binding.BlockAssembler``), POSTed to the service's
  HTTP binding (through the middlebox when one is configured), and the
  service's answer goes back as ``2.04 Changed`` (blockwise when it does not
  fit a datagram). The device's ``ATLS-Session`` option is mapped to the
  service's cookie: the gateway hands out its own short handle (8 bytes
  instead of the cookie's 24 on every datagram) and remembers the cookie,
  bounded in count and age.
- any request carrying an OSCORE option, to any path: forwarded as is to the
  service's OSCORE route (RFC 8613 section 11: the option in the ``OSCORE``
  header, base64url; the ciphertext as an ``application/oscore`` body), and
  the protected answer returned as it came. OSCORE finds its context by the
  key ID, so these messages need no session handle.

The gateway never holds a key and never parses TLS: it copies bytes and
counts them. Every bad input gets a CoAP error with a diagnostic payload.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import ssl
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from http.cookiejar import CookieJar, DefaultCookiePolicy
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Any

import aiocoap
import aiocoap.resource as resource
import httpx
from aiocoap.numbers.codes import Code
from aiocoap.numbers.optionnumbers import OptionNumber
from aiocoap.optiontypes import OpaqueOption, StringOption

from atls.coap_binding import (
    MAX_SESSION_OPTION_LENGTH,
    REQUEST_ENTITY_INCOMPLETE,
    BlockAssembler,
    BlockwiseError,
    CoAPCode,
    CoAPSettings,
    ResponseBlocks,
    block_slice,
    coap_code,
    diagnostic,
    mode_of_option,
)
from atls.errors import Reason, Refusal
from atls.http_binding import (
    MEDIA_TYPE,
    MODE_HEADER,
    SESSION_COOKIE,
    WELL_KNOWN_PATH,
    Problem,
    media_type_of,
)
from atls.protection import CONTENT_CODING
from atls.server import Coding

log = logging.getLogger("atls.gateway")

OSCORE_MEDIA_TYPE = "application/oscore"
OSCORE_HEADER = "oscore"
SERVICE_OSCORE_PATH = "/.well-known/atls-oscore"


def _harden_aiocoap() -> None:
    """Make a non-UTF-8 string option an unparsable message, as any other malformed datagram.

    aiocoap 0.4.17 lets ``UnicodeDecodeError`` escape ``Message.decode`` for a
    string option (Uri-Path, ...) that is not UTF-8; its UDP transport drops
    ``UnparsableMessage`` quietly but lets anything else out of the socket
    callback (a traceback per hostile datagram). Found by the flood test.
    """
    original = StringOption.decode
    if getattr(original, "_atls_hardened", False):
        return

    def decode(self: StringOption, rawdata: bytes) -> None:
        try:
            original(self, rawdata)
        except UnicodeDecodeError:
            raise aiocoap.error.UnparsableMessage("string option is not UTF-8") from None

    decode._atls_hardened = True  # type: ignore[attr-defined]
    StringOption.decode = decode  # type: ignore[method-assign]


_harden_aiocoap()


def log_event(event: str, level: int = logging.INFO, **fields: Any) -> None:
    log.log(level, json.dumps({"event": event, "t": round(time.time(), 3), **fields}))


@dataclass(frozen=True)
class GatewayLimits:
    max_sessions: int = 1024  # device sessions the gateway maps to cookies
    session_ttl: float = 300.0  # idle seconds before a mapping is forgotten
    max_transfers: int = 64  # Block1 transfers in progress, all devices
    max_flight_bytes: int = 16384  # one reassembled flight
    transfer_ttl: float = 30.0
    max_responses: int = 64  # answers being read blockwise
    max_forwards: int = 32  # HTTP requests to the service in flight
    timeout: float = 10.0

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if value <= 0:
                raise ValueError(f"{name} must be positive")

    @property
    def memory_bound(self) -> int:
        """Bytes of payload the gateway may buffer at most (transfers + answers)."""
        return (self.max_transfers + self.max_responses) * self.max_flight_bytes


@dataclass(frozen=True)
class GatewaySettings:
    service_url: str  # e.g. https://atls-service:8443
    proxy: str | None = None  # the middlebox, as an HTTP proxy
    network_tls_verify: bool | str | Path = True
    coap: CoAPSettings = field(default_factory=CoAPSettings)
    limits: GatewayLimits = field(default_factory=GatewayLimits)

    def httpx_client(self) -> httpx.AsyncClient:
        verify: bool | ssl.SSLContext
        if isinstance(self.network_tls_verify, str | Path):
            verify = ssl.create_default_context(cafile=str(self.network_tls_verify))
        else:
            verify = self.network_tls_verify
        return httpx.AsyncClient(
            base_url=self.service_url,
            proxy=self.proxy,
            verify=verify,
            timeout=self.limits.timeout,
            trust_env=False,
            # cookies are per device session and set by hand: no shared jar
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
            limits=httpx.Limits(max_connections=self.limits.max_forwards),
        )


@dataclass
class _DeviceSession:
    cookie: str
    device: str  # the device's address when the session started (for logs)
    last_used: float
    flights: int = 0


class SessionMap:
    """Gateway handle -> service cookie, LRU, bounded in count and idle time."""

    def __init__(self, max_sessions: int, ttl: float) -> None:
        self.max_sessions = max_sessions
        self.ttl = ttl
        self._sessions: OrderedDict[bytes, _DeviceSession] = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def _expire(self, now: float) -> None:
        while self._sessions:
            handle, oldest = next(iter(self._sessions.items()))
            if now - oldest.last_used < self.ttl:
                break
            del self._sessions[handle]

    def open(self, cookie: str, device: str) -> bytes:
        now = time.monotonic()
        self._expire(now)
        while len(self._sessions) >= self.max_sessions:
            self._sessions.popitem(last=False)
            self.evicted += 1
        handle = secrets.token_bytes(MAX_SESSION_OPTION_LENGTH)
        self._sessions[handle] = _DeviceSession(cookie, device, now)
        return handle

    def get(self, handle: bytes) -> _DeviceSession | None:
        now = time.monotonic()
        self._expire(now)
        found = self._sessions.get(handle)
        if found is not None:
            found.last_used = now
            self._sessions.move_to_end(handle)
        return found

    def close(self, handle: bytes) -> None:
        self._sessions.pop(handle, None)


def _code(code: CoAPCode) -> Code:
    return Code((code[0] << 5) | code[1])


def error_message(refusal: Refusal) -> aiocoap.Message:
    """A refusal as CoAP: its code and a diagnostic payload saying what was wrong."""
    message = aiocoap.Message(code=_code(coap_code(refusal)), payload=diagnostic(refusal))
    if refusal.reason is Reason.FLIGHT_TOO_LARGE and "max_bytes" in refusal.extra:
        message.opt.size1 = int(refusal.extra["max_bytes"])
    if refusal.retry_after:
        message.opt.max_age = int(refusal.retry_after)
    return message


class _Forwarding:
    """What both resources share: the HTTP client and the bound on forwards in flight."""

    def __init__(self, settings: GatewaySettings, http: httpx.AsyncClient) -> None:
        self.settings = settings
        self.http = http
        self.in_flight = 0
        self.counters: dict[str, int] = {}

    def count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n

    def refused(self, request: aiocoap.Message, refusal: Refusal) -> aiocoap.Message:
        """Count and log a refusal, and answer it as CoAP (code and diagnostic payload)."""
        self.count(f"refused:{refusal.slug}")
        log_event(
            "gateway.refused",
            logging.WARNING,
            device=_device(request),
            problem=refusal.slug,
            detail=refusal.detail,
        )
        return error_message(refusal)

    async def post(self, path: str, headers: dict[str, str], body: bytes) -> httpx.Response:
        if self.in_flight >= self.settings.limits.max_forwards:
            raise Refusal(
                Reason.HANDSHAKE_CAPACITY,
                f"the gateway already forwards {self.in_flight} messages; try again shortly",
                title="gateway busy",
                retry_after=1,
            )
        self.in_flight += 1
        try:
            return await self.http.post(path, headers=headers, content=body)
        except httpx.HTTPError as exc:
            raise Refusal(
                Reason.UNEXPECTED_RESPONSE,
                f"the service could not be reached: {type(exc).__name__}: {exc}",
                title="service unreachable",
            ) from None
        finally:
            self.in_flight -= 1


def _problem_refusal(response: httpx.Response) -> Refusal:
    problem = Problem.from_response(
        response.status_code, response.headers.get("content-type"), response.content
    )
    refusal = problem.to_refusal()
    refusal.status = None  # the CoAP code comes from the reason, not the HTTP status
    return refusal


class ATLSResource(resource.Resource):
    """``POST /.well-known/atls``: one flight in, the service's next flight out."""

    def __init__(self, forwarding: _Forwarding) -> None:
        super().__init__()
        self.fw = forwarding
        limits = forwarding.settings.limits
        self.coap = forwarding.settings.coap
        self.sessions = SessionMap(limits.max_sessions, limits.session_ttl)
        self.blocks = BlockAssembler(
            max_transfers=limits.max_transfers,
            max_bytes=limits.max_flight_bytes,
            ttl=limits.transfer_ttl,
        )
        self.answers = ResponseBlocks(max_entries=limits.max_responses, ttl=limits.transfer_ttl)

    async def needs_blockwise_assembly(self, request: aiocoap.Message) -> bool:
        return False  # ours is bounded; aiocoap's spool is not

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        try:
            return await self._post(request)
        except Refusal as refusal:
            return self.fw.refused(request, refusal)

    async def _post(self, request: aiocoap.Message) -> aiocoap.Message:
        handle = _single_option(request, self.coap.session_option)
        key = (request.remote.blockwise_key, handle)
        block2 = request.opt.block2
        if block2 is not None and block2.block_number > 0:
            return self._answer_block(key, block2.block_number, block2.size_exponent)
        coding = self.coap.coding_of(request.opt.content_format)
        if coding is None:
            raise Refusal(
                Reason.NOT_ATLS,
                f"Content-Format must be {self.coap.content_format} (application/atls) or "
                f"{self.coap.protected_content_format} (application/atls, aes128gcm), "
                f"got {request.opt.content_format}",
                title="not an ATLS message",
            )
        body = self._assemble(key, request)
        if body is None:  # more blocks to come
            reply = aiocoap.Message(code=Code.CONTINUE)
            reply.opt.block1 = request.opt.block1
            return reply
        session = None
        if handle is not None:
            session = self.sessions.get(handle)
            if session is None:
                raise Refusal(
                    Reason.UNKNOWN_SESSION,
                    "the gateway does not know this ATLS-Session (expired or evicted): "
                    "start a new handshake",
                    title="unknown session",
                )
        headers = {"content-type": MEDIA_TYPE, "accept": MEDIA_TYPE}
        if coding is Coding.PROTECTED:
            headers["content-encoding"] = CONTENT_CODING
        mode_value = request.opt.get_option(OptionNumber(self.coap.mode_option))
        if mode_value:
            mode = mode_of_option(int.from_bytes(mode_value[0].value or b"\0", "big"))
            headers[MODE_HEADER] = mode.value
        if session is not None:
            headers["cookie"] = f"{SESSION_COOKIE}={session.cookie}"
            session.flights += 1
        self.fw.count("flights_up")
        self.fw.count("bytes_up", len(body))
        response = await self.fw.post(WELL_KNOWN_PATH, headers, body)
        if response.status_code != 200 or media_type_of(
            response.headers.get("content-type")
        ) not in (MEDIA_TYPE,):
            if response.status_code in (404, 410) and handle is not None:
                self.sessions.close(handle)
            raise _problem_refusal(response)
        answer = aiocoap.Message(code=Code.CHANGED)
        out_coding = (
            Coding.PROTECTED
            if response.headers.get("content-encoding", "").lower() == CONTENT_CODING
            else Coding.TLS
        )
        answer.opt.content_format = self.coap.format_of(out_coding)
        new_cookie = _session_cookie(response)
        if new_cookie is not None:
            # follow-up Block2 requests repeat this request's options (no handle
            # yet), so the answer stays under this request's key
            handle = self.sessions.open(new_cookie, _device(request))
            log_event("gateway.session", device=_device(request), sessions=len(self.sessions))
        if handle is not None:
            answer.opt.add_option(OpaqueOption(OptionNumber(self.coap.session_option), handle))
        self.fw.count("flights_down")
        self.fw.count("bytes_down", len(response.content))
        log_event(
            "gateway.flight",
            device=_device(request),
            up=len(body),
            down=len(response.content),
            coding=coding.value,
        )
        return self._first_block(request, key, answer, response.content)

    def _assemble(self, key: object, request: aiocoap.Message) -> bytes | None:
        block1 = request.opt.block1
        if block1 is None:
            if len(request.payload) > self.fw.settings.limits.max_flight_bytes:
                limit = self.fw.settings.limits.max_flight_bytes
                raise Refusal(
                    Reason.FLIGHT_TOO_LARGE,
                    f"the flight has {len(request.payload)} bytes; the gateway takes {limit}",
                    extra={"max_bytes": limit},
                )
            return request.payload
        try:
            return self.blocks.feed(
                key, block1.block_number, block1.more, block1.size, request.payload
            )
        except BlockwiseError as exc:
            raise exc.refusal from None

    def _first_block(
        self, request: aiocoap.Message, key: object, answer: aiocoap.Message, body: bytes
    ) -> aiocoap.Message:
        szx = min(request.remote.maximum_block_size_exp, 6)
        if request.opt.block2 is not None:
            szx = min(szx, request.opt.block2.size_exponent)
        if request.opt.block1 is not None:
            answer.opt.block1 = request.opt.block1
        if len(body) <= min(request.remote.maximum_payload_size, 1 << (szx + 4)):
            answer.payload = body
            return answer
        self.answers.put(key, (answer, body))
        chunk, more = block_slice(body, 0, szx)
        answer.payload = chunk
        answer.opt.block2 = (0, more, szx)
        answer.opt.size2 = len(body)
        return answer

    def _answer_block(self, key: object, number: int, szx: int) -> aiocoap.Message:
        found = self.answers.get(key)
        if found is None:
            raise Refusal(
                Reason.INCOMPLETE_FLIGHT,
                f"block {number} of an answer the gateway no longer holds: send the flight again",
                title="Request Entity Incomplete",
                extra={"coap_code": REQUEST_ENTITY_INCOMPLETE},
            )
        template, body = found
        chunk, more = block_slice(body, number, szx)
        if not chunk:
            raise Refusal(Reason.INCOMPLETE_FLIGHT, f"block {number} is past the answer's end")
        answer = aiocoap.Message(code=Code.CHANGED, payload=chunk)
        answer.opt.content_format = template.opt.content_format
        for option in template.opt.get_option(OptionNumber(self.coap.session_option)):
            answer.opt.add_option(option)
        answer.opt.block2 = (number, more, szx)
        if not more:
            self.answers.drop(key)
        return answer


class OSCOREResource(resource.Resource):
    """Any request with an OSCORE option: forwarded opaquely to the service."""

    def __init__(self, forwarding: _Forwarding) -> None:
        super().__init__()
        self.fw = forwarding

    async def needs_blockwise_assembly(self, request: aiocoap.Message) -> bool:
        return False  # readings fit a datagram; outer blockwise is not supported

    async def render(self, request: aiocoap.Message) -> aiocoap.Message:
        try:
            return await self._forward(request)
        except Refusal as refusal:
            return self.fw.refused(request, refusal)

    async def _forward(self, request: aiocoap.Message) -> aiocoap.Message:
        option = request.opt.oscore
        if option is None:
            raise Refusal(
                Reason.NOT_FOUND,
                "only /.well-known/atls and OSCORE-protected requests are served here",
                title="not found",
            )
        if request.code not in (Code.POST, Code.FETCH):
            raise Refusal(
                Reason.METHOD_NOT_ALLOWED,
                "an OSCORE request's outer code is POST or FETCH",
            )
        if request.opt.block1 is not None or len(request.payload) > 1024:
            raise Refusal(
                Reason.FLIGHT_TOO_LARGE,
                "OSCORE messages through this gateway fit one datagram (1024 bytes)",
                extra={"max_bytes": 1024},
            )
        headers = {
            "content-type": OSCORE_MEDIA_TYPE,
            OSCORE_HEADER: base64.urlsafe_b64encode(bytes(option)).rstrip(b"=").decode(),
        }
        self.fw.count("oscore_up")
        response = await self.fw.post(SERVICE_OSCORE_PATH, headers, request.payload)
        log_event(
            "gateway.oscore",
            device=_device(request),
            up=len(request.payload),
            down=len(response.content),
            status=response.status_code,
        )
        if response.status_code != 200:
            raise _problem_refusal(response)
        answer = aiocoap.Message(code=Code.CHANGED, payload=response.content)
        value = response.headers.get(OSCORE_HEADER, "")
        try:
            answer.opt.oscore = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except ValueError:
            raise Refusal(
                Reason.UNEXPECTED_RESPONSE, "the service's OSCORE header is not base64url"
            ) from None
        return answer


def _single_option(request: aiocoap.Message, number: int) -> bytes | None:
    found = request.opt.get_option(OptionNumber(number))
    if not found:
        return None
    value = found[0].value
    if len(found) > 1 or not isinstance(value, bytes) or not 1 <= len(value) <= 8:
        raise Refusal(
            Reason.UNKNOWN_SESSION,
            "the ATLS-Session option must appear once, with 1 to 8 bytes",
            title="bad ATLS-Session option",
        )
    return value


def _session_cookie(response: httpx.Response) -> str | None:
    for header in response.headers.get_list("set-cookie"):
        try:
            jar = SimpleCookie(header)
        except CookieError:
            continue
        if SESSION_COOKIE in jar:
            return jar[SESSION_COOKIE].value
    return None


def _device(request: aiocoap.Message) -> str:
    try:
        return str(request.remote.hostinfo)
    except Exception:  # noqa: BLE001 - an address we cannot print is still a device
        return "unknown"


@dataclass
class Gateway:
    """A running gateway: the CoAP server context and what it keeps."""

    context: aiocoap.Context
    atls: ATLSResource
    oscore: OSCOREResource
    http: httpx.AsyncClient

    def stats(self) -> dict[str, Any]:
        return {
            "sessions": len(self.atls.sessions),
            "transfers": len(self.atls.blocks),
            "buffered_bytes": self.atls.blocks.buffered_bytes,
            "answers": len(self.atls.answers),
            "evicted_transfers": self.atls.blocks.evicted,
            "evicted_sessions": self.atls.sessions.evicted,
            "counters": dict(self.atls.fw.counters),
        }

    async def shutdown(self) -> None:
        await self.context.shutdown()
        await self.http.aclose()


def build_site(settings: GatewaySettings, http: httpx.AsyncClient) -> tuple[resource.Site, Any]:
    forwarding = _Forwarding(settings, http)
    atls = ATLSResource(forwarding)
    oscore = OSCOREResource(forwarding)
    site = resource.Site()
    site.add_resource([".well-known", "atls"], atls)
    site.add_resource([], oscore)
    return site, (atls, oscore)


async def start_gateway(settings: GatewaySettings, host: str, port: int) -> Gateway:
    http = settings.httpx_client()
    site, (atls, oscore) = build_site(settings, http)
    context = await aiocoap.Context.create_server_context(site, bind=(host, port))
    log_event(
        "gateway.started",
        listen=f"{host}:{port}",
        service=settings.service_url,
        proxy=settings.proxy,
        memory_bound=settings.limits.memory_bound,
    )
    return Gateway(context, atls, oscore, http)


async def serve_forever(gateway: Gateway, stop: asyncio.Event) -> None:
    try:
        await stop.wait()
    finally:
        log_event("gateway.stopped", **gateway.stats())
        await gateway.shutdown()
