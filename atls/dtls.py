"""A sans-I/O DTLS 1.2 session: pyOpenSSL's DTLS over memory BIOs.

The same surface as ``atls.session.ATLSSession`` (``initiate``,
``receive_flight``, ``data_to_send``, ``state``, ``info``, ``send``,
``close``, ``export_keying_material``; the same errors, events and states),
with what datagrams need on top:

- **Datagram boundaries.** A memory BIO keeps none, so the session splits its
  output by record headers (13 bytes in DTLS) and packs whole records into
  datagrams of at most ``mtu`` bytes (``data_to_send`` returns the list).
  Input is fed one datagram at a time (``receive_datagrams``); a body that
  carries several (HTTP) is split by record headers, one record per
  datagram, so a bad record can only ever cost itself.
- **Retransmission, sans I/O.** ``next_timeout()`` says in how many seconds
  the handshake timer fires (None: no timer running); when it has fired and
  no answer came, the adapter calls ``handle_timeout()`` and sends
  ``data_to_send()`` again (OpenSSL's RFC 6347 timer: 1 s, doubling, 60 s
  cap). An adapter whose transport is reliable itself (HTTP; CoAP CON) must
  leave the timer alone, or flights are retransmitted twice.
- **HelloVerifyRequest** (RFC 6347 section 4.2.1) on the server: the first
  ClientHello gets a stateless cookie challenge (HMAC of the client's
  address and a time slot under the context's secret); only a ClientHello
  that returns a valid cookie reaches the handshake. The challenge needs no
  state, so a server can answer it from a throwaway session
  (``hello_verified`` stays False) and open a real one for the second
  ClientHello: ``atls.server`` does exactly that.
- **Forged and replayed records are dropped silently**, as DTLS's record layer
  does (RFC 6347 section 4.1.2.7): bad MAC, old epoch or a sequence number
  already seen in the replay window raise nothing and produce no event; the
  session goes on. That is the robustness TLS records lack.

DTLS 1.3 (RFC 9147) is in no stack installable here: OpenSSL 4.0 (bundled
with pyOpenSSL/cryptography) has DTLS 1.2 only, so every DTLS session is
DTLS 1.2; a ``TLSConfig`` whose floor is TLS 1.3 makes no DTLS context.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable

from OpenSSL import SSL

from .config import Role, TLSConfig, TLSVersion
from .errors import IncompleteFlightError, SessionStateError
from .events import ApplicationData, Event, HandshakeComplete, SessionState
from .records import iter_records
from .session import ATLSSession, TLSContext, TLSSessionBase, check_records, configure_context

__all__ = [
    "DEFAULT_MTU",
    "AnySession",
    "DTLSContext",
    "DTLSSession",
    "pack_datagrams",
    "split_records",
]

# CoAP's guideline for a message that fits an IPv6 minimum MTU (RFC 7252 4.6):
# 1152 bytes in all, 1024 of payload.
DEFAULT_MTU = 1024
_COOKIE_SLOT = 60.0  # seconds a HelloVerifyRequest cookie stays valid (one slot back too)
_COOKIE_LEN = 16


class DTLSContext(TLSContext):
    """A built DTLS 1.2 context: the same identity, trust, suites, groups and ALPN.

    ``tls12_cipher_list`` from the config selects the DTLS suites. ``cookies``
    (server only): send HelloVerifyRequest before any handshake state.
    """

    datagram = True

    def __init__(
        self,
        config: TLSConfig,
        *,
        mtu: int = DEFAULT_MTU,
        cookies: bool = True,
        cookie_secret: bytes | None = None,
    ) -> None:
        if mtu < 256:
            raise ValueError("a DTLS MTU below 256 bytes cannot carry a handshake")
        if config.min_version > TLSVersion.TLS1_2:
            raise ValueError(
                f"DTLS here is DTLS 1.2 only; these settings ask for TLS {config.min_version.label}"
                " or newer"
            )
        self.config = config
        self.mtu = mtu
        self.cookies = cookies and config.role is Role.SERVER
        self._cookie_secret = cookie_secret or secrets.token_bytes(32)
        ctx = SSL.Context(SSL.DTLS_METHOD)
        ctx.set_min_proto_version(int(TLSVersion.DTLS1_2))
        ctx.set_max_proto_version(int(TLSVersion.DTLS1_2))
        configure_context(ctx, config)
        # the MTU is ours to set: a memory BIO cannot be asked for one
        ctx.set_options(SSL.OP_NO_QUERY_MTU)
        if self.cookies:
            assert SSL.OP_COOKIE_EXCHANGE is not None, "this OpenSSL has no DTLS cookies"
            ctx.set_options(SSL.OP_COOKIE_EXCHANGE)
            ctx.set_cookie_generate_callback(self._generate_cookie)
            ctx.set_cookie_verify_callback(self._verify_cookie)
        self.ssl_context = ctx

    def cookie_for(self, client_id: str, slot: int | None = None) -> bytes:
        if slot is None:
            slot = int(time.time() // _COOKIE_SLOT)
        message = f"{client_id}|{slot}".encode()
        return hmac.new(self._cookie_secret, message, hashlib.sha256).digest()[:_COOKIE_LEN]

    def _generate_cookie(self, conn: SSL.Connection) -> bytes:
        return self.cookie_for(_client_id(conn))

    def _verify_cookie(self, conn: SSL.Connection, cookie: bytes) -> bool:
        client_id = _client_id(conn)
        now = int(time.time() // _COOKIE_SLOT)
        slots = (now, now - 1)
        return any(hmac.compare_digest(cookie, self.cookie_for(client_id, s)) for s in slots)


def _client_id(conn: SSL.Connection) -> str:
    session = conn.get_app_data()
    return session.client_id if isinstance(session, DTLSSession) else ""


class DTLSSession(TLSSessionBase):
    """One DTLS 1.2 session whose datagrams travel in application-layer messages."""

    def __init__(
        self,
        context: DTLSContext,
        *,
        server_name: str | None = None,
        mtu: int | None = None,
        client_id: str = "",
    ) -> None:
        super().__init__(context, server_name=server_name)
        self.mtu = mtu or context.mtu
        self.client_id = client_id  # what a server's cookie binds: the peer's address
        self._conn.set_ciphertext_mtu(self.mtu)
        self._hello_verified = not (context.cookies and self.role is Role.SERVER)
        self.retransmissions = 0

    @property
    def hello_verified(self) -> bool:
        """Server: a ClientHello came back with a valid cookie (the handshake is under way)."""
        return self._hello_verified

    # -- driving the handshake ----------------------------------------------

    def initiate(self) -> list[bytes]:
        """Client only: start the handshake and return the first flight's datagrams."""
        self._start_initiate()
        return self.data_to_send()

    def receive_flight(self, flight: bytes) -> list[Event]:
        """Feed a body of whole DTLS records (one or more datagrams); events come back.

        Records are checked first (NotTLSError, IncompleteFlightError leave the
        session as it was), then fed one per datagram. Unlike TLS, a flight
        that makes no progress is no error: DTLS dropped it (forged, replayed,
        out of order) and the session goes on.
        """
        self._check_usable()
        if not flight:
            raise IncompleteFlightError("empty flight")
        check_records(flight)
        return self.receive_datagrams(split_records(flight))

    receive_data = receive_flight

    def receive_datagrams(self, datagrams: Iterable[bytes]) -> list[Event]:
        """Feed datagrams as they arrived; forged, replayed or stray ones are dropped."""
        self._check_usable()
        if self._state is SessionState.IDLE:
            if self.role is Role.CLIENT:
                raise SessionStateError("call initiate() before receiving data")
            self._state = SessionState.HANDSHAKING
        events: list[Event] = []
        for datagram in datagrams:
            if not datagram or self._state in (SessionState.CLOSED, SessionState.FAILED):
                continue
            self._conn.bio_write(datagram)
            if not self._hello_verified and not self._listen():
                continue
            if self._info is None:
                self._advance()
                if self._info is None:
                    continue
                events.append(HandshakeComplete(self._info))
            events.extend(self._read_application_data())
        return _coalesce(events)

    def _listen(self) -> bool:
        """Server with cookies: answer HelloVerifyRequest until a ClientHello proves its cookie."""
        try:
            self._conn.DTLSv1_listen()
        except SSL.WantReadError:
            return False  # a HelloVerifyRequest is in data_to_send (or the datagram was dropped)
        except SSL.Error as exc:
            raise self._fail(exc) from None
        self._hello_verified = True
        return True

    # -- the retransmission timer (RFC 6347 section 4.2.4) --------------------

    def next_timeout(self) -> float | None:
        """Seconds until ``handle_timeout`` is due; None while no timer runs."""
        if self._state in (SessionState.FAILED, SessionState.CLOSED):
            return None
        return self._conn.DTLSv1_get_timeout()

    def handle_timeout(self) -> bool:
        """Call when the timer has fired: True if a flight is to be sent again."""
        self._check_usable()
        try:
            fired = self._conn.DTLSv1_handle_timeout()
        except SSL.Error as exc:
            raise self._fail(exc) from None
        if fired:
            self.retransmissions += 1
        return fired

    # -- output ---------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Encrypt application data: one record per datagram-sized piece."""
        if self._state is SessionState.ESTABLISHED:
            self._write_chunk = max(1, self._conn.get_cleartext_mtu())
        super().send(data)

    def data_to_send(self) -> list[bytes]:
        """The datagrams produced since the last call, whole records of at most ``mtu``."""
        return pack_datagrams(self._drain(), self.mtu)


