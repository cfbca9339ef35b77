"""Events and states of an ATLS session, shared by TLS and DTLS sessions.

A session moves ``IDLE -> HANDSHAKING -> ESTABLISHED -> CLOSED``; any error
moves it to ``FAILED``, from which nothing more is accepted.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .config import Role


class SessionState(enum.Enum):
    IDLE = "idle"  # created, nothing sent or received
    HANDSHAKING = "handshaking"
    ESTABLISHED = "established"
    CLOSED = "closed"  # the peer sent close_notify, or we closed
    FAILED = "failed"  # a TLS alert or another fatal error


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """What both ends can state about an established session.

    The peer chain is converted from the TLS stack only when first asked for:
    most handshakes never need more than the leaf's subject.
    """

    role: Role
    version: str
    cipher: str
    server_name: str | None
    _chain: Callable[[], tuple[x509.Certificate, ...]] = field(repr=False, compare=False)
    alpn: str | None = None  # the application protocol both agreed on, if any
    group: str | None = None  # the key-exchange group, e.g. secp256r1 or X25519MLKEM768

    @property
    def peer_chain(self) -> tuple[x509.Certificate, ...]:
        return self._chain()

    def detached(self) -> SessionInfo:
        """The same facts holding no TLS object: the peer's leaf certificate as DER.

        A key-export session outlives its TLS object; it keeps ~0.5 KB of DER
        and parses it when a handler asks (the CA above the leaf is the
        verifier's own anchor, so it is not kept).
        """
        leaf = self.peer_certificate
        if leaf is None:
            return dataclasses.replace(self, _chain=tuple)
        der = leaf.public_bytes(serialization.Encoding.DER)
        return dataclasses.replace(self, _chain=lambda: (x509.load_der_x509_certificate(der),))

    @property
    def peer_certificate(self) -> x509.Certificate | None:
        chain = self.peer_chain
        return chain[0] if chain else None

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
