"""The HTTP binding of ATLS (draft-00 section 9.8 / -04 section 8), sans I/O.

Wire contract:
- each flight is the body of ``POST /.well-known/atls`` with
  ``Content-Type: application/atls`` (draft-00: ``POST /atls``,
  ``application/atls+octet-stream``); the answer is ``200`` with the peer's
  next flight, same content type;
- the service names the session with a cookie set on its first answer;
- errors are ordinary 4xx/5xx with an RFC 9457 ``application/problem+json``
  body; a TLS failure carries the alert name and the alert records;
- after the handshake, *records* mode sends inner HTTP/1.1 as TLS application
  data; *export* mode sends it as ``Content-Encoding: aes128gcm`` bodies keyed
  from the exporter (see ``atls.protection``).

``ClientBinding`` turns a session into the messages to POST; the sync and
async clients are thin loops around it.
"""

from __future__ import annotations

import base64
import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Any

from .inner_http import InnerRequest, InnerResponse, decode_response, encode_request
from .keys import ExportedKeys, ExporterSettings, UnsupportedSuiteError, export_keys
from .protection import CONTENT_CODING, ClientProtector
from .session import (
    ApplicationData,
    ATLSError,
    ATLSSession,
    CloseNotify,
    SessionStateError,
    TLSAlertError,
)

WELL_KNOWN_PATH = "/.well-known/atls"
LEGACY_PATH = "/atls"
MEDIA_TYPE = "application/atls"
LEGACY_MEDIA_TYPE = "application/atls+octet-stream"
ATLS_MEDIA_TYPES = (MEDIA_TYPE, LEGACY_MEDIA_TYPE)
ATLS_PATHS = (WELL_KNOWN_PATH, LEGACY_PATH)
PROBLEM_MEDIA_TYPE = "application/problem+json"
SESSION_COOKIE = "atls_session"
PROBLEM_TYPE_PREFIX = "urn:atls-testbed:problem:"


class Variant(enum.Enum):
    """Which draft's path and media type a client uses."""

    CURRENT = "current"  # -01 and later
    DRAFT00 = "draft-00"

    @property
    def path(self) -> str:
        return WELL_KNOWN_PATH if self is Variant.CURRENT else LEGACY_PATH

    @property
    def media_type(self) -> str:
        return MEDIA_TYPE if self is Variant.CURRENT else LEGACY_MEDIA_TYPE


class Mode(enum.Enum):
    """How application data travels once the handshake is done (draft 6.1)."""

    RECORDS = "records"
    EXPORT = "export"


def media_type_of(content_type: str | None) -> str:
    """The bare, lower-cased media type of a Content-Type value."""
    return (content_type or "").split(";", 1)[0].strip().lower()


# ---------------------------------------------------------------------------
# Problem details (RFC 9457)


@dataclass
class Problem:
    status: int
    slug: str
    title: str
    detail: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def type(self) -> str:
        return PROBLEM_TYPE_PREFIX + self.slug

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            **self.extra,
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict()).encode()

    @classmethod
    def from_response(cls, status: int, content_type: str | None, body: bytes) -> Problem:
        """Read a problem body; anything else becomes a generic problem."""
        if media_type_of(content_type) == PROBLEM_MEDIA_TYPE:
            try:
                data = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                data = None
            if isinstance(data, dict):
                type_ = str(data.pop("type", ""))
                slug = type_.removeprefix(PROBLEM_TYPE_PREFIX) if type_ else "about:blank"
                return cls(
                    status=int(data.pop("status", status)),
                    slug=slug,
                    title=str(data.pop("title", "")),
                    detail=str(data.pop("detail", "")),
                    extra=data,
                )
        text = body[:200].decode("utf-8", "replace").strip()
        return cls(
            status=status,
            slug="unexpected-response",
            title=f"unexpected HTTP {status}",
            detail=f"{media_type_of(content_type) or 'no content type'}: {text!r}",
        )


