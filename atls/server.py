"""The server half of ATLS, sans I/O and independent of the transport.

In the style of h11's ``Connection``: an adapter (the HTTP endpoint, a CoAP
resource, an interop wrapper) reads one message, hands the driver the
session handle it carried (or none), how the body is coded and the bytes, and
gets back one outcome:

- ``Reply``: bytes to answer with, their coding, and the session's handle
  (new on a session's first message);
- ``ApplicationRequest``: an inner request decrypted from the session; the
  adapter serves it and passes the answer to ``respond`` for a ``Reply``;
- ``Refused``: a ``Refusal`` with a ``Reason``; the adapter maps the reason
  to its transport's codes and, where it can, says why.

Rules the driver enforces for every transport:
- a message without a handle must be a ClientHello: anything else is refused
  before any state exists, so it takes no slot;
- a session's mode (records or key export) is fixed when it is created; in
  key-export mode no message reaches the TLS object after the handshake, so
  no unauthenticated message (a forged record, a plaintext alert, a second
  ClientHello, a replayed flight) can end the session: it is refused, and the
  session goes on. In records mode TLS treats a bad record as fatal;
- a failed handshake ends its session; a closed session is forgotten at once.

DTLS records in the body (a DTLS ClientHello starts the session: the record
layer itself states the choice, so it cannot disagree with a header) run a
``DTLSSession`` instead, as the slides propose for transport reliability:
- a first ClientHello gets a HelloVerifyRequest from a throwaway session, so a
  spoofed or flooding client costs no slot; the ClientHello that returns the
  cookie (again without a handle) opens the session;
- in records mode a forged or replayed record is dropped by DTLS's record
  layer; the answer is an empty reply and the session goes on;
- the driver never runs the DTLS retransmission timer: the client's request
  is the trigger. A carrier failure restarts the handshake (the same bytes
  posted again would be a DTLS replay, dropped); an answer that arrived
  damaged makes the client's DTLS timer resend its flight in fresh records,
  which DTLS here answers with its flight again. No flight is ever sent by two
  timers. Over CoAP, DTLS records go in NON messages with the DTLS timer, or
  CON without it: never both.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass

from .config import Mode, TLSVersion
from .dtls import AnySession, DTLSContext, DTLSSession
from .errors import (
    IncompleteFlightError,
    NotTLSError,
    Reason,
    Refusal,
    TLSAlertError,
)
from .events import ApplicationData, CloseNotify, Event, SessionInfo
from .identity import peer_identity
from .keys import ExporterSettings, UnsupportedSuiteError
from .protection import ProtectionError, ReplayError, ServerProtector, start_key_export
from .records import ContentType, HandshakeType, RecordError, TruncatedRecord, iter_records
from .session import ATLSSession, TLSContext
from .store import SessionEntry, SessionStore


class Coding(enum.Enum):
    """How a message body is coded."""

    TLS = "tls"  # TLS records: a handshake flight, or records-mode data
    PROTECTED = "aes128gcm"  # RFC 8188, keyed from the exporter (key-export mode)


@dataclass(frozen=True)
class Reply:
    """Bytes to answer with. ``new_session``: the adapter hands out the handle.

    ``entry`` is None only for a DTLS HelloVerifyRequest, which keeps no state.
    """

    entry: SessionEntry | None
    body: bytes
    coding: Coding = Coding.TLS
    new_session: bool = False
    established: bool = False  # this message completed the handshake
    closed: bool = False  # the session ended with this message

    @property
    def handle(self) -> str:
        if self.entry is None:
            raise ValueError("a stateless reply names no session")
        return self.entry.token


@dataclass(frozen=True)
class ApplicationRequest:
    """Inner request bytes to serve; pass the answer to ``ServerDriver.respond``."""

    entry: SessionEntry
    data: bytes
    preamble: bytes = b""  # records owed before the answer (the handshake's last flight)
    seq: int | None = None  # key-export mode: the request's sequence number
    new_session: bool = False
    established: bool = False

    @property
    def mode(self) -> Mode:
        return self.entry.mode

    @property
    def info(self) -> SessionInfo:
        assert self.entry.info is not None
        return self.entry.info


@dataclass(frozen=True)
class Refused:
    """The message was refused. ``entry`` is the session it named, if any."""

    refusal: Refusal
    entry: SessionEntry | None = None
    session_ended: bool = False


Outcome = Reply | ApplicationRequest | Refused


class ServerDriver:
    """Runs every server-side ATLS session of one service."""

    def __init__(
        self,
        tls: TLSContext,
        store: SessionStore | None = None,
        exporter: ExporterSettings | None = None,
        dtls: DTLSContext | None = None,
    ) -> None:
        self.tls = tls
        self.store = store or SessionStore()
        self.exporter = exporter or ExporterSettings()
        # DTLS sessions share the TLS settings (identity, trust, suites, groups); DTLS
        # here is 1.2 only, so a service whose floor is TLS 1.3 takes no DTLS at all
        if dtls is None and tls.config.min_version <= TLSVersion.TLS1_2:
            dtls = DTLSContext(tls.config)
        self.dtls = dtls

    # -- input ------------------------------------------------------------------

    def receive(
        self,
        handle: str | None,
        coding: Coding,
        body: bytes,
        *,
        client: str,
        mode: Mode = Mode.RECORDS,
    ) -> Outcome:
        """Process one message. ``mode`` counts only for a new session (no handle)."""
        if len(body) > self.store.limits.max_flight_bytes:
            return Refused(too_large(len(body), self.store.limits.max_flight_bytes))
        if handle is None:
            return self._start(coding, body, client, mode)
        try:
            entry = self.store.get(handle)
        except Refusal as refusal:
            return Refused(refusal)
        entry.flights += 1
        if not entry.established:
            return self._handshake(entry, coding, body)
        if entry.mode is Mode.EXPORT:
            return self._export_message(entry, coding, body)
        return self._records_message(entry, coding, body)

    def respond(self, request: ApplicationRequest, response: bytes) -> Reply:
        """Protect the answer to an ``ApplicationRequest``."""
        entry = request.entry
        if request.seq is not None:
            assert entry.protector is not None
            body = entry.protector.seal_response(request.seq, response)
            return Reply(entry, body, Coding.PROTECTED, request.new_session, request.established)
        session = entry.session
        if session is None or session.failed:
            # the session ended while the request was served: nothing can carry the answer
            return Reply(entry, request.preamble, closed=True)
        session.send(response)
        body = request.preamble + _wire(session)
        return Reply(entry, body, new_session=request.new_session, established=request.established)

    # -- handshake ----------------------------------------------------------------

    def _start(self, coding: Coding, body: bytes, client: str, mode: Mode) -> Outcome:
        """A message without a handle: it must be a ClientHello, or nothing is created."""
        if coding is not Coding.TLS:
            return Refused(
                Refusal(
                    Reason.NO_HANDSHAKE_TO_START,
                    "a protected message arrived without a session handle; "
                    "a new session starts with a ClientHello",
                    title="no session to continue",
                )
            )
        not_hello = _not_a_client_hello(body)
        if isinstance(not_hello, Refusal):
            return Refused(not_hello)
        if not_hello == "dtls":
            if self.dtls is None:
                return Refused(
                    Refusal(
                        Reason.NO_HANDSHAKE_TO_START,
                        "this service takes TLS 1.3 and up; DTLS here is DTLS 1.2 only",
                        title="DTLS not accepted",
                    )
                )
            return self._start_dtls(body, client, mode)
        try:
            entry = self.store.open(ATLSSession(self.tls), client, mode)
        except Refusal as refusal:
            return Refused(refusal)
        entry.flights = 1
        outcome = self._handshake(entry, coding, body)
        if isinstance(outcome, Reply | ApplicationRequest):
            return dataclasses.replace(outcome, new_session=True)
        return outcome

    def _start_dtls(self, body: bytes, client: str, mode: Mode) -> Outcome:
        """A DTLS ClientHello: challenge it statelessly; a proven one opens the session."""
        assert self.dtls is not None
        session = DTLSSession(self.dtls, client_id=client)
        try:
            events = session.receive_flight(body)
        except (TLSAlertError, NotTLSError, IncompleteFlightError) as exc:
            return Refused(_refusal_for(exc))
        if not session.hello_verified:
            # a HelloVerifyRequest (or nothing, for a hello DTLS dropped): no state kept
            return Reply(None, _wire(session))
        try:
            entry = self.store.open(session, client, mode)
        except Refusal as refusal:
            return Refused(refusal)
        entry.flights = 1
        outcome = self._progress(entry, session, events)
        if isinstance(outcome, Reply | ApplicationRequest):
            return dataclasses.replace(outcome, new_session=True)
        return outcome

    def _handshake(self, entry: SessionEntry, coding: Coding, body: bytes) -> Outcome:
        if coding is Coding.PROTECTED:
            return Refused(
                Refusal(
                    Reason.HANDSHAKE_NOT_FINISHED,
                    "a protected (aes128gcm) message arrived before the handshake ended",
                    title="ATLS handshake not finished",
                ),
                entry,
            )
        session = entry.session
        assert session is not None
        try:
            events = session.receive_flight(body)
        except (TLSAlertError, NotTLSError, IncompleteFlightError) as exc:
            self.store.remove(entry, _failure_name(exc))
            return Refused(_refusal_for(exc), entry, session_ended=True)
        return self._progress(entry, session, events)

    def _progress(self, entry: SessionEntry, session: AnySession, events: list[Event]) -> Outcome:
        """The answer to a handshake flight the session has processed."""
        out = _wire(session)
        if not session.handshake_complete:
            return Reply(entry, out)
        try:
            self._established(entry, session)
        except UnsupportedSuiteError as exc:
            self.store.remove(entry, "no key export for the suite")
            return Refused(
                Refusal(Reason.EXPORT_UNAVAILABLE, str(exc), title="key export unavailable"),
                entry,
                session_ended=True,
            )
        data = b"".join(e.data for e in events if isinstance(e, ApplicationData))
        if data and entry.mode is Mode.RECORDS:
            # TLS 1.3 lets a client send its first request with its Finished
            entry.requests += 1
            return ApplicationRequest(entry, data, preamble=out, established=True)
        return Reply(entry, out, established=True)

    def _established(self, entry: SessionEntry, session: AnySession) -> None:
        entry.keys, protector = start_key_export(session, self.exporter, entry.mode)
        info = session.info
        self.store.promote(entry, peer_identity(info.peer_certificate))
        if entry.mode is Mode.EXPORT:
            # TLS has done its job: keep what protection needs, not the TLS object
            assert isinstance(protector, ServerProtector)
            entry.protector = protector
            entry.info = info.detached()
            entry.session = None
        else:
            entry.info = info

    # -- after the handshake --------------------------------------------------------

    def _export_message(self, entry: SessionEntry, coding: Coding, body: bytes) -> Outcome:
        if coding is not Coding.PROTECTED:
            return Refused(
                Refusal(
                    Reason.WRONG_MODE,
                    "this is a key-export session: after the handshake it takes only "
                    "protected (aes128gcm) messages; the message was not passed to TLS "
                    "and the session goes on",
                    title="message not protected",
                ),
                entry,
            )
        assert entry.protector is not None
        try:
            seq, plaintext = entry.protector.open_request(body)
        except ReplayError as exc:
            return Refused(Refusal(Reason.REPLAYED, str(exc), title="replayed message"), entry)
        except ProtectionError as exc:
            return Refused(
                Refusal(Reason.PROTECTION_FAILED, str(exc), title="protected message rejected"),
                entry,
            )
        if not plaintext:  # an authenticated, empty message: the client closes the session
            self.store.remove(entry, "closed by client")
            sealed = entry.protector.seal_response(seq, b"")
            return Reply(entry, sealed, Coding.PROTECTED, closed=True)
        entry.requests += 1
        return ApplicationRequest(entry, plaintext, seq=seq)

    def _records_message(self, entry: SessionEntry, coding: Coding, body: bytes) -> Outcome:
        if coding is not Coding.TLS:
            return Refused(
                Refusal(
                    Reason.WRONG_MODE,
                    "this is a records-mode session: it takes TLS records, not protected "
                    "(aes128gcm) messages",
                    title="message coded for the other mode",
                ),
                entry,
            )
        session = entry.session
        assert session is not None
        try:
            events = session.receive_flight(body)
        except (NotTLSError, IncompleteFlightError) as exc:  # rejected before TLS saw it
            return Refused(_refusal_for(exc), entry)
        except TLSAlertError as exc:
            self.store.remove(entry, "tls failure")
            return Refused(_refusal_for(exc), entry, session_ended=True)
        data = b"".join(e.data for e in events if isinstance(e, ApplicationData))
        if any(isinstance(e, CloseNotify) for e in events):
            session.close()
            self.store.remove(entry, "closed by client")
            return Reply(entry, _wire(session), closed=True)
        if not data:
            # nothing for the application: in DTLS, also a forged or replayed record dropped
            return Reply(entry, _wire(session))
        entry.requests += 1
        return ApplicationRequest(entry, data, preamble=_wire(session))


def _wire(session: AnySession) -> bytes:
    """What the session has to send, as one body (a DTLS session's datagrams in order)."""
    out = session.data_to_send()
    return out if isinstance(out, bytes) else b"".join(out)


def _not_a_client_hello(body: bytes) -> Refusal | str:
    """Why a handle-less body cannot start a handshake, or "tls"/"dtls" when it can."""
    try:
        first = next(iter_records(body), None)
    except TruncatedRecord as exc:
        return _refusal_for(IncompleteFlightError(f"flight is truncated: {exc}"))
    except RecordError as exc:
        return _refusal_for(NotTLSError(f"not TLS: {exc}"))
    if first is None:
        return _refusal_for(IncompleteFlightError("empty flight"))
    if (
        first.content_type != ContentType.HANDSHAKE
        or first.payload[:1] != bytes([HandshakeType.CLIENT_HELLO])
        or (first.dtls and first.epoch != 0)
    ):
        return Refusal(
            Reason.NO_HANDSHAKE_TO_START,
            "a message without a session handle must start a handshake (a TLS ClientHello); "
            "send the session's handle with anything else",
            title="not a ClientHello",
        )
    return "dtls" if first.dtls else "tls"


def too_large(size: int, limit: int) -> Refusal:
    """The refusal for a body over the limit (adapters refuse before reading it all)."""
    return Refusal(
        Reason.FLIGHT_TOO_LARGE,
        f"the body has at least {size} bytes; this service accepts {limit}",
        title="ATLS message too large",
        extra={"max_bytes": limit},
    )


def _failure_name(exc: Exception) -> str:
    if isinstance(exc, TLSAlertError):
        return "tls failure"
    return "not tls" if isinstance(exc, NotTLSError) else "incomplete flight"


def _refusal_for(exc: TLSAlertError | NotTLSError | IncompleteFlightError) -> Refusal:
    if isinstance(exc, TLSAlertError):
        extra: dict[str, object] = {"tls_alert": exc.alert, "tls_alert_origin": exc.origin}
        if exc.data_to_send:
            extra["tls_flight"] = exc.data_to_send
        return Refusal(Reason.TLS_ALERT, exc.reason, title="TLS rejected the flight", extra=extra)
    if isinstance(exc, NotTLSError):
        return Refusal(Reason.NOT_TLS, str(exc), title="body is not TLS")
    return Refusal(Reason.INCOMPLETE_FLIGHT, str(exc), title="incomplete TLS flight")
