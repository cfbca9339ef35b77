"""Key-export mode for HTTP: messages protected with RFC 8188 ``aes128gcm``.

After the ATLS handshake both ends hold the exported master secret and salt.
Each inner HTTP message is encrypted with the ``aes128gcm`` content coding
(RFC 8188, ``atls.ece``), keyed per message:

    key(direction, seq) = HKDF-SHA256(ikm=master_secret, salt=master_salt,
                                      info="atls aes128gcm " + direction + seq, 16)

``direction`` is ``c2s`` or ``s2c`` (a response can never be replayed as a
request) and ``seq`` is the request's sequence number, carried in the RFC 8188
``keyid`` header field. Because the key depends on it, a changed ``keyid``
fails decryption; the server keeps a sliding replay window over ``seq`` and
the client accepts only the response to the request it sent. RFC 8188 fixes
AES-128-GCM whatever suite TLS negotiated (the draft editors note this).
"""

from __future__ import annotations

from . import ece
from .config import Mode, Role
from .errors import ATLSError
from .keys import ExportedKeys, ExporterSettings, UnsupportedSuiteError, export_keys
from .session import TLSSessionBase

CONTENT_CODING = "aes128gcm"
RECORD_SIZE = 1 << 20  # largest record; a message up to this size is one record
DEFAULT_REPLAY_WINDOW = 64


class ProtectionError(ATLSError):
    """A protected message failed to open: tampered, truncated or wrong key."""


class ReplayError(ProtectionError):
    """A protected message reused a sequence number already accepted."""


class _MessageKeys:
    """key(direction, seq): HKDF-SHA256 with the extract step done once per session.

    HKDF(ikm, salt, info) is Expand(Extract(salt, ikm), info); the extract does
    not depend on the message, so doing it once gives the very same keys.
    """

    __slots__ = ("_prk",)

    def __init__(self, keys: ExportedKeys) -> None:
        self._prk = ece.hkdf_extract(keys.master_salt, keys.master_secret)

    def key(self, direction: bytes, seq: int) -> bytes:
        info = b"atls aes128gcm " + direction + seq.to_bytes(8, "big")
        return ece.hkdf_expand_one(self._prk, info, 16)

    def seal(self, direction: bytes, seq: int, plaintext: bytes) -> bytes:
        key = self.key(direction, seq)
        rs = ece.record_size_for(len(plaintext), RECORD_SIZE)
        return ece.encrypt(plaintext, key, keyid=str(seq).encode(), rs=rs)

    def open(self, direction: bytes, seq: int, body: bytes) -> bytes:
        try:
            return ece.decrypt(body, self.key(direction, seq))
        except ece.ECEError as exc:
            raise ProtectionError(f"aes128gcm message does not open: {exc}") from None


def read_sequence(body: bytes) -> int:
    """The sequence number in an aes128gcm header's keyid (not yet authenticated)."""
    try:
        _, keyid, _ = ece.header(body)
    except ece.ECEError as exc:
        raise ProtectionError(str(exc)) from None
    if not keyid.isdigit() or len(keyid) > 19:
        raise ProtectionError("aes128gcm keyid is not an ATLS sequence number")
    return int(keyid)


class ReplayWindow:
    """DTLS-style sliding window (RFC 9147 section 4.5.1) over sequence numbers."""

    __slots__ = ("_bitmap", "highest", "size")

    def __init__(self, size: int = DEFAULT_REPLAY_WINDOW) -> None:
        self.size = size
        self.highest = -1
        self._bitmap = 0

    def check(self, seq: int) -> None:
        if seq > self.highest:
            return
        offset = self.highest - seq
        if offset >= self.size:
            raise ReplayError(f"sequence {seq} is older than the replay window")
        if self._bitmap >> offset & 1:
            raise ReplayError(f"sequence {seq} was already accepted")

    def accept(self, seq: int) -> None:
        self.check(seq)
        if seq > self.highest:
            shift = seq - self.highest
            self._bitmap = (self._bitmap << shift | 1) & ((1 << self.size) - 1)
            self.highest = seq
        else:
            self._bitmap |= 1 << (self.highest - seq)


class ClientProtector:
    """The device side: seals requests, opens only the matching response."""

    def __init__(self, keys: ExportedKeys) -> None:
        self.keys = keys
        self._message_keys = _MessageKeys(keys)
        self._next_seq = 0

    def seal_request(self, plaintext: bytes) -> tuple[int, bytes]:
        seq = self._next_seq
        self._next_seq += 1
        return seq, self._message_keys.seal(b"c2s", seq, plaintext)

    def open_response(self, seq: int, body: bytes) -> bytes:
        got = read_sequence(body)
        if got != seq:
            raise ProtectionError(f"response is for request {got}, expected {seq}")
        return self._message_keys.open(b"s2c", seq, body)


class ServerProtector:
    """The service side: opens requests once each, seals the matching response.

    It keeps only the message-key state and the replay window: an established
    key-export session needs nothing else from TLS.
    """

    __slots__ = ("_message_keys", "window")

    def __init__(self, keys: ExportedKeys, replay_window: int = DEFAULT_REPLAY_WINDOW) -> None:
        self._message_keys = _MessageKeys(keys)
        self.window = ReplayWindow(replay_window)

    def open_request(self, body: bytes) -> tuple[int, bytes]:
        seq = read_sequence(body)
        self.window.check(seq)
        plaintext = self._message_keys.open(b"c2s", seq, body)
        self.window.accept(seq)  # only after authentication
        return seq, plaintext

    def seal_response(self, seq: int, plaintext: bytes) -> bytes:
        return self._message_keys.seal(b"s2c", seq, plaintext)


Protector = ClientProtector | ServerProtector


def start_key_export(
    session: TLSSessionBase, settings: ExporterSettings | None, mode: Mode
) -> tuple[ExportedKeys | None, Protector | None]:
    """The one key-export setup both ends run when their handshake completes.

    In export mode the suite must map to an AEAD (else UnsupportedSuiteError)
    and a protector for this end's role comes back; in records mode the keys
    are exported only for the fingerprint both ends can print, when possible.
    """
    try:
        keys = export_keys(session, settings)
    except UnsupportedSuiteError:
        if mode is Mode.EXPORT:
            raise
        return None, None
    if mode is not Mode.EXPORT:
        return keys, None
    protector: Protector = (
        ClientProtector(keys) if session.role is Role.CLIENT else ServerProtector(keys)
    )
    return keys, protector
