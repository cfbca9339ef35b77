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

from .config import Mode
from .dtls import AnySession, DTLSSession
from .errors import (
    ATLSError,
    IncompleteFlightError,
    Reason,
    Refusal,
    SessionStateError,
    TLSAlertError,
)
from .events import ApplicationData, CloseNotify
from .inner_http import InnerRequest, InnerResponse, decode_response, encode_request
from .keys import ExportedKeys, ExporterSettings
from .protection import CONTENT_CODING, ClientProtector, start_key_export
from .records import ContentType, RecordError, iter_records
from .server import Coding

__all__ = [
    "MessageDropped",
    "Mode",
    "Reason",
    "Refusal",
    "ResponseDropped",
    "RetransmitLater",
    "ServiceRefusedError",
]

WELL_KNOWN_PATH = "/.well-known/atls"
LEGACY_PATH = "/atls"
MEDIA_TYPE = "application/atls"
LEGACY_MEDIA_TYPE = "application/atls+octet-stream"
ATLS_MEDIA_TYPES = (MEDIA_TYPE, LEGACY_MEDIA_TYPE)
ATLS_PATHS = (WELL_KNOWN_PATH, LEGACY_PATH)
PROBLEM_MEDIA_TYPE = "application/problem+json"
SESSION_COOKIE = "atls_session"
PROBLEM_TYPE_PREFIX = "urn:atls-testbed:problem:"
# The client states its session's mode on every message; the service reads it
# from a session's first message and fixes the mode (absent: records, the mode
# every ATLS implementation has).
MODE_HEADER = "atls-mode"


class Variant(enum.Enum):
    """Which draft's form a message takes: the project's one name for it.

    ``current`` is -01 and later (``/.well-known/atls``, ``application/atls``);
    ``draft-00`` is the first draft's (``/atls``, ``application/atls+octet-stream``).
    Observers also see ``unlabelled``: TLS records under another content type.
    """

    CURRENT = "current"
    DRAFT00 = "draft-00"

    @property
    def path(self) -> str:
        return WELL_KNOWN_PATH if self is Variant.CURRENT else LEGACY_PATH

    @property
    def media_type(self) -> str:
        return MEDIA_TYPE if self is Variant.CURRENT else LEGACY_MEDIA_TYPE

    @classmethod
    def of_media_type(cls, content_type: str | None) -> Variant | None:
        media = media_type_of(content_type)
        return {MEDIA_TYPE: cls.CURRENT, LEGACY_MEDIA_TYPE: cls.DRAFT00}.get(media)

    @classmethod
    def of_path(cls, path: str) -> Variant | None:
        return {WELL_KNOWN_PATH: cls.CURRENT, LEGACY_PATH: cls.DRAFT00}.get(path.split("?", 1)[0])


