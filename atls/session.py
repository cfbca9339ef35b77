"""A sans-I/O ATLS session: TLS over pyOpenSSL memory BIOs.

In the style of h11/h2: the session never touches a socket or HTTP. Feed it
the peer's bytes (``receive_flight``), collect the events it returns, and send
whatever ``data_to_send`` hands out, in whatever envelope the binding uses.
Because ATLS carries whole flights, every call drains all pending records.
"""

from __future__ import annotations

import enum
import ipaddress
import os
from collections.abc import Callable, Sequence
from functools import cache
from typing import Literal

from cryptography import x509
from OpenSSL import SSL, crypto
from OpenSSL._util import ffi as _ffi  # the binding pyOpenSSL itself calls
from OpenSSL._util import lib as _lib
from service_identity import VerificationError
from service_identity.cryptography import (
    verify_certificate_hostname,
    verify_certificate_ip_address,
)

from . import records as _records
from .config import Role, TLSConfig, TLSVersion
from .errors import (
    ATLSError,
    IncompleteFlightError,
    NotTLSError,
    SessionStateError,
    TLSAlertError,
)
from .events import (
    ApplicationData,
    CloseNotify,
    Event,
    HandshakeComplete,
    SessionInfo,
    SessionState,
)
from .records import RecordError, TruncatedRecord

# Re-exported: most callers know these as atls.session names.
__all__ = [
    "ATLSError",
    "ATLSSession",
    "AlertDescription",
    "ApplicationData",
    "CloseNotify",
    "Event",
    "HandshakeComplete",
    "IncompleteFlightError",
    "NotTLSError",
    "Role",
    "SessionInfo",
    "SessionState",
    "SessionStateError",
    "TLSAlertError",
    "TLSConfig",
    "TLSContext",
    "TLSSessionBase",
    "TLSVersion",
    "alert_name",
    "check_records",
    "configure_context",
]

_READ_CHUNK = 65536
_DRAIN_CHUNK = 262144
# SSL_read fills what it returns, so the read buffer needs no zeroing (ffi.new
# clears 64 KiB per call: a visible share of a server's handshake, profiled)
_new_read_buffer = _ffi.new_allocator(should_clear_after_alloc=False)


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


class TLSContext:
    """A built pyOpenSSL context; build once, open many sessions from it."""

    datagram = False  # DTLSContext (atls.dtls) says True

    def __init__(self, config: TLSConfig) -> None:
        self.config = config
        self.ssl_context = self._build(config)

    @staticmethod
    def _build(config: TLSConfig) -> SSL.Context:
        method = SSL.TLS_CLIENT_METHOD if config.role is Role.CLIENT else SSL.TLS_SERVER_METHOD
        ctx = SSL.Context(method)
        ctx.set_min_proto_version(int(config.min_version))
        ctx.set_max_proto_version(int(config.max_version))
        configure_context(ctx, config)
        return ctx


def configure_context(ctx: SSL.Context, config: TLSConfig) -> None:
    """Everything a TLS and a DTLS context share: suites, groups, ALPN, identity, trust."""
    # ATLS never resumes: no session tickets (TLS 1.3 sent two, 1.2 KB of the
    # last flight) and no session cache.
    ctx.set_options(SSL.OP_NO_RENEGOTIATION | SSL.OP_NO_COMPRESSION | SSL.OP_NO_TICKET)
    ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    if config.tls13_ciphersuites:
        ctx.set_tls13_ciphersuites(config.tls13_ciphersuites.encode())
    if config.tls12_cipher_list:
        ctx.set_cipher_list(config.tls12_cipher_list.encode())
    if config.groups:
        _set_groups(ctx, config.groups)
    if config.alpn:
        protocols = [p.encode() for p in config.alpn]
        if config.role is Role.CLIENT:
            ctx.set_alpn_protos(protocols)
        else:
            ctx.set_alpn_select_callback(_alpn_chooser(protocols))
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
            for anchor in anchors:  # cryptography certificates: X509Name is deprecated
                ctx.add_client_ca(anchor)
    if config.role is Role.CLIENT:
        mode = SSL.VERIFY_PEER if config.verify_peer else SSL.VERIFY_NONE
    elif config.require_client_certificate:
        mode = SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT
    else:
        mode = SSL.VERIFY_NONE
    # No verify callback on the success path: OpenSSL checks chain and pinned
    # name itself, and a failure's reason is read from the verify result.
    ctx.set_verify(mode)
    _lib.SSL_CTX_set_info_callback(ctx._context, _INFO_CALLBACK)  # noqa: SLF001
    if config.keylog is not None:
        write = config.keylog if callable(config.keylog) else open_keylog(config.keylog)
        assert write is not None
        ctx.set_keylog_callback(lambda _conn, line: write(line))


