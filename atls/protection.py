"""Key-export mode for HTTP: messages protected with RFC 8188 ``aes128gcm``.

After the ATLS handshake both ends hold the exported master secret and salt.
Each inner HTTP message is encrypted with the ``aes128gcm`` content coding
(RFC 8188, via the ``http_ece`` library), keyed per message:

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

import http_ece
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .config import Mode, Role
from .errors import ATLSError
from .keys import ExportedKeys, ExporterSettings, UnsupportedSuiteError, export_keys
from .session import TLSSessionBase

CONTENT_CODING = "aes128gcm"
RECORD_SIZE = 16384
DEFAULT_REPLAY_WINDOW = 64
_HEADER_FIXED = 21  # salt(16) | rs(4) | idlen(1)


class ProtectionError(ATLSError):
    """A protected message failed to open: tampered, truncated or wrong key."""


class ReplayError(ProtectionError):
    """A protected message reused a sequence number already accepted."""


def _derive(keys: ExportedKeys, direction: bytes, seq: int) -> bytes:
    info = b"atls aes128gcm " + direction + seq.to_bytes(8, "big")
    return HKDF(hashes.SHA256(), 16, keys.master_salt, info).derive(keys.master_secret)


def read_sequence(body: bytes) -> int:
    """The sequence number in an aes128gcm header's keyid (not yet authenticated)."""
    if len(body) < _HEADER_FIXED:
        raise ProtectionError("body is shorter than an aes128gcm header")
    idlen = body[20]
    keyid = body[_HEADER_FIXED : _HEADER_FIXED + idlen]
    if not keyid.isdigit() or len(keyid) > 19:
        raise ProtectionError("aes128gcm keyid is not an ATLS sequence number")
    return int(keyid)


def _seal(keys: ExportedKeys, direction: bytes, seq: int, plaintext: bytes) -> bytes:
    key = _derive(keys, direction, seq)
    return http_ece.encrypt(plaintext, key=key, keyid=str(seq), rs=RECORD_SIZE)


def _open(keys: ExportedKeys, direction: bytes, seq: int, body: bytes) -> bytes:
    key = _derive(keys, direction, seq)
    try:
        return http_ece.decrypt(body, key=key)
    except (http_ece.ECEException, ValueError) as exc:
        raise ProtectionError(f"aes128gcm message does not open: {exc}") from None


class ReplayWindow:
    """DTLS-style sliding window (RFC 9147 section 4.5.1) over sequence numbers."""

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
        self._next_seq = 0

    def seal_request(self, plaintext: bytes) -> tuple[int, bytes]:
        seq = self._next_seq
        self._next_seq += 1
        return seq, _seal(self.keys, b"c2s", seq, plaintext)

    def open_response(self, seq: int, body: bytes) -> bytes:
        got = read_sequence(body)
        if got != seq:
            raise ProtectionError(f"response is for request {got}, expected {seq}")
        return _open(self.keys, b"s2c", seq, body)


class ServerProtector:
    """The service side: opens requests once each, seals the matching response."""

    def __init__(self, keys: ExportedKeys, replay_window: int = DEFAULT_REPLAY_WINDOW) -> None:
        self.keys = keys
        self.window = ReplayWindow(replay_window)

    def open_request(self, body: bytes) -> tuple[int, bytes]:
        seq = read_sequence(body)
        self.window.check(seq)
        plaintext = _open(self.keys, b"c2s", seq, body)
        self.window.accept(seq)  # only after authentication
        return seq, plaintext

    def seal_response(self, seq: int, plaintext: bytes) -> bytes:
        return _seal(self.keys, b"s2c", seq, plaintext)


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
