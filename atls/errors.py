"""Errors of the ATLS core, shared by TLS and DTLS sessions and every binding.

Two families: failures of the session itself (``ATLSError`` and its
subclasses: a TLS alert, bytes that are not TLS, a call the state forbids),
and *refusals* (``Refusal``): a message that the service, the store, the
bootstrap API or a middlebox declined for a stated ``Reason``. A reason is a
closed vocabulary with no transport in it; each transport maps it to its own
codes once (HTTP status + problem document in ``atls.http_binding``).
"""

from __future__ import annotations

import enum
from typing import Any, Literal


class ATLSError(Exception):
    """Base of every error the ATLS core raises."""


class TLSAlertError(ATLSError):
    """The TLS handshake or a record failed; carries the alert that ended it.

    ``origin`` says who raised the alert: ``"local"`` (this side detected the
    problem and sent it) or ``"peer"`` (it arrived from the other side).
    ``data_to_send`` holds the alert records this side still owes its peer.
    """

    def __init__(
        self,
        reason: str,
        *,
        alert: str | None = None,
        origin: Literal["local", "peer"] | None = None,
        data_to_send: bytes = b"",
    ) -> None:
        self.reason = reason
        self.alert = alert
        self.origin = origin
        self.data_to_send = data_to_send
        where = {"local": "sent", "peer": "received"}.get(origin or "", "")
        prefix = f"TLS alert {alert} {where}: " if alert else "TLS failure: "
        super().__init__(prefix + reason)


class NotTLSError(ATLSError):
    """Input that is not a sequence of TLS records at all."""


class IncompleteFlightError(ATLSError):
    """A flight ended before the handshake could make progress (truncated or partial)."""


class SessionStateError(ATLSError):
    """An operation that the session's current state does not allow."""


class Reason(enum.Enum):
    """Why a message was refused: the one vocabulary of every refusal in the project.

    The value is the slug that problem documents carry
    (``urn:atls-testbed:problem:<slug>``).
    """

    # the ATLS binding (server driver and its adapters)
    NOT_ATLS = "unsupported-media-type"
    UNSUPPORTED_CODING = "unsupported-content-coding"
    FLIGHT_TOO_LARGE = "flight-too-large"
    NOT_TLS = "not-tls"
    INCOMPLETE_FLIGHT = "incomplete-flight"
    TLS_ALERT = "tls-alert"
    NO_HANDSHAKE_TO_START = "not-a-client-hello"
    HANDSHAKE_NOT_FINISHED = "handshake-not-finished"
    WRONG_MODE = "wrong-mode"
    EXPORT_UNAVAILABLE = "export-unavailable"
    REPLAYED = "replayed-message"
    PROTECTION_FAILED = "protection-failed"
    # the session store
    HANDSHAKE_CAPACITY = "handshake-capacity"
    CLIENT_HANDSHAKE_LIMIT = "client-handshake-limit"
    UNKNOWN_SESSION = "unknown-session"
    SESSION_ENDED = "session-expired"
    # the bootstrap and operator APIs
    BODY_TOO_LARGE = "body-too-large"
    INVALID_JSON = "invalid-json"
    INVALID_QUERY = "invalid-query"
    INVALID_DOMAIN = "invalid-domain"
    UNKNOWN_DOMAIN = "unknown-domain"
    INVALID_CLAIM = "invalid-claim"
    SERIAL_CLAIMED = "serial-claimed"
    OPERATOR_API_DISABLED = "operator-api-disabled"
    OPERATOR_UNAUTHORIZED = "operator-unauthorized"
    ATLS_REQUIRED = "atls-required"
    NO_DEVICE_IDENTITY = "no-device-identity"
    SERIAL_NOT_CLAIMED = "serial-not-claimed"
    SERIAL_MISMATCH = "serial-mismatch"
    INVALID_NONCE = "invalid-nonce"
    NO_VOUCHER_SIGNER = "no-voucher-signer"
    INVALID_REPORT = "invalid-report"
    # plain HTTP routing and the middlebox
    NOT_FOUND = "not-found"
    METHOD_NOT_ALLOWED = "method-not-allowed"
    HTTP_ERROR = "http-error"
    BLOCKED_BY_POLICY = "blocked-by-policy"
    LIMIT_EXCEEDED = "limit-exceeded"
    MIDDLEBOX_ERROR = "middlebox-error"
    # the HTTP server itself: slow, oversized or malformed requests, too many connections
    REQUEST_TIMEOUT = "request-timeout"
    HEADER_TOO_LARGE = "request-header-too-large"
    MALFORMED_REQUEST = "malformed-request"
    TOO_MANY_CONNECTIONS = "too-many-connections"
    # a peer's answer that is no problem document of ours
    UNEXPECTED_RESPONSE = "unexpected-response"

    @classmethod
    def from_slug(cls, slug: str) -> Reason:
        try:
            return cls(slug)
        except ValueError:
            return cls.UNEXPECTED_RESPONSE


# Refusals that a later, fresh attempt may not meet: damage in transit and
# transient overload (behind a middlebox a whole fleet shares one address).
TRANSIENT_REASONS = frozenset(
    {
        Reason.NOT_TLS,
        Reason.INCOMPLETE_FLIGHT,
        Reason.CLIENT_HANDSHAKE_LIMIT,
        Reason.HANDSHAKE_CAPACITY,
        Reason.REQUEST_TIMEOUT,
        Reason.TOO_MANY_CONNECTIONS,
    }
)


class Refusal(ATLSError):
    """A message declined for a ``Reason``: raised by the service side, read by clients.

    ``status`` is the transport's code when the refusal was *received* (the
    client side); a refusal raised on the service side leaves it to the
    adapter's mapping. ``extra`` holds fields a problem document carries on.
    """

    def __init__(
        self,
        reason: Reason,
        detail: str,
        *,
        title: str | None = None,
        retry_after: int | None = None,
        extra: dict[str, Any] | None = None,
        status: int | None = None,
    ) -> None:
        self.reason = reason
        self.detail = detail
        self.title = title or reason.value.replace("-", " ")
        self.retry_after = retry_after
        self.extra = dict(extra or {})
        self.status = status
        where = f"HTTP {status} " if status else ""
        super().__init__(f"{where}{reason.value}: {detail}")

    @property
    def slug(self) -> str:
        return self.reason.value

    @property
    def transient(self) -> bool:
        return self.reason in TRANSIENT_REASONS
