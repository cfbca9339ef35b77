"""A sans-I/O ATLS session: TLS over pyOpenSSL memory BIOs.

In the style of h11/h2: the session never touches a socket or HTTP. Feed it
the peer's bytes (``receive_flight``), collect the events it returns, and send
whatever ``data_to_send`` hands out, in whatever envelope the binding uses.
Because ATLS carries whole flights, every call drains all pending records.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from OpenSSL import SSL, crypto
from service_identity import VerificationError
from service_identity.cryptography import (
    verify_certificate_hostname,
    verify_certificate_ip_address,
)

from .pki import Identity
from .records import RecordError, TruncatedRecord, iter_records

_READ_CHUNK = 65536


class Role(enum.Enum):
    CLIENT = "client"
    SERVER = "server"


class TLSVersion(enum.IntEnum):
    TLS1_2 = SSL.TLS1_2_VERSION
    TLS1_3 = SSL.TLS1_3_VERSION

    @classmethod
    def parse(cls, text: str) -> TLSVersion:
        """'1.2', '1.3', 'TLSv1.2' or 'tls1.3' to a version."""
        key = text.strip().lower().removeprefix("tlsv").removeprefix("tls")
        match key:
            case "1.2":
                return cls.TLS1_2
            case "1.3":
                return cls.TLS1_3
        raise ValueError(f"unsupported TLS version {text!r}: use 1.2 or 1.3")


class AlertDescription(enum.IntEnum):
    """TLS alert descriptions (RFC 8446 section 6, RFC 5246 section 7.2)."""

    close_notify = 0
    unexpected_message = 10
    bad_record_mac = 20
    record_overflow = 22
    handshake_failure = 40
    bad_certificate = 42
    unsupported_certificate = 43
    certificate_revoked = 44
    certificate_expired = 45
    certificate_unknown = 46
    illegal_parameter = 47
    unknown_ca = 48
    access_denied = 49
    decode_error = 50
    decrypt_error = 51
    protocol_version = 70
    insufficient_security = 71
    internal_error = 80
    inappropriate_fallback = 86
    user_canceled = 90
    missing_extension = 109
    unsupported_extension = 110
    unrecognized_name = 112
    bad_certificate_status_response = 113
    unknown_psk_identity = 115
    certificate_required = 116
    no_application_protocol = 120


def alert_name(code: int) -> str:
    try:
        return AlertDescription(code).name
    except ValueError:
        return f"alert_{code}"


# ---------------------------------------------------------------------------
# Errors


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


# ---------------------------------------------------------------------------
# Events


@dataclass(frozen=True)
class SessionInfo:
    """What both ends can state about an established session."""

    role: Role
    version: str
    cipher: str
    peer_chain: tuple[x509.Certificate, ...]
    server_name: str | None

    @property
    def peer_certificate(self) -> x509.Certificate | None:
        return self.peer_chain[0] if self.peer_chain else None

    @property
    def peer_subject(self) -> str | None:
        cert = self.peer_certificate
        return cert.subject.rfc4514_string() if cert else None


@dataclass(frozen=True)
class HandshakeComplete:
    info: SessionInfo


@dataclass(frozen=True)
class ApplicationData:
    data: bytes


@dataclass(frozen=True)
class CloseNotify:
    """The peer closed its sending side cleanly."""


Event = HandshakeComplete | ApplicationData | CloseNotify


# ---------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class TLSConfig:
    """Settings shared by many sessions of one role.

    ``trust_anchors`` (PEM) are the only roots used to check the peer: ATLS
    deliberately ignores the system store, because the point is to pin the
    service to the vendor's anchor (and devices to their manufacturer).
    A client with no anchors must say ``verify_peer=False`` explicitly.
    """

    role: Role
    identity: Identity | None = None
    trust_anchors: bytes | None = None
    server_name: str | None = None
    require_client_certificate: bool = False
    verify_peer: bool = True
    min_version: TLSVersion = TLSVersion.TLS1_2
    max_version: TLSVersion = TLSVersion.TLS1_3
    tls13_ciphersuites: str | None = None
    tls12_cipher_list: str | None = None
    # Observers for tests and interop runs (never needed in production):
    # ``keylog`` gets each SSLKEYLOGFILE line; ``on_established`` each session
    # once its handshake has completed (both peers authenticated).
    keylog: Callable[[bytes], None] | None = None
    on_established: Callable[[ATLSSession], None] | None = None

    def __post_init__(self) -> None:
        if self.min_version > self.max_version:
            raise ValueError("min_version is above max_version")
        if self.role is Role.SERVER and self.identity is None:
            raise ValueError("a server needs an identity (certificate and key)")
        if self.role is Role.CLIENT and self.verify_peer and not self.trust_anchors:
            raise ValueError("a verifying client needs trust_anchors (or verify_peer=False)")
        if self.require_client_certificate and not self.trust_anchors:
            raise ValueError("requiring client certificates needs trust_anchors")

    def build(self) -> TLSContext:
        return TLSContext(self)


class TLSContext:
    """A built pyOpenSSL context; build once, open many sessions from it."""

    def __init__(self, config: TLSConfig) -> None:
        self.config = config
        self.ssl_context = self._build(config)

    @staticmethod
    def _build(config: TLSConfig) -> SSL.Context:
        method = SSL.TLS_CLIENT_METHOD if config.role is Role.CLIENT else SSL.TLS_SERVER_METHOD
        ctx = SSL.Context(method)
        ctx.set_min_proto_version(int(config.min_version))
        ctx.set_max_proto_version(int(config.max_version))
        ctx.set_options(SSL.OP_NO_RENEGOTIATION | SSL.OP_NO_COMPRESSION)
        if config.tls13_ciphersuites:
            ctx.set_tls13_ciphersuites(config.tls13_ciphersuites.encode())
        if config.tls12_cipher_list:
            ctx.set_cipher_list(config.tls12_cipher_list.encode())
        if config.identity is not None:
            chain = config.identity.chain
            ctx.use_certificate(chain[0])
            for extra in chain[1:]:
                ctx.add_extra_chain_cert(extra)
            ctx.use_privatekey(config.identity.private_key)
            ctx.check_privatekey()
        if config.trust_anchors:
            store = ctx.get_cert_store()
            assert store is not None
            anchors = x509.load_pem_x509_certificates(config.trust_anchors)
            for anchor in anchors:
                store.add_cert(crypto.X509.from_cryptography(anchor))
            if config.role is Role.SERVER:
                ctx.set_client_ca_list(
                    [crypto.X509.from_cryptography(a).get_subject() for a in anchors]
                )
        if config.role is Role.CLIENT:
            mode = SSL.VERIFY_PEER if config.verify_peer else SSL.VERIFY_NONE
        elif config.require_client_certificate:
            mode = SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT
        else:
            mode = SSL.VERIFY_NONE
        ctx.set_verify(mode, _verify_callback)
        ctx.set_info_callback(_info_callback)
        if config.keylog is not None:
            keylog = config.keylog
            ctx.set_keylog_callback(lambda _conn, line: keylog(line))
        return ctx


# X509_V_ERR_* codes worth a precise message (OpenSSL's x509_vfy.h).
_VERIFY_ERRORS = {
    7: "certificate signature failure",
    9: "certificate is not yet valid",
    10: "certificate has expired",
    18: "self-signed certificate that is not a trust anchor",
    19: "self-signed certificate in chain that is not a trust anchor",
    20: "certificate is not issued by a trust anchor (unable to get issuer locally)",
    21: "unable to verify the first certificate",
    26: "certificate is not allowed for this purpose",
    62: "certificate does not match the expected host name",
    64: "certificate does not match the expected IP address",
}


_NAME_MISMATCH = (62, 64)


def _pin_name(conn: SSL.Connection, name: str) -> bool:
    """Make OpenSSL itself check the peer name, so a mismatch sends bad_certificate.

    pyOpenSSL has no public API for X509_VERIFY_PARAM_set1_host; we use the
    cryptography binding that pyOpenSSL itself is built on, and fall back to a
    check in the verify callback (which OpenSSL reports as internal_error)
    where the binding is missing.
    """
    try:
        from OpenSSL._util import lib  # noqa: PLC0415 - private, optional

        param = lib.SSL_get0_param(conn._ssl)  # type: ignore[attr-defined]
        if _is_ip(name):
            packed = ipaddress.ip_address(name).packed
            return bool(lib.X509_VERIFY_PARAM_set1_ip(param, packed, len(packed)))
        encoded = name.encode("idna")
        return bool(lib.X509_VERIFY_PARAM_set1_host(param, encoded, len(encoded)))
    except (ImportError, AttributeError):
        return False


def _name_matches(cert: x509.Certificate, name: str) -> bool:
    try:
        if _is_ip(name):
            verify_certificate_ip_address(cert, name)
        else:
            verify_certificate_hostname(cert, name)
    except VerificationError:
        return False
    return True


def _verify_callback(
    conn: SSL.Connection, cert: crypto.X509, errnum: int, depth: int, ok: int
) -> bool:
    """Record why verification failed; check the leaf's name if OpenSSL cannot.

    It must never raise: pyOpenSSL would re-raise the exception from the
    handshake call instead of a TLS error (a corrupt certificate did that).
    """
    session = conn.get_app_data()
    if not isinstance(session, ATLSSession):
        return bool(ok)
    try:
        name = session.expected_name
        if (
            depth == 0
            and name is not None
            and not session._name_pinned
            and not _name_matches(cert.to_cryptography(), name)
        ):
            session._verify_failure = f"certificate does not match the expected name {name!r}"
            return False
        if not ok:
            subject = cert.to_cryptography().subject.rfc4514_string()
            what = _VERIFY_ERRORS.get(errnum, f"X509 verify error {errnum}")
            if errnum in _NAME_MISMATCH:
                what = f"certificate does not match the expected name {name!r}"
            session._verify_failure = f"{what} (depth {depth}: {subject})"
            return False
    except Exception as exc:  # noqa: BLE001 - a malformed certificate from the peer
        session._verify_failure = f"unreadable peer certificate at depth {depth}: {exc}"
        return False
    return True


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _info_callback(conn: SSL.Connection, where: int, ret: int) -> None:
    """Remember the alerts that cross the session: they name the failure."""
    if not where & SSL.SSL_CB_ALERT:
        return
    session = conn.get_app_data()
    if not isinstance(session, ATLSSession):
        return
    description = alert_name(ret & 0xFF)
    if description == "close_notify":
        return
    if where & SSL.SSL_CB_READ:
        session._alert_received = description
    else:
        session._alert_sent = description


# ---------------------------------------------------------------------------
# The session


class ATLSSession:
    """One TLS session whose records travel in application-layer messages."""

    def __init__(self, context: TLSContext, *, server_name: str | None = None) -> None:
        self.context = context
        self.role = context.config.role
        self.expected_name = server_name or context.config.server_name
        self._name_pinned = False
        self._conn = SSL.Connection(context.ssl_context, None)
        self._conn.set_app_data(self)
        if self.role is Role.CLIENT:
            if self.expected_name:
                if not _is_ip(self.expected_name):
                    self._conn.set_tlsext_host_name(self.expected_name.encode("idna"))
                if context.config.verify_peer:
                    self._name_pinned = _pin_name(self._conn, self.expected_name)
            self._conn.set_connect_state()
        else:
            self._conn.set_accept_state()
        self._started = False
        self._info: SessionInfo | None = None
        self._failed: TLSAlertError | None = None
        self._peer_closed = False
        self._alert_sent: str | None = None
        self._alert_received: str | None = None
        self._verify_failure: str | None = None
        self._peeked = b""

    # -- state ------------------------------------------------------------

    @property
    def handshake_complete(self) -> bool:
        return self._info is not None

    @property
    def info(self) -> SessionInfo:
        if self._info is None:
            raise SessionStateError("the handshake has not completed")
        return self._info

    @property
    def failed(self) -> bool:
        return self._failed is not None

    # -- driving the handshake ----------------------------------------------

    def initiate(self) -> bytes:
        """Client only: start the handshake and return the first flight."""
        if self.role is not Role.CLIENT:
            raise SessionStateError("only a client initiates the handshake")
        if self._started:
            raise SessionStateError("the handshake was already initiated")
        self._started = True
        self._advance()
        return self.data_to_send()

    def receive_flight(self, flight: bytes) -> list[Event]:
        """Feed one whole flight from the peer and process it.

        Raises NotTLSError for bytes that are not TLS records,
        IncompleteFlightError when the flight ends mid-record or leaves the
        handshake stalled with nothing to answer, and TLSAlertError when TLS
        rejects it.
        """
        if not flight:
            raise IncompleteFlightError("empty flight")
        try:
            for _ in iter_records(flight):  # whole records, before OpenSSL sees a byte
                pass
        except TruncatedRecord as exc:
            raise IncompleteFlightError(f"flight is truncated: {exc}") from None
        except RecordError as exc:
            raise NotTLSError(f"not TLS: {exc}") from None
        was_complete = self.handshake_complete
        events = self.receive_data(flight)
        if not was_complete and not self.handshake_complete and not self._outgoing_pending():
            raise IncompleteFlightError(
                "the flight did not complete a handshake step (truncated, reordered or partial)"
            )
        return events

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed raw bytes (any split) and return the events they produced."""
        self._check_usable()
        if self.role is Role.SERVER:
            self._started = True
        elif not self._started:
            raise SessionStateError("call initiate() before receiving data")
        self._conn.bio_write(data)
        events: list[Event] = []
        if not self.handshake_complete:
            self._advance()
            if not self.handshake_complete:
                return events
            events.append(HandshakeComplete(self.info))
        events.extend(self._read_application_data())
        return events

    def _advance(self) -> None:
        try:
            self._conn.do_handshake()
        except SSL.WantReadError:
            return
        except SSL.Error as exc:
            raise self._fail(exc) from None
        self._info = SessionInfo(
            role=self.role,
            version=self._conn.get_protocol_version_name(),
            cipher=self._conn.get_cipher_name() or "",
            peer_chain=self._peer_chain(),
            server_name=self.expected_name,
        )
        if self.context.config.on_established is not None:
            self.context.config.on_established(self)

    def _peer_chain(self) -> tuple[x509.Certificate, ...]:
        # A server's SSL_get_peer_cert_chain omits the client's leaf; rebuild it.
        leaf = self._conn.get_peer_certificate(as_cryptography=True)
        if leaf is None:
            return ()
        rest = self._conn.get_peer_cert_chain(as_cryptography=True) or []
        return (leaf, *[c for c in rest if c != leaf])

    def _read_application_data(self) -> list[Event]:
        events: list[Event] = []
        chunks: list[bytes] = []
        while True:
            try:
                chunk = self._conn.recv(_READ_CHUNK)
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:
                self._peer_closed = True
                break
            except SSL.Error as exc:
                raise self._fail(exc) from None
            if not chunk:
                break
            chunks.append(chunk)
        if chunks:
            events.append(ApplicationData(b"".join(chunks)))
        if self._peer_closed:
            events.append(CloseNotify())
        return events

    def _fail(self, exc: SSL.Error) -> TLSAlertError:
        reason = _openssl_reason(exc)
        if self._verify_failure:
            reason = self._verify_failure
        origin: Literal["local", "peer"] | None = None
        alert = self._alert_received or self._alert_sent
        if self._alert_received:
            origin = "peer"
        elif self._alert_sent:
            origin = "local"
        error = TLSAlertError(reason, alert=alert, origin=origin)
        error.data_to_send = self.data_to_send()
        self._failed = error
        return error

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise SessionStateError(f"session already failed: {self._failed}")

    # -- application data ---------------------------------------------------

    def send(self, data: bytes) -> None:
        """Encrypt application data; the records appear in ``data_to_send``."""
        self._check_usable()
        if not self.handshake_complete:
            raise SessionStateError("application data before the handshake completed")
        view = memoryview(data)
        while view:
            try:
                written = self._conn.send(view[:_READ_CHUNK])
            except SSL.Error as exc:
                raise self._fail(exc) from None
            view = view[written:]

    def close(self) -> None:
        """Queue a close_notify alert."""
        if self._failed is not None or not self._started:
            return
        try:
            self._conn.shutdown()
        except SSL.Error:
            pass

    def _outgoing_pending(self) -> bool:
        """Whether records wait to be sent (read early, kept for data_to_send)."""
        self._peeked += self._drain()
        return bool(self._peeked)

    def _drain(self) -> bytes:
        chunks = []
        while True:
            try:
                chunk = self._conn.bio_read(_READ_CHUNK)
            except SSL.WantReadError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def data_to_send(self) -> bytes:
        """Every record this side has produced since the last call: one flight."""
        data = self._peeked + self._drain()
        self._peeked = b""
        return data

    # -- key export ---------------------------------------------------------

    def export_keying_material(
        self, label: str | bytes, length: int, context: bytes | None = None
    ) -> bytes:
        """RFC 5705 / RFC 8446 section 7.5 exporter.

        ``context=None`` is an *absent* context; ``b""`` is an *empty* one.
        They give different bytes in TLS 1.2 (identical in TLS 1.3).
        """
        if not self.handshake_complete:
            raise SessionStateError("keying material is exported only after the handshake")
        if isinstance(label, str):
            label = label.encode("ascii")
        return self._conn.export_keying_material(label, length, context)


def _openssl_reason(exc: SSL.Error) -> str:
    parts: Sequence[object] = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
    reasons = [str(p[2]) for p in parts if isinstance(p, tuple) and len(p) >= 3 and p[2]]
    return "; ".join(reasons) or str(exc) or type(exc).__name__
