"""OSCORE (RFC 8613) keyed from an ATLS session's exporter (-04 section 9).

- Master Secret and Master Salt: the two halves of the export
  (``atls.keys.export_keys``: label ``application-layer-tls`` by default, a
  setting; draft -05's source uses ``atls-oscore``), sized for the suite's AEAD;
- AEAD: the negotiated TLS suite's, through the suite-to-COSE table in
  ``atls.keys`` (TLS_AES_128_CCM_8_SHA256 -> AES-CCM-16-64-128,
  TLS_AES_128_GCM_SHA256 -> A128GCM, ...);
- HKDF SHA-256, no ID Context, replay window 32;
- Sender and Recipient IDs: the draft takes them from an
  ``oscore_connection_id`` TLS extension, which no common TLS stack lets an
  application add (pyOpenSSL, Go, Node, ... have no hook for a custom
  ClientHello extension). Here each end states the ID *it wants to receive
  with* (its Recipient ID) inside the established ATLS session, in one
  request/response protected by the session (``/oscore/ids``); each end's
  Sender ID is the other's Recipient ID, as with the extension.

The context is aiocoap's own machinery (``CanProtect``, ``CanUnprotect``,
``SecurityContextUtils``), built in code the way aiocoap builds its EDHOC
contexts; ``authenticated_claims`` carries the peer's identity from the TLS
handshake, which aiocoap passes to resources as ``request.remote.authenticated_claims``
(aiocoap does no access control by itself: each resource checks).
"""

from __future__ import annotations

from collections.abc import Iterable

from aiocoap import oscore

from .keys import ExportedKeys

REPLAY_WINDOW = 32
MAX_ID_LENGTH = 7  # nonce length 13 (CCM) - 6: the longest ID every AEAD here takes


class OSCOREContextError(ValueError):
    """IDs or keys that cannot make a context."""


class ATLSSecurityContext(oscore.CanProtect, oscore.CanUnprotect, oscore.SecurityContextUtils):
    """An OSCORE security context derived from exported ATLS keys (not persisted)."""

    def __init__(
        self,
        keys: ExportedKeys,
        sender_id: bytes,
        recipient_id: bytes,
        *,
        claims: Iterable[str] = (),
        replay_window: int = REPLAY_WINDOW,
    ) -> None:
        if sender_id == recipient_id:
            raise OSCOREContextError("Sender ID and Recipient ID must differ")
        for name, value in (("Sender ID", sender_id), ("Recipient ID", recipient_id)):
            if len(value) > MAX_ID_LENGTH:
                raise OSCOREContextError(f"{name} is longer than {MAX_ID_LENGTH} bytes")
        try:
            self.alg_aead = oscore.algorithms[keys.aead.cose_name]
        except KeyError:
            raise OSCOREContextError(f"aiocoap has no AEAD {keys.aead.cose_name}") from None
        self.hashfun = oscore.hashfunctions["sha256"]
        self.id_context = None
        self.sender_id = sender_id
        self.recipient_id = recipient_id
        self.echo_recovery = None
        self.derive_keys(keys.master_salt, keys.master_secret)
        self.sender_sequence_number = 0
        self.recipient_replay_window = oscore.ReplayWindow(replay_window, lambda: None)
        self.recipient_replay_window.initialize_empty()
        self.authenticated_claims = list(claims)

    def post_seqnoincrease(self) -> None:
        """Sequence numbers live as long as the ATLS session: nothing to persist."""

    def __repr__(self) -> str:
        return (
            f"<ATLSSecurityContext {self.alg_aead} sender={self.sender_id.hex()} "
            f"recipient={self.recipient_id.hex()}>"
        )