class ServiceRefusedError(ATLSError):
    """The service (or a middlebox) answered an ATLS message with an error."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        super().__init__(f"HTTP {problem.status} {problem.slug}: {problem.detail}")


def tls_alert_problem(error: TLSAlertError) -> Problem:
    """The problem a service returns when TLS rejected a flight."""
    extra: dict[str, Any] = {"tls_alert": error.alert, "tls_alert_origin": error.origin}
    if error.data_to_send:
        extra["tls_flight"] = base64.b64encode(error.data_to_send).decode()
    return Problem(400, "tls-alert", "TLS rejected the flight", error.reason, extra)


# ---------------------------------------------------------------------------
# Client side


@dataclass(frozen=True)
class OutgoingMessage:
    """One POST to send: the adapter adds the base URL and sends it as is."""

    path: str
    headers: dict[str, str]
    body: bytes


class ClientBinding:
    """Drives one client ATLSSession over HTTP messages, without doing I/O."""

    def __init__(
        self,
        session: ATLSSession,
        *,
        variant: Variant = Variant.CURRENT,
        mode: Mode = Mode.EXPORT,
        exporter: ExporterSettings | None = None,
    ) -> None:
        self.session = session
        self.variant = variant
        self.mode = mode
        self.exporter = exporter or ExporterSettings()
        self.cookie: str | None = None
        self.keys: ExportedKeys | None = None
        self._protector: ClientProtector | None = None
        self.round_trips = 0
        self._finished = False

    @property
    def established(self) -> bool:
        """The handshake is done and its last answer processed."""
        return self._finished

    def _message(self, body: bytes, extra: Mapping[str, str] | None = None) -> OutgoingMessage:
        headers = {"content-type": self.variant.media_type, "accept": self.variant.media_type}
        if self.cookie:
            headers["cookie"] = f"{SESSION_COOKIE}={self.cookie}"
        headers.update(extra or {})
        return OutgoingMessage(self.variant.path, headers, body)

    def start(self) -> OutgoingMessage:
        return self._message(self.session.initiate())

    def _accept(self, status: int, headers: Mapping[str, str], body: bytes) -> bytes:
        """Check an answer's envelope; return its ATLS body or raise."""
        self.round_trips += 1
        cookie_header = headers.get("set-cookie")
        if cookie_header:
            try:
                jar = SimpleCookie(cookie_header)
            except CookieError:
                jar = SimpleCookie()
            if SESSION_COOKIE in jar:
                self.cookie = jar[SESSION_COOKIE].value
        content_type = headers.get("content-type")
        if status == 200 and media_type_of(content_type) in ATLS_MEDIA_TYPES:
            return body
        problem = Problem.from_response(status, content_type, body)
        if problem.slug == "tls-alert":
            flight = problem.extra.get("tls_flight")
            if flight and not self.session.failed:
                try:  # let our own TLS stack read the peer's alert: it raises with the name
                    self.session.receive_data(base64.b64decode(flight))
                except TLSAlertError:
                    raise
                except (ATLSError, ValueError):
                    pass  # not readable: fall back to the problem's own words
            raise TLSAlertError(problem.detail, alert=problem.extra.get("tls_alert"), origin="peer")
        raise ServiceRefusedError(problem)

    def receive(
        self, status: int, headers: Mapping[str, str], body: bytes
    ) -> OutgoingMessage | None:
        """Process the answer to a handshake message; return the next one, or None when done."""
        flight = self._accept(status, headers, body)
        if not self.session.handshake_complete:
            if not flight:
                raise SessionStateError("the service answered a handshake flight with nothing")
            self.session.receive_flight(flight)
        elif flight:
            self.session.receive_data(flight)  # e.g. TLS 1.3 NewSessionTicket
        out = self.session.data_to_send()
        if out:
            return self._message(out)
        if not self.session.handshake_complete:
            raise SessionStateError("handshake stalled: nothing to send and not complete")
        self._finished = True
        try:
            self.keys = export_keys(self.session, self.exporter)
        except UnsupportedSuiteError:
            if self.mode is Mode.EXPORT:
                raise
        if self.mode is Mode.EXPORT and self.keys is not None:
            self._protector = ClientProtector(self.keys)
        return None

    def wrap_request(self, request: InnerRequest) -> tuple[OutgoingMessage, int]:
        """Protect one inner request; returns the message and a token for its answer."""
        if not self.established:
            raise SessionStateError("the ATLS handshake has not finished")
        inner = encode_request(request)
        if self.mode is Mode.EXPORT:
            assert self._protector is not None
            seq, body = self._protector.seal_request(inner)
            return self._message(body, {"content-encoding": CONTENT_CODING}), seq
        self.session.send(inner)
        return self._message(self.session.data_to_send()), -1

    def unwrap_response(
        self,
        token: int,
        method: str,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
    ) -> InnerResponse:
        payload = self._accept(status, headers, body)
        if self.mode is Mode.EXPORT:
            assert self._protector is not None
            return decode_response(self._protector.open_response(token, payload), method)
        events = self.session.receive_data(payload)
        if any(isinstance(e, CloseNotify) for e in events):
            raise SessionStateError("the service closed the ATLS session")
        data = b"".join(e.data for e in events if isinstance(e, ApplicationData))
        return decode_response(data, method)
