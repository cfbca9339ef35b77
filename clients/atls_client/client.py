"""ATLS over HTTP for devices: sync and async clients on httpx.

The carrier (the network HTTP(S) connection that transports ATLS messages) is
configured apart from the ATLS session. Only the carrier may be left
unverified, and only explicitly (``network_tls_verify=False``): that is the
case ATLS exists for, a TLS-intercepting middlebox whose CA the device does
not know yet. The carrier client is private to this class and only ever
POSTs ATLS messages, so that choice can never leak into other requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from atls.dtls import AnySession, DTLSContext, DTLSSession
from atls.errors import Reason, Refusal
from atls.http_binding import (
    ClientBinding,
    MessageDropped,
    Mode,
    OutgoingMessage,
    RetransmitLater,
    Variant,
)
from atls.inner_http import InnerRequest, InnerResponse
from atls.keys import ExporterSettings
from atls.session import (
    ATLSError,
    ATLSSession,
    IncompleteFlightError,
    NotTLSError,
    SessionInfo,
    TLSAlertError,
    TLSConfig,
    TLSContext,
)

INNER_BASE_URL = "https://atls"
# DTLS handshake answers that arrived damaged: resent by the DTLS timer (1 s, 2 s,
# 4 s) before the attempt counts as failed (then the retry policy starts afresh)
MAX_DTLS_RETRANSMITS = 3


class CarrierError(ATLSError):
    """The network connection carrying ATLS failed (connect, proxy, network TLS, timeout)."""


class ResponseTooLargeError(ATLSError):
    """An answer over the device's size cap: refused unread (not retried)."""


# What the device reads of one answer at most: the service's flights are 64 KiB
# by default, a CA bundle a few KiB; a peer sending more attacks memory.
DEFAULT_MAX_RESPONSE_BYTES = 1 << 20


def too_large(url: str, size: int, limit: int) -> ResponseTooLargeError:
    return ResponseTooLargeError(
        f"the answer from {url} has at least {size} bytes; this device reads at most {limit}"
    )


def _declared_over(response: httpx.Response, url: str, limit: int) -> None:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(url, int(declared), limit)


@dataclass(frozen=True)
class CarrierAnswer:
    """An outer HTTP answer as read (raw bytes: no content decoding, so no gzip bomb)."""

    status_code: int
    headers: httpx.Headers
    content: bytes


# Alerts that a flight damaged in transit produces (not verdicts on identity).
INTEGRITY_ALERTS = frozenset(
    {
        "bad_record_mac",
        "decrypt_error",
        "decode_error",
        "unexpected_message",
        "illegal_parameter",
        "record_overflow",
    }
)


GATEWAY_FAILURES = frozenset({502, 503, 504})


def retryable(error: ATLSError) -> bool:
    """Whether a fresh handshake may fix this failure."""
    if isinstance(error, CarrierError | IncompleteFlightError | NotTLSError):
        return True
    if isinstance(error, TLSAlertError):
        return error.alert in INTEGRITY_ALERTS
    if isinstance(error, Refusal):
        if error.reason is Reason.UNEXPECTED_RESPONSE and error.status in GATEWAY_FAILURES:
            # not the service's problem document but a gateway's own error page: the
            # middlebox lost its connection to the service (a fleet of 1,000 met it)
            return True
        # damage in transit, and transient overload (429/503): behind a middlebox
        # every device shares one client address, so a per-client limit can
        # refuse a whole fleet for a moment
        return error.transient
    return False


@dataclass(frozen=True)
class CarrierSettings:
    """How ATLS messages reach the service over the network."""

    proxy: str | None = None
    network_tls_verify: bool | str | Path = True  # True: system CAs; path: CA bundle
    timeout: float = 10.0
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES

    def transport_kwargs(self) -> dict[str, Any]:
        """Settings of the carrier's httpx transport.

        The carrier is a bare transport, not an httpx.Client: the binding owns
        the session cookie (a client's jar once sent an old session's cookie
        with a new ClientHello) and redirects make no sense for ATLS, so the
        client's cookie and redirect handling (~11 % of a device's CPU per
        handshake) is skipped altogether.
        """
        verify: bool | ssl.SSLContext
        if isinstance(self.network_tls_verify, str | Path):
            verify = ssl.create_default_context(cafile=str(self.network_tls_verify))
        else:
            verify = self.network_tls_verify
        return {"proxy": self.proxy, "verify": verify}

    def request(self, url: str, message: OutgoingMessage) -> httpx.Request:
        return httpx.Request(
            "POST",
            url,
            headers=message.headers,
            content=message.body,
            extensions={"timeout": httpx.Timeout(self.timeout).as_dict()},
        )


def _carrier_error(exc: httpx.HTTPError, url: str, settings: CarrierSettings) -> CarrierError:
    text = str(exc) or type(exc).__name__
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return CarrierError(
            f"network TLS to {url} failed certificate validation ({text}); a TLS-intercepting "
            "middlebox may be in the path: give its CA, or allow an unverified carrier for "
            "ATLS only (network_tls_verify=False / --no-network-tls-verify)"
        )
    via = f" via proxy {settings.proxy}" if settings.proxy else ""
    return CarrierError(f"cannot reach {url}{via}: {type(exc).__name__}: {text}")


