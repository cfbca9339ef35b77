"""A constrained device: ATLS over CoAP to a gateway it does not trust, then OSCORE readings.

The ATLS session is the same ``ClientBinding`` the HTTP clients drive; this
adapter only maps its messages to CoAP (``atls.coap_binding``): a Confirmable
``POST /.well-known/atls`` per flight (aiocoap goes blockwise by itself when
a flight passes 1024 bytes), the ``ATLS-Session`` option where HTTP has the
cookie, ``ATLS-Mode`` on the first flight, the Content-Format where HTTP has
Content-Type and Content-Encoding. After a key-export handshake the device
exchanges OSCORE IDs inside the session and derives its OSCORE context from
the export (``atls.oscore``); readings then go OSCORE-protected end to end.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiocoap
from aiocoap.message import Direction
from aiocoap.numbers.codes import Code
from aiocoap.numbers.optionnumbers import OptionNumber
from aiocoap.optiontypes import OpaqueOption, UintOption

from atls.coap_binding import (
    URI_PATH,
    CoAPSettings,
    mode_option,
    refusal_from_diagnostic,
)
from atls.config import Mode, TLSConfig
from atls.dtls import DTLSContext, DTLSSession
from atls.errors import IncompleteFlightError, NotTLSError, Reason, Refusal, TLSAlertError
from atls.events import SessionInfo
from atls.http_binding import MEDIA_TYPE, MODE_HEADER, ClientBinding, OutgoingMessage
from atls.inner_http import InnerRequest, InnerResponse
from atls.keys import ExporterSettings
from atls.oscore import ATLSSecurityContext
from atls.protection import CONTENT_CODING
from atls.server import Coding
from atls.session import ATLSSession

from .client import retryable


class CoAPCarrierError(Exception):
    """The gateway did not answer (timeout, unreachable)."""


@dataclass
class FlightStats:
    """What the device sent and received, per ATLS message (sizes in bytes)."""

    up: list[int] = field(default_factory=list)
    down: list[int] = field(default_factory=list)

    def blocks(self, size: int = 1024) -> int:
        """Datagrams a flight list needs at ``size`` bytes of payload each."""
        return sum(max(1, -(-n // size)) for n in self.up + self.down)

    def to_dict(self) -> dict[str, Any]:
        return {
            "up": self.up,
            "down": self.down,
            "blockwise_up": sum(1 for n in self.up if n > 1024),
            "blockwise_down": sum(1 for n in self.down if n > 1024),
            "datagrams": self.blocks(),
        }


@dataclass
class Reading:
    code: str
    payload: bytes
    outer: aiocoap.Message  # the protected request as sent (for a replay test)


class CoAPDevice:
    """One device's ATLS session over CoAP, and its OSCORE context afterwards."""

    def __init__(
        self,
        gateway: str,  # coap://host:port
        tls: TLSConfig,
        *,
        mode: Mode = Mode.EXPORT,
        dtls: bool = False,
        exporter: ExporterSettings | None = None,
        coap: CoAPSettings | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.gateway = gateway.rstrip("/")
        self.tls = tls
        self.context_tls = DTLSContext(tls) if dtls else tls.build()
        self.dtls = dtls
        self.mode = mode
        self.exporter = exporter or ExporterSettings()
        self.coap = coap or CoAPSettings()
        self.timeout = timeout
        self.stats = FlightStats()
        self.binding: ClientBinding | None = None
        self.oscore: ATLSSecurityContext | None = None
        self._ctx: aiocoap.Context | None = None

    async def __aenter__(self) -> CoAPDevice:
        self._ctx = await aiocoap.Context.create_client_context()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._ctx is not None:
            await self._ctx.shutdown()
            self._ctx = None

    # -- the ATLS session ---------------------------------------------------------------

    async def handshake(self) -> SessionInfo:
        session = (
            DTLSSession(self.context_tls)  # type: ignore[arg-type]
            if self.dtls
            else ATLSSession(self.context_tls)
        )
        binding = ClientBinding(session, mode=self.mode, exporter=self.exporter)
        self.binding = binding
        message: OutgoingMessage | None = binding.start()
        for _ in range(16):  # a handshake is 2-4 round trips; a loop is a bug
            assert message is not None
            status, headers, body = await self._exchange(message)
            message = binding.receive(status, headers, body)
            if message is None:
                return binding.session.info
        raise Refusal(Reason.UNEXPECTED_RESPONSE, "the handshake did not finish in 16 flights")

    async def request_inner(self, request: InnerRequest) -> InnerResponse:
        assert self.binding is not None, "handshake first"
        message, token = self.binding.wrap_request(request)
        status, headers, body = await self._exchange(message)
        return self.binding.unwrap_response(token, request.method, status, headers, body)

    async def close_session(self) -> None:
        """End the ATLS session on the service (its OSCORE context ends with it)."""
        assert self.binding is not None, "handshake first"
        closing = self.binding.close()
        if closing is None:
            return
        message, token = closing
        status, headers, body = await self._exchange(message)
        self.binding.closed(token, status, headers, body)

    async def _exchange(self, message: OutgoingMessage) -> tuple[int, dict[str, str], bytes]:
        request = self._coap_request(message)
        self.stats.up.append(len(message.body))
        response = await self._send(request)
        self.stats.down.append(len(response.payload))
        return self._envelope(response)

    def _coap_request(self, message: OutgoingMessage) -> aiocoap.Message:
        coding = (
            Coding.PROTECTED
            if message.headers.get("content-encoding") == CONTENT_CODING
            else Coding.TLS
        )
        request = aiocoap.Message(
            code=Code.POST,
            uri=f"{self.gateway}/{'/'.join(URI_PATH)}",
            payload=message.body,
        )
        request.opt.content_format = self.coap.format_of(coding)
        cookie = message.headers.get("cookie")
        if cookie:
            handle = bytes.fromhex(cookie.split("=", 1)[1])
            request.opt.add_option(OpaqueOption(OptionNumber(self.coap.session_option), handle))
        else:
            mode = Mode(message.headers.get(MODE_HEADER, Mode.RECORDS.value))
            request.opt.add_option(
                UintOption(OptionNumber(self.coap.mode_option), mode_option(mode))
            )
        return request

    def _envelope(self, response: aiocoap.Message) -> tuple[int, dict[str, str], bytes]:
        """A CoAP answer as the status, headers and body ``ClientBinding`` reads."""
        code = (int(response.code) >> 5, int(response.code) & 0x1F)
        if not response.code.is_successful():
            refusal = refusal_from_diagnostic(code, response.payload)
            if refusal.reason is Reason.TLS_ALERT:
                raise TLSAlertError(
                    refusal.detail, alert=refusal.extra.get("tls_alert"), origin="peer"
                )
            raise refusal
        headers: dict[str, str] = {}
        coding = self.coap.coding_of(response.opt.content_format)
        if coding is None:
            raise Refusal(
                Reason.UNEXPECTED_RESPONSE,
                f"the gateway answered with Content-Format {response.opt.content_format}",
            )
        headers["content-type"] = MEDIA_TYPE
        if coding is Coding.PROTECTED:
            headers["content-encoding"] = CONTENT_CODING
        handle = response.opt.get_option(OptionNumber(self.coap.session_option))
        if handle:
            headers["set-cookie"] = f"atls_session={bytes(handle[0].value).hex()}"
        return 200, headers, response.payload

    async def _send(self, request: aiocoap.Message) -> aiocoap.Message:
        assert self._ctx is not None, "use the device as an async context manager"
        try:
            return await asyncio.wait_for(self._ctx.request(request).response, timeout=self.timeout)
        except TimeoutError:
            raise CoAPCarrierError(f"no answer from {self.gateway} in {self.timeout} s") from None
        except aiocoap.error.NetworkError as exc:
            raise CoAPCarrierError(f"{self.gateway}: {exc}") from None

    # -- OSCORE ------------------------------------------------------------------------

    async def setup_oscore(self, recipient_id: bytes | None = None) -> dict[str, Any]:
        """Exchange OSCORE IDs inside the session and derive the context from the export."""
        assert self.binding is not None and self.binding.keys is not None, "handshake first"
        own = recipient_id if recipient_id is not None else os.urandom(1)
        answer = await self.request_inner(
            InnerRequest(
                "POST",
                "/oscore/ids",
                [("content-type", "application/json")],
                json.dumps({"recipient_id": own.hex()}).encode(),
            )
        )
        if answer.status != 200:
            raise Refusal(
                Reason.UNEXPECTED_RESPONSE,
                f"OSCORE ID exchange answered {answer.status}: {answer.body[:200]!r}",
            )
        ids = json.loads(answer.body)
        service_rid = bytes.fromhex(ids["recipient_id"])
        self.oscore = ATLSSecurityContext(self.binding.keys, service_rid, own)
        return {**ids, "device_recipient_id": own.hex()}

    async def send_reading(self, reading: Mapping[str, Any]) -> Reading:
        """One OSCORE-protected ``POST readings`` through the gateway."""
        assert self.oscore is not None, "setup_oscore first"
        inner = aiocoap.Message(
            code=Code.POST,
            uri=f"{self.gateway}/readings",
            payload=json.dumps(dict(reading)).encode(),
        )
        inner.direction = Direction.OUTGOING
        outer, request_id = self.oscore.protect(inner)
        outer.remote = inner.remote
        response = await self._send_raw(outer)
        if response.opt.oscore is None:  # an unprotected error: from the gateway or the service
            return Reading(_text(response.code), response.payload, outer)
        response.direction = Direction.INCOMING
        plain, _ = self.oscore.context_from_response({}).unprotect(response, request_id)
        return Reading(_text(plain.code), plain.payload, outer)

    async def replay(self, outer: aiocoap.Message) -> tuple[str, bytes]:
        """Send a protected request again, byte for byte: the service must refuse it."""
        again = outer.copy(mid=None, token=None)
        again.remote = outer.remote
        response = await self._send_raw(again)
        return _text(response.code), response.payload

    async def _send_raw(self, message: aiocoap.Message) -> aiocoap.Message:
        copy = message.copy(mid=None, token=None)
        copy.remote = message.remote
        copy.direction = Direction.OUTGOING
        return await self._send(copy)


def _text(code: Code) -> str:
    return f"{int(code) >> 5}.{int(code) & 0x1F:02d}"


# ---------------------------------------------------------------------------
# The constrained device's run: handshake, OSCORE, readings, a replay

EXIT_OK, EXIT_USAGE, EXIT_CARRIER, EXIT_TLS, EXIT_REFUSED = 0, 2, 3, 4, 5
EXIT_READINGS, EXIT_REPLAY_ACCEPTED = 11, 12
COAP_EXIT_CODES = {
    EXIT_OK: "handshake, OSCORE readings and the replay check all as expected",
    EXIT_USAGE: "usage or configuration",
    EXIT_CARRIER: "the gateway did not answer",
    EXIT_TLS: "the ATLS session failed (TLS alert, bad flight)",
    EXIT_REFUSED: "the gateway, the middlebox or the service refused (CoAP error)",
    EXIT_READINGS: "an OSCORE reading was not accepted",
    EXIT_REPLAY_ACCEPTED: "a replayed reading was accepted",
}


@dataclass
class ConstrainedRun:
    gateway: str
    tls: TLSConfig
    device: str
    mode: Mode = Mode.EXPORT
    dtls: bool = False
    exporter: ExporterSettings = field(default_factory=ExporterSettings)
    readings: int = 3
    canary: str = ""
    replay: bool = True
    timeout: float = 10.0
    retries: int = 2


async def run_constrained(run: ConstrainedRun, say: Any = None) -> dict[str, Any]:
    """The whole device story; returns its report (``exit_code`` included)."""
    import time

    report: dict[str, Any] = {
        "device": run.device,
        "gateway": run.gateway,
        "transport": "dtls" if run.dtls else "tls",
        "mode": run.mode.value,
        "steps": [],  # as the bootstrap report: [{name, ok, ms, detail}]
        "attempts": 0,
        "handshake_attempts": 0,
    }

    def step(name: str, status: str, started: float, detail: str, **extra: Any) -> None:
        report["steps"].append(
            {
                "name": name,
                "ok": status == "ok",
                "ms": round((time.monotonic() - started) * 1000, 1),
                "detail": detail,
                **extra,
            }
        )
        if say:
            say(f"[{run.device}] {name:<10} {status:<7} {detail}")

    def fail(code: int, name: str, started: float, error: BaseException | str) -> dict[str, Any]:
        step(name, "failed", started, str(error))
        report["exit_code"] = code
        report["error"] = f"{name}: {error}"
        report["result"] = "failed"
        return report

    async with CoAPDevice(
        run.gateway,
        run.tls,
        mode=run.mode,
        dtls=run.dtls,
        exporter=run.exporter,
        timeout=run.timeout,
    ) as device:
        started = time.monotonic()
        for attempt in range(run.retries + 1):
            report["attempts"] = report["handshake_attempts"] = attempt + 1
            device.stats = FlightStats()
            try:
                info = await device.handshake()
                break
            except CoAPCarrierError as exc:
                error: BaseException = exc
                code = EXIT_CARRIER
            except (TLSAlertError, IncompleteFlightError, NotTLSError) as exc:
                # damage in transit gets a fresh handshake, as over HTTP; verdicts do not
                if not retryable(exc):
                    return fail(EXIT_TLS, "handshake", started, exc)
                error, code = exc, EXIT_TLS
            except Refusal as exc:
                if not exc.transient:
                    return fail(EXIT_REFUSED, "handshake", started, exc)
                error, code = exc, EXIT_REFUSED
            except Exception as exc:  # noqa: BLE001 - a bad flight from the peer
                return fail(EXIT_TLS, "handshake", started, exc)
            if attempt < run.retries:
                await asyncio.sleep(0.25 * 2**attempt)
        else:
            return fail(code, "handshake", started, error)
        report["flights"] = device.stats.to_dict()
        step(
            "handshake",
            "ok",
            started,
            f"{info.version} {info.cipher} with {info.peer_subject}, "
            f"flights up {device.stats.up} down {device.stats.down} bytes",
            version=info.version,
            cipher=info.cipher,
        )
        if run.mode is not Mode.EXPORT:
            report["exit_code"] = EXIT_OK
            report["result"] = "established"
            return report
        started = time.monotonic()
        try:
            ids = await device.setup_oscore()
        except CoAPCarrierError as exc:
            return fail(EXIT_CARRIER, "oscore", started, exc)
        except Refusal as exc:
            return fail(EXIT_REFUSED, "oscore", started, exc)
        report["oscore"] = ids
        step(
            "oscore",
            "ok",
            started,
            f"{ids['aead']}, HKDF {ids['hkdf']}, label {ids['label']}, sender "
            f"{ids['recipient_id']} recipient {ids['device_recipient_id']}",
        )
        started = time.monotonic()
        codes: list[str] = []
        last: Reading | None = None
        for n in range(run.readings):
            payload = {"device": run.device, "n": n, "temperature": 20.0 + n / 10}
            if run.canary:
                payload["canary"] = run.canary
            try:
                last = await device.send_reading(payload)
            except CoAPCarrierError as exc:
                return fail(EXIT_CARRIER, "readings", started, exc)
            codes.append(last.code)
        report["reading_codes"] = codes
        if any(c != "2.04" for c in codes):
            bad = next(c for c in codes if c != "2.04")
            detail = last.payload[:200].decode("utf-8", "replace") if last else ""
            return fail(EXIT_READINGS, "readings", started, f"answered {bad}: {detail}")
        step("readings", "ok", started, f"{len(codes)} OSCORE readings answered 2.04")
        if run.replay and last is not None:
            started = time.monotonic()
            try:
                replay_code, payload_back = await device.replay(last.outer)
            except CoAPCarrierError as exc:
                return fail(EXIT_CARRIER, "replay", started, exc)
            report["replay_code"] = replay_code
            text = payload_back[:200].decode("utf-8", "replace")
            if replay_code.startswith("2."):
                return fail(EXIT_REPLAY_ACCEPTED, "replay", started, f"accepted ({replay_code})")
            step("replay", "ok", started, f"refused as expected: {replay_code} {text}")
    report["exit_code"] = EXIT_OK
    report["result"] = "readings-sent"
    return report