# A TLS or a DTLS session: what the server driver, the store and key export take.
AnySession = ATLSSession | DTLSSession


def _coalesce(events: list[Event]) -> list[Event]:
    """One ApplicationData per call, as a TLS session gives (datagrams are no messages)."""
    data = [e.data for e in events if isinstance(e, ApplicationData)]
    if len(data) < 2:
        return events
    merged: list[Event] = []
    for event in events:
        if isinstance(event, ApplicationData):
            if data:
                merged.append(ApplicationData(b"".join(data)))
                data = []
        else:
            merged.append(event)
    return merged


def split_records(data: bytes) -> list[bytes]:
    """Each record of ``data`` as its own bytes (the body must be whole records)."""
    pieces = []
    offset = 0
    for record in iter_records(data):
        pieces.append(data[offset : offset + record.wire_length])
        offset += record.wire_length
    return pieces


def pack_datagrams(data: bytes, mtu: int) -> list[bytes]:
    """Whole records packed in order into datagrams of at most ``mtu`` bytes.

    A record larger than ``mtu`` (only if the peer asked for more) goes alone.
    """
    datagrams: list[bytes] = []
    current = b""
    for record in split_records(data):
        if current and len(current) + len(record) > mtu:
            datagrams.append(current)
            current = b""
        current += record
    if current:
        datagrams.append(current)
    return datagrams