def open_keylog(path: str | os.PathLike[str] | None) -> Callable[[bytes], None] | None:
    """An appender for an SSLKEYLOGFILE, created 0600 (it holds secrets).

    Tried once here so an unwritable path fails at configuration, not inside a
    handshake; each line is one ``O_APPEND`` write, so several processes (a
    fleet of devices, the service) can share one file.
    """
    if path is None:
        return None
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    try:
        os.close(os.open(path, flags, 0o600))
    except OSError as exc:
        raise ValueError(f"cannot write the key log {os.fspath(path)}: {exc.strerror}") from None

    def write(line: bytes) -> None:
        try:
            fd = os.open(path, flags, 0o600)
            try:
                os.write(fd, line + b"\n")
            finally:
                os.close(fd)
        except OSError:
            pass  # a callback must never raise into the handshake

    return write


def _set_groups(ctx: SSL.Context, groups: Sequence[str]) -> None:
    """Limit the key-exchange groups (and the ClientHello's key shares).

    pyOpenSSL has no public call for SSL_CTX_set1_groups_list; the binding it is
    built on has the same function under its older name (set1_curves_list).
    """
    from OpenSSL._util import ffi, lib  # noqa: PLC0415 - private, as in _pin_name

    handle = ctx._context  # type: ignore[attr-defined]
    if not lib.SSL_CTX_set1_curves_list(handle, ffi.new("char[]", ":".join(groups).encode())):
        raise ValueError(f"OpenSSL knows none or not all of the groups {':'.join(groups)!r}")


def _alpn_chooser(ours: list[bytes]) -> Callable[[SSL.Connection, list[bytes]], bytes]:
    """The server picks its own most preferred protocol among the client's."""

    def choose(conn: SSL.Connection, offered: list[bytes]) -> bytes:
        for protocol in ours:
            if protocol in offered:
                return protocol
        return SSL.NO_OVERLAPPING_PROTOCOLS  # type: ignore[return-value]

    return choose


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
        encoded = _idna(name)
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
    if not isinstance(session, TLSSessionBase):
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


@cache
def _idna(name: str) -> bytes:
    return name.encode("idna")


@cache
def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


_CB_ALERT, _CB_READ = SSL.SSL_CB_ALERT, SSL.SSL_CB_READ


def _on_info(ssl: object, where: int, ret: int) -> None:
    """Remember the alerts that cross the session: they name the failure.

    OpenSSL calls this about 25 times per handshake, so it is a bare cffi
    callback (pyOpenSSL's wrapper looks the connection up on every call);
    only an alert, which is rare, looks the connection up.
    """
    if not where & _CB_ALERT:
        return
    conn = SSL.Connection._reverse_mapping.get(ssl)  # noqa: SLF001 - pyOpenSSL's own map
    if conn is None:
        return
    session = conn.get_app_data()
    if not isinstance(session, TLSSessionBase):
        return
    description = alert_name(ret & 0xFF)
    if description == "close_notify":
        return
    if where & _CB_READ:
        session._alert_received = description
    else:
        session._alert_sent = description