def _headers(response: httpx.Response | CarrierAnswer) -> dict[str, str]:
    return {k.lower(): v for k, v in response.headers.items()}


def _inner_from_httpx(request: httpx.Request) -> InnerRequest:
    target = request.url.raw_path.decode("ascii")
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
    return InnerRequest(request.method, target, headers, request.read())


def _httpx_from_inner(response: InnerResponse, request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        response.status, headers=response.headers, content=response.body, request=request
    )


class _ClientBase:
    def __init__(
        self,
        base_url: str,
        tls: TLSConfig | TLSContext,
        *,
        mode: Mode = Mode.EXPORT,
        variant: Variant = Variant.CURRENT,
        exporter: ExporterSettings | None = None,
        carrier: CarrierSettings | None = None,
        server_name: str | None = None,
        retries: int = 0,
        backoff: float = 0.25,
        dtls: bool = False,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        if isinstance(tls, TLSContext):
            self.context = tls  # a DTLSContext runs DTLS sessions
        else:
            self.context = DTLSContext(tls) if dtls else tls.build()
        self.mode = mode
        self.variant = variant
        self.exporter = exporter
        self.carrier = carrier or CarrierSettings()
        self.server_name = (
            server_name or self.context.config.server_name or (urlsplit(self.base_url).hostname)
        )
        self.binding: ClientBinding | None = None
        if retries < 0 or backoff < 0:
            raise ValueError("retries and backoff must not be negative")
        self.retries = retries
        self.backoff = backoff
        self.handshake_attempts = 0

    def _retry_delay(self, attempt: int, error: ATLSError) -> float | None:
        """Seconds to wait before the next attempt, or None when not to retry.

        Retried, always with a fresh, fully verified handshake: carrier failures
        and flights damaged in transit (integrity alerts, truncated or garbled
        flights). Never retried: authentication verdicts (unknown_ca,
        bad_certificate, ...) and refusals, which no retry can honestly change.
        """
        if attempt >= self.retries or not retryable(error):
            return None
        return self.backoff * (2**attempt)

    def _new_binding(self) -> ClientBinding:
        session: AnySession
        if isinstance(self.context, DTLSContext):
            session = DTLSSession(self.context, server_name=self.server_name)
        else:
            session = ATLSSession(self.context, server_name=self.server_name)
        self.binding = ClientBinding(
            session, variant=self.variant, mode=self.mode, exporter=self.exporter
        )
        return self.binding

    def _require_binding(self) -> ClientBinding:
        if self.binding is None or not self.binding.established:
            raise ATLSError("no ATLS session: call handshake() first")
        return self.binding

    @property
    def info(self) -> SessionInfo:
        return self._require_binding().session.info


class ATLSClient(_ClientBase):
    """Blocking ATLS client. ``client.http`` is an httpx.Client that speaks over ATLS."""

    def __init__(self, base_url: str, tls: TLSConfig | TLSContext, **kwargs: Any) -> None:
        super().__init__(base_url, tls, **kwargs)
        self._carrier = httpx.HTTPTransport(**self.carrier.transport_kwargs())
        self.http = httpx.Client(base_url=INNER_BASE_URL, transport=ATLSTransport(self))

    def __enter__(self) -> ATLSClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End the ATLS session on the service (so it is freed at once), then the carriers."""
        try:
            self.end_session()
        finally:
            self.http.close()
            self._carrier.close()

    def end_session(self) -> None:
        """Tell the service this session is over; a failure to say so is not an error."""
        binding = self.binding
        closing = binding.close() if binding is not None else None
        if binding is None or closing is None:
            return
        message, token = closing
        with contextlib.suppress(ATLSError):
            response = self._post(message)
            binding.closed(token, response.status_code, _headers(response), response.content)

    def _post(self, message: OutgoingMessage) -> CarrierAnswer:
        url = self.base_url + message.path
        limit = self.carrier.max_response_bytes
        try:
            response = self._carrier.handle_request(self.carrier.request(url, message))
            try:
                _declared_over(response, url, limit)
                body = bytearray()
                for chunk in response.iter_raw():
                    body += chunk
                    if len(body) > limit:
                        raise too_large(url, len(body), limit)
            finally:
                response.close()
            return CarrierAnswer(response.status_code, response.headers, bytes(body))
        except httpx.HTTPError as exc:
            raise _carrier_error(exc, url, self.carrier) from None

    def handshake(self) -> SessionInfo:
        """Run a new ATLS handshake, retrying carrier failures ``retries`` times."""
        attempt = 0
        while True:
            self.handshake_attempts = attempt + 1
            try:
                return self._handshake_once()
            except ATLSError as exc:
                delay = self._retry_delay(attempt, exc)
                if delay is None:
                    raise
                time.sleep(delay)
                attempt += 1

    def _handshake_once(self) -> SessionInfo:
        binding = self._new_binding()
        message: OutgoingMessage | None = binding.start()
        retransmits = 0
        while message is not None:
            response = self._post(message)
            try:
                message = binding.receive(
                    response.status_code, _headers(response), response.content
                )
            except RetransmitLater as wait:  # DTLS: the answer arrived damaged
                retransmits += 1
                if retransmits > MAX_DTLS_RETRANSMITS:
                    raise
                time.sleep(wait.delay)
                message = binding.retransmit()
        return binding.session.info

    def request_inner(self, request: InnerRequest) -> InnerResponse:
        binding = self._require_binding()
        for attempt in range(self.retries + 1):
            message, token = binding.wrap_request(request)
            response = self._post(message)
            try:
                return binding.unwrap_response(
                    token,
                    request.method,
                    response.status_code,
                    _headers(response),
                    response.content,
                )
            except MessageDropped:  # DTLS dropped it unserved: send it again in fresh records
                if attempt >= self.retries:
                    raise
        raise AssertionError("unreachable")


class AsyncATLSClient(_ClientBase):
    """Asynchronous ATLS client. ``client.http`` is an httpx.AsyncClient over ATLS."""

    def __init__(self, base_url: str, tls: TLSConfig | TLSContext, **kwargs: Any) -> None:
        super().__init__(base_url, tls, **kwargs)
        self._carrier = httpx.AsyncHTTPTransport(**self.carrier.transport_kwargs())
        self.http = httpx.AsyncClient(base_url=INNER_BASE_URL, transport=AsyncATLSTransport(self))
        # Records mode shares one TLS record stream: requests must not interleave.
        self._records_lock = asyncio.Lock()

    async def __aenter__(self) -> AsyncATLSClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """End the ATLS session on the service (so it is freed at once), then the carriers."""
        try:
            await self.end_session()
        finally:
            await self.http.aclose()
            await self._carrier.aclose()

    async def end_session(self) -> None:
        """Tell the service this session is over; a failure to say so is not an error."""
        binding = self.binding
        closing = binding.close() if binding is not None else None
        if binding is None or closing is None:
            return
        message, token = closing
        with contextlib.suppress(ATLSError):
            response = await self._post(message)
            binding.closed(token, response.status_code, _headers(response), response.content)

    async def _post(self, message: OutgoingMessage) -> CarrierAnswer:
        url = self.base_url + message.path
        limit = self.carrier.max_response_bytes
        try:
            response = await self._carrier.handle_async_request(self.carrier.request(url, message))
            try:
                _declared_over(response, url, limit)
                body = bytearray()
                async for chunk in response.aiter_raw():
                    body += chunk
                    if len(body) > limit:
                        raise too_large(url, len(body), limit)
            finally:
                await response.aclose()
            return CarrierAnswer(response.status_code, response.headers, bytes(body))
        except httpx.HTTPError as exc:
            raise _carrier_error(exc, url, self.carrier) from None

    async def handshake(self) -> SessionInfo:
        """Run a new ATLS handshake, retrying carrier failures ``retries`` times."""
        attempt = 0
        while True:
            self.handshake_attempts = attempt + 1
            try:
                return await self._handshake_once()
            except ATLSError as exc:
                delay = self._retry_delay(attempt, exc)
                if delay is None:
                    raise
                await asyncio.sleep(delay)
                attempt += 1

    async def _handshake_once(self) -> SessionInfo:
        binding = self._new_binding()
        message: OutgoingMessage | None = binding.start()
        retransmits = 0
        while message is not None:
            response = await self._post(message)
            try:
                message = binding.receive(
                    response.status_code, _headers(response), response.content
                )
            except RetransmitLater as wait:  # DTLS: the answer arrived damaged
                retransmits += 1
                if retransmits > MAX_DTLS_RETRANSMITS:
                    raise
                await asyncio.sleep(wait.delay)
                message = binding.retransmit()
        return binding.session.info

    async def request_inner(self, request: InnerRequest) -> InnerResponse:
        binding = self._require_binding()
        serialize = self._records_lock if binding.mode is Mode.RECORDS else None
        async with serialize or contextlib.nullcontext():
            for attempt in range(self.retries + 1):
                message, token = binding.wrap_request(request)
                response = await self._post(message)
                try:
                    return binding.unwrap_response(
                        token,
                        request.method,
                        response.status_code,
                        _headers(response),
                        response.content,
                    )
                except MessageDropped:  # dropped unserved by DTLS: send again
                    if attempt >= self.retries:
                        raise
        raise AssertionError("unreachable")


class ATLSTransport(httpx.BaseTransport):
    """An httpx transport that sends each request through an ATLS session."""

    def __init__(self, client: ATLSClient) -> None:
        self.client = client

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return _httpx_from_inner(self.client.request_inner(_inner_from_httpx(request)), request)


class AsyncATLSTransport(httpx.AsyncBaseTransport):
    def __init__(self, client: AsyncATLSClient) -> None:
        self.client = client

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        inner = await self.client.request_inner(_inner_from_httpx(request))
        return _httpx_from_inner(inner, request)