def media_type_of(content_type: str | None) -> str:
    """The bare, lower-cased media type of a Content-Type value."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def coding_of(content_encoding: str | None) -> Coding | None:
    """The body coding a Content-Encoding names; None for one ATLS does not use."""
    value = (content_encoding or "").strip().lower()
    if not value:
        return Coding.TLS
    return Coding.PROTECTED if value == CONTENT_CODING else None


def mode_of(value: str | None) -> Mode:
    """The mode a client states (records when absent or unknown)."""
    return Mode.EXPORT if (value or "").strip().lower() == Mode.EXPORT.value else Mode.RECORDS


# ---------------------------------------------------------------------------
# Refusals as HTTP: status codes and problem details (RFC 9457)

HTTP_STATUS: dict[Reason, int] = {
    Reason.NOT_ATLS: 415,
    Reason.UNSUPPORTED_CODING: 415,
    Reason.FLIGHT_TOO_LARGE: 413,
    Reason.NOT_TLS: 400,
    Reason.INCOMPLETE_FLIGHT: 400,
    Reason.TLS_ALERT: 400,
    Reason.NO_HANDSHAKE_TO_START: 400,
    Reason.HANDSHAKE_NOT_FINISHED: 409,
    Reason.WRONG_MODE: 409,
    Reason.EXPORT_UNAVAILABLE: 409,
    Reason.REPLAYED: 400,
    Reason.PROTECTION_FAILED: 400,
    Reason.HANDSHAKE_CAPACITY: 503,
    Reason.CLIENT_HANDSHAKE_LIMIT: 429,
    Reason.UNKNOWN_SESSION: 404,
    Reason.SESSION_ENDED: 410,
    Reason.BODY_TOO_LARGE: 413,
    Reason.INVALID_JSON: 400,
    Reason.INVALID_QUERY: 400,
    Reason.INVALID_DOMAIN: 400,
    Reason.UNKNOWN_DOMAIN: 404,
    Reason.INVALID_CLAIM: 400,
    Reason.SERIAL_CLAIMED: 409,
    Reason.OPERATOR_API_DISABLED: 503,
    Reason.OPERATOR_UNAUTHORIZED: 401,
    Reason.ATLS_REQUIRED: 403,
    Reason.NO_DEVICE_IDENTITY: 403,
    Reason.SERIAL_NOT_CLAIMED: 404,
    Reason.SERIAL_MISMATCH: 403,
    Reason.INVALID_NONCE: 400,
    Reason.NO_VOUCHER_SIGNER: 503,
    Reason.INVALID_REPORT: 400,
    Reason.NOT_FOUND: 404,
    Reason.METHOD_NOT_ALLOWED: 405,
    Reason.HTTP_ERROR: 400,
    Reason.BLOCKED_BY_POLICY: 403,
    Reason.LIMIT_EXCEEDED: 429,
    Reason.MIDDLEBOX_ERROR: 502,
    Reason.REQUEST_TIMEOUT: 408,
    Reason.HEADER_TOO_LARGE: 431,
    Reason.MALFORMED_REQUEST: 400,
    Reason.TOO_MANY_CONNECTIONS: 503,
    Reason.UNEXPECTED_RESPONSE: 502,
}


def http_status(refusal: Refusal) -> int:
    """The status a refusal is answered with (its own, when it was given one)."""
    return refusal.status or HTTP_STATUS[refusal.reason]


@dataclass
class Problem:
    """An RFC 9457 problem document: how HTTP carries a ``Refusal``."""

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
    def from_refusal(cls, refusal: Refusal) -> Problem:
        extra = {
            k: base64.b64encode(v).decode() if isinstance(v, bytes) else v
            for k, v in refusal.extra.items()
        }
        return cls(http_status(refusal), refusal.slug, refusal.title, refusal.detail, extra)

    def to_refusal(self) -> Refusal:
        """The refusal a client raises for this answer."""
        reason = Reason.from_slug(self.slug)
        extra = dict(self.extra)
        if reason is Reason.UNEXPECTED_RESPONSE and self.slug != reason.value:
            extra.setdefault("problem_type", self.type)
        return Refusal(reason, self.detail, title=self.title, extra=extra, status=self.status)

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
                try:
                    status = int(data.pop("status", status))
                except (TypeError, ValueError):
                    pass
                return cls(
                    status=status,
                    slug=slug,
                    title=str(data.pop("title", "")),
                    detail=str(data.pop("detail", "")),
                    extra=data,
                )
        text = body[:200].decode("utf-8", "replace").strip()
        return cls(
            status=status,
            slug=Reason.UNEXPECTED_RESPONSE.value,
            title=f"unexpected HTTP {status}",
            detail=f"{media_type_of(content_type) or 'no content type'}: {text!r}",
        )


# The one refusal type, as the client side has long called it.
ServiceRefusedError = Refusal


class MessageDropped(ATLSError):
    """DTLS records mode: the service answered a request with no records at all.

    Its DTLS record layer dropped the request's records (forged, damaged or
    replayed in transit), so the request was not served and may be sent again
    in fresh records. (An answer whose records this side drops is not this:
    the request was served, and is not sent again.)
    """


class ResponseDropped(ATLSError):
    """DTLS records mode: this side's DTLS dropped the records of the answer.

    They were damaged or forged in transit; the request *was* served, so it is
    not sent again by itself.
    """


class RetransmitLater(IncompleteFlightError):
    """DTLS handshake: this side's DTLS dropped records of the service's answer.

    HTTP delivered the answer, but damaged: nothing was retransmitted yet, so
    the DTLS timer may do it without doubling any retransmission. Wait
    ``delay`` seconds, then post ``ClientBinding.retransmit()``: the service's
    DTLS answers a retransmitted flight with its own again. An adapter that
    does not know this error sees an IncompleteFlightError (a fresh handshake).
    """

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


# ---------------------------------------------------------------------------
# Client side


@dataclass(frozen=True)
class OutgoingMessage:
    """One POST to send: the adapter adds the base URL and sends it as is."""

    path: str
    headers: dict[str, str]
    body: bytes


class ClientBinding:
    """Drives one client ATLSSession (or DTLSSession) over HTTP messages, without doing I/O.

    With a DTLSSession every body is whole DTLS records; the first answer is a
    HelloVerifyRequest without a session cookie, so the ClientHello that
    returns the DTLS cookie is sent without one too. HTTP carries each flight
    reliably: after a carrier failure the client starts a new handshake (its
    retry policy; re-posting the same records would only be dropped as a DTLS
    replay). The DTLS timer runs only for an answer that arrived damaged
    (``RetransmitLater``, then ``retransmit``).
    """

    def __init__(
        self,
        session: AnySession,
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
        self.dropped = 0  # DTLS records mode: requests the service's DTLS dropped
        self._sent_finished = False
        self._finished = False
        self._closed = False

    @property
    def established(self) -> bool:
        """The handshake is done and its last answer processed (and not closed since)."""
        return self._finished and not self._closed

    def _message(self, body: bytes, extra: Mapping[str, str] | None = None) -> OutgoingMessage:
        headers = {
            "content-type": self.variant.media_type,
            "accept": self.variant.media_type,
            MODE_HEADER: self.mode.value,
        }
        if self.cookie:
            headers["cookie"] = f"{SESSION_COOKIE}={self.cookie}"
        headers.update(extra or {})
        return OutgoingMessage(self.variant.path, headers, body)

    def start(self) -> OutgoingMessage:
        return self._message(_joined(self.session.initiate()))

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
        if problem.slug == Reason.TLS_ALERT.value:
            flight = problem.extra.get("tls_flight")
            if flight and not self.session.failed:
                try:  # let our own TLS stack read the peer's alert: it raises with the name
                    self.session.receive_data(base64.b64decode(flight))
                except TLSAlertError:
                    raise
                except (ATLSError, ValueError):
                    pass  # not readable: fall back to the problem's own words
            raise TLSAlertError(problem.detail, alert=problem.extra.get("tls_alert"), origin="peer")
        raise problem.to_refusal()

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
            self.session.receive_flight(flight)  # e.g. TLS 1.3 NewSessionTicket
        out = _joined(self.session.data_to_send())
        if out:
            self._sent_finished = self._sent_finished or _has_change_cipher_spec(out)
            return self._message(out)
        if not self.session.handshake_complete:
            if isinstance(self.session, DTLSSession):
                # DTLS dropped records of the answer (damaged or forged in transit).
                # A key-export service keeps no DTLS object once it sent Finished, so
                # there only a fresh handshake helps.
                if self.mode is Mode.EXPORT and self._sent_finished:
                    raise IncompleteFlightError(
                        "DTLS dropped records of the service's last flight (damaged in transit)"
                    )
                raise RetransmitLater(
                    "DTLS dropped records of the service's handshake flight (damaged in transit)",
                    self.session.next_timeout() or 0.0,
                )
            raise SessionStateError("handshake stalled: nothing to send and not complete")
        self._finished = True
        self.keys, protector = start_key_export(self.session, self.exporter, self.mode)
        if isinstance(protector, ClientProtector):
            self._protector = protector
        return None

    def retransmit(self) -> OutgoingMessage:
        """After ``RetransmitLater``'s delay: the DTLS flight again, in fresh records."""
        if not isinstance(self.session, DTLSSession):
            raise SessionStateError("only a DTLS session retransmits")
        if not self.session.handle_timeout():
            raise SessionStateError("the DTLS retransmission timer has not fired yet")
        return self._message(_joined(self.session.data_to_send()))

    def wrap_request(self, request: InnerRequest) -> tuple[OutgoingMessage, int]:
        """Protect one inner request; returns the message and a token for its answer."""
        if not self.established:
            raise SessionStateError("the ATLS session is not established")
        return self._wrap(encode_request(request))

    def _wrap(self, inner: bytes) -> tuple[OutgoingMessage, int]:
        if self.mode is Mode.EXPORT:
            assert self._protector is not None
            seq, body = self._protector.seal_request(inner)
            return self._message(body, {"content-encoding": CONTENT_CODING}), seq
        self.session.send(inner)
        return self._message(_joined(self.session.data_to_send())), -1

    def unwrap_response(
        self,
        token: int,
        method: str,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
    ) -> InnerResponse:
        return decode_response(self._unwrap(token, status, headers, body), method)

    def _unwrap(self, token: int, status: int, headers: Mapping[str, str], body: bytes) -> bytes:
        payload = self._accept(status, headers, body)
        if self.mode is Mode.EXPORT:
            assert self._protector is not None
            return self._protector.open_response(token, payload)
        if not payload and isinstance(self.session, DTLSSession):
            self.dropped += 1
            raise MessageDropped("the service's DTLS dropped the request's records; not served")
        events = self.session.receive_flight(payload) if payload else []
        if any(isinstance(e, CloseNotify) for e in events):
            raise SessionStateError("the service closed the ATLS session")
        if not events and isinstance(self.session, DTLSSession):
            raise ResponseDropped("this side's DTLS dropped the answer's records (damaged)")
        return b"".join(e.data for e in events if isinstance(e, ApplicationData))

    def close(self) -> tuple[OutgoingMessage, int] | None:
        """The message that ends the session on the service, or None when there is none.

        Records mode sends TLS close_notify; key-export mode sends an empty
        protected message (authenticated and replay-protected, so nobody else
        can end the session). Pass the answer to ``closed``.
        """
        if not self.established:
            return None
        self._closed = True
        if self.mode is Mode.EXPORT:
            return self._wrap(b"")
        self.session.close()
        return self._message(_joined(self.session.data_to_send())), -1

    def closed(self, token: int, status: int, headers: Mapping[str, str], body: bytes) -> None:
        """Check the service's answer to ``close`` (it confirms the session ended)."""
        if self.mode is Mode.EXPORT:
            self._unwrap(token, status, headers, body)
        else:
            self._accept(status, headers, body)


def _joined(out: bytes | list[bytes]) -> bytes:
    """One body from a TLS flight or a DTLS flight's datagrams (whole records, in order)."""
    return out if isinstance(out, bytes) else b"".join(out)


def _has_change_cipher_spec(flight: bytes) -> bool:
    try:
        return any(r.content_type == ContentType.CHANGE_CIPHER_SPEC for r in iter_records(flight))
    except RecordError:
        return False