_INFO_CALLBACK = _ffi.callback("void (*)(const SSL *, int, int)", _on_info)


# ---------------------------------------------------------------------------
# The session


class TLSSessionBase:
    """What a TLS and a DTLS session share: the connection, its checks, state and facts.

    Subclasses decide how bytes come in and go out (a stream of records for
    TLS, datagrams for DTLS in ``atls.dtls``).
    """

    _write_chunk = _READ_CHUNK  # largest plaintext per send() call into OpenSSL

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
                    self._conn.set_tlsext_host_name(_idna(self.expected_name))
                if context.config.verify_peer:
                    self._name_pinned = _pin_name(self._conn, self.expected_name)
                    if not self._name_pinned:  # check the name in Python instead
                        self._conn.set_verify(SSL.VERIFY_PEER, _verify_callback)
            self._conn.set_connect_state()
        else:
            self._conn.set_accept_state()
        self._state = SessionState.IDLE
        self._info: SessionInfo | None = None
        self._failure: TLSAlertError | None = None
        self._alert_sent: str | None = None
        self._alert_received: str | None = None
        self._verify_failure: str | None = None
        self._chain: tuple[x509.Certificate, ...] | None = None

    # -- state ------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        return self._state

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
        return self._state is SessionState.FAILED

    @property
    def failure(self) -> TLSAlertError | None:
        """The error that moved the session to FAILED, if any."""
        return self._failure

    def _start_initiate(self) -> None:
        if self.role is not Role.CLIENT:
            raise SessionStateError("only a client initiates the handshake")
        if self._state is not SessionState.IDLE:
            raise SessionStateError(f"the handshake was already initiated ({self._state.value})")
        self._state = SessionState.HANDSHAKING
        self._advance()

    def _advance(self) -> None:
        # SSL_do_handshake directly: "want read", the usual outcome, is no exception
        ssl = self._conn._ssl  # noqa: SLF001 - pyOpenSSL raises on every flight otherwise
        result = _lib.SSL_do_handshake(ssl)
        if result <= 0:
            if _lib.SSL_get_error(ssl, result) == _lib.SSL_ERROR_WANT_READ:
                return
            try:
                self._conn._raise_ssl_error(ssl, result)  # noqa: SLF001 - its typed error
            except SSL.WantReadError:
                return
            except SSL.Error as exc:
                raise self._fail(exc) from None
        alpn = self._conn.get_alpn_proto_negotiated()
        self._info = SessionInfo(
            role=self.role,
            version=self._conn.get_protocol_version_name(),
            cipher=self._conn.get_cipher_name() or "",
            server_name=self.expected_name,
            _chain=self._cached_peer_chain,
            alpn=alpn.decode("ascii", "replace") if alpn else None,
            group=_group_name(self._conn),
        )
        self._state = SessionState.ESTABLISHED
        if self.context.config.on_established is not None:
            self.context.config.on_established(self)

    def _cached_peer_chain(self) -> tuple[x509.Certificate, ...]:
        if self._chain is None:
            self._chain = self._peer_chain()
        return self._chain

    def _peer_chain(self) -> tuple[x509.Certificate, ...]:
        # A server's SSL_get_peer_cert_chain omits the client's leaf; rebuild it.
        leaf = self._conn.get_peer_certificate(as_cryptography=True)
        if leaf is None:
            return ()
        rest = self._conn.get_peer_cert_chain(as_cryptography=True) or []
        return (leaf, *[c for c in rest if c != leaf])

    def _read_application_data(self) -> list[Event]:
        # SSL_read directly: "want read", the usual end, is no exception
        ssl = self._conn._ssl  # noqa: SLF001
        buffer = _new_read_buffer("char[]", _READ_CHUNK)
        events: list[Event] = []
        chunks: list[bytes] = []
        closed = False
        while True:
            result = _lib.SSL_read(ssl, buffer, _READ_CHUNK)
            if result > 0:
                chunks.append(_ffi.buffer(buffer, result)[:])
                continue
            error = _lib.SSL_get_error(ssl, result)
            if error == _lib.SSL_ERROR_WANT_READ:
                break
            if error == _lib.SSL_ERROR_ZERO_RETURN:
                closed = True
                break
            try:
                self._conn._raise_ssl_error(ssl, result)  # noqa: SLF001 - its typed error
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:
                closed = True
                break
            except SSL.Error as exc:
                raise self._fail(exc) from None
            break
        if chunks:
            events.append(ApplicationData(b"".join(chunks)))
        if closed:
            self._state = SessionState.CLOSED
            events.append(CloseNotify())
        return events

    def _fail(self, exc: SSL.Error) -> TLSAlertError:
        reason = _openssl_reason(exc)
        if self._verify_failure is None:
            self._verify_failure = self._verify_result()
        if self._verify_failure:
            reason = self._verify_failure
        origin: Literal["local", "peer"] | None = None
        alert = self._alert_received or self._alert_sent
        if self._alert_received:
            origin = "peer"
        elif self._alert_sent:
            origin = "local"
        error = TLSAlertError(reason, alert=alert, origin=origin)
        error.data_to_send = self._owed()
        self._failure = error
        self._state = SessionState.FAILED
        return error

    def _verify_result(self) -> str | None:
        """Why certificate verification failed, from OpenSSL's verify result (or None)."""
        code = _lib.SSL_get_verify_result(self._conn._ssl)  # noqa: SLF001
        if code == 0:
            return None
        what = _VERIFY_ERRORS.get(code, f"X509 verify error {code}")
        if code in _NAME_MISMATCH:
            what = f"certificate does not match the expected name {self.expected_name!r}"
        try:
            leaf = self._conn.get_peer_certificate(as_cryptography=True)
            subject = leaf.subject.rfc4514_string() if leaf is not None else None
        except Exception:  # noqa: BLE001 - a peer certificate that does not decode
            subject = None
        return f"{what} (peer: {subject})" if subject else what

    def _owed(self) -> bytes:
        """Records produced and not yet handed out (an alert, after a failure)."""
        return self._drain()

    def _check_usable(self) -> None:
        if self._state is SessionState.FAILED:
            raise SessionStateError(f"session already failed: {self._failure or 'bad input'}")

    # -- application data ---------------------------------------------------

    def send(self, data: bytes) -> None:
        """Encrypt application data; the records appear in ``data_to_send``."""
        self._check_usable()
        if self._state is not SessionState.ESTABLISHED:
            raise SessionStateError(f"application data in state {self._state.value}")
        view = memoryview(data)
        while view:
            try:
                written = self._conn.send(view[: self._write_chunk])
            except SSL.Error as exc:
                raise self._fail(exc) from None
            view = view[written:]

    def close(self) -> None:
        """Queue a close_notify alert (in ``data_to_send``) and move to CLOSED."""
        if self._state in (SessionState.FAILED, SessionState.IDLE):
            return
        try:
            self._conn.shutdown()
        except SSL.Error:
            pass
        self._state = SessionState.CLOSED

    def _drain(self) -> bytes:
        # Read what the memory BIO holds, sized exactly: a fixed 256 KiB read
        # buffer is an mmap and munmap per call (above malloc's threshold).
        # (BIO_get_mem_data is the length a memory BIO holds; the binding has no
        # BIO_ctrl_pending)
        pending = _lib.BIO_get_mem_data(self._conn._from_ssl, _ffi.NULL)  # noqa: SLF001
        if pending <= 0:
            return b""
        chunks = []
        while pending > 0:
            try:
                chunk = self._conn.bio_read(min(pending, _DRAIN_CHUNK))
            except SSL.WantReadError:
                break
            chunks.append(chunk)
            pending -= len(chunk)
        return b"".join(chunks)

    # -- key export ---------------------------------------------------------

    def export_keying_material(
        self, label: str | bytes, length: int, context: bytes | None = None
    ) -> bytes:
        """RFC 5705 / RFC 8446 section 7.5 exporter.

        ``context=None`` is an *absent* context; ``b""`` is an *empty* one.
        They give different bytes in TLS 1.2 and DTLS 1.2 (identical in TLS 1.3).
        """
        if not self.handshake_complete:
            raise SessionStateError("keying material is exported only after the handshake")
        if isinstance(label, str):
            label = label.encode("ascii")
        return self._conn.export_keying_material(label, length, context)


class ATLSSession(TLSSessionBase):
    """One TLS session whose records travel in application-layer messages."""

    def __init__(self, context: TLSContext, *, server_name: str | None = None) -> None:
        super().__init__(context, server_name=server_name)
        self._peeked = b""

    def initiate(self) -> bytes:
        """Client only: start the handshake and return the first flight."""
        self._start_initiate()
        return self.data_to_send()

    def receive_flight(self, flight: bytes) -> list[Event]:
        """Feed one whole flight from the peer and process it.

        Raises NotTLSError for bytes that are not TLS records and
        IncompleteFlightError for a flight that ends mid-record: both are
        checked before TLS sees a byte, so they leave the session as it was.
        A flight that leaves the handshake stalled with nothing to answer
        (IncompleteFlightError) and anything TLS rejects (TLSAlertError) move
        the session to FAILED.
        """
        self._check_usable()
        if not flight:
            raise IncompleteFlightError("empty flight")
        check_records(flight)
        was_complete = self.handshake_complete
        events = self.receive_data(flight)
        if not was_complete and not self.handshake_complete and not self._outgoing_pending():
            self._state = SessionState.FAILED
            raise IncompleteFlightError(
                "the flight did not complete a handshake step (truncated, reordered or partial)"
            )
        return events

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed raw bytes (any split) and return the events they produced."""
        self._check_usable()
        if self._state is SessionState.IDLE:
            if self.role is Role.CLIENT:
                raise SessionStateError("call initiate() before receiving data")
            self._state = SessionState.HANDSHAKING
        if not data:
            # nothing to feed (pyOpenSSL raises WantReadError on an empty write);
            # found by cutting a flight at every record boundary (issue #12)
            return []
        self._conn.bio_write(data)
        events: list[Event] = []
        if self._info is None:
            self._advance()
            if self._info is None:
                return events
            events.append(HandshakeComplete(self._info))
        events.extend(self._read_application_data())
        return events

    def _owed(self) -> bytes:
        return self.data_to_send()

    def _outgoing_pending(self) -> bool:
        """Whether records wait to be sent (read early, kept for data_to_send)."""
        self._peeked += self._drain()
        return bool(self._peeked)

    def data_to_send(self) -> bytes:
        """Every record this side has produced since the last call: one flight."""
        data = self._peeked + self._drain()
        self._peeked = b""
        return data


def check_records(data: bytes) -> None:
    """Whole TLS or DTLS records, checked before OpenSSL sees a byte."""
    try:
        _records.check_records(data)
    except TruncatedRecord as exc:
        raise IncompleteFlightError(f"flight is truncated: {exc}") from None
    except RecordError as exc:
        raise NotTLSError(f"not TLS: {exc}") from None


def _group_name(conn: SSL.Connection) -> str | None:
    """The negotiated key-exchange group (e.g. 'secp256r1', 'X25519MLKEM768')."""
    try:
        from OpenSSL._util import ffi, lib  # noqa: PLC0415 - private, optional

        name = lib.SSL_get0_group_name(conn._ssl)  # type: ignore[attr-defined]
    except (ImportError, AttributeError):
        return None
    return ffi.string(name).decode() if name != ffi.NULL else None


def _openssl_reason(exc: SSL.Error) -> str:
    parts: Sequence[object] = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
    reasons = [str(p[2]) for p in parts if isinstance(p, tuple) and len(p) >= 3 and p[2]]
    return "; ".join(reasons) or str(exc) or type(exc).__name__
