"""RFC 8188 ``aes128gcm`` content coding on ``cryptography``'s AES-GCM.

Replaces ``http_ece`` on the hot path (the same bytes on the wire: the tests
check both RFC 8188 section 3 examples and cross-decrypt with ``http_ece``).
Why: measured in this project, ``http_ece`` reached 9 % of raw AES-GCM
throughput on 64 KiB messages and 6 % on 1 KiB ones; it builds a new cipher
per record and runs two HKDF objects per message. Here the derivations are
single ``hmac.digest`` calls (HKDF with outputs of one hash block is exactly
that) and one ``AESGCM`` object serves every record of a message.
"""

from __future__ import annotations

import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import ATLSError

HEADER_FIXED = 21  # salt(16) | rs(4) | idlen(1)
_TAG = 16
_CEK_INFO = b"Content-Encoding: aes128gcm\x00\x01"
_NONCE_INFO = b"Content-Encoding: nonce\x00\x01"


class ECEError(ATLSError):
    """An aes128gcm body that does not open: tampered, truncated or wrong key."""


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.digest(salt, ikm, "sha256")


def hkdf_expand_one(prk: bytes, info: bytes, length: int) -> bytes:
    """HKDF-Expand for outputs up to one SHA-256 block (32 bytes)."""
    return hmac.digest(prk, info + b"\x01", "sha256")[:length]


def _cipher(salt: bytes, ikm: bytes) -> tuple[AESGCM, int]:
    prk = hkdf_extract(salt, ikm)
    cek = hmac.digest(prk, _CEK_INFO, "sha256")[:16]
    nonce = int.from_bytes(hmac.digest(prk, _NONCE_INFO, "sha256")[:12])
    return AESGCM(cek), nonce


def encrypt(
    plaintext: bytes, ikm: bytes, *, keyid: bytes = b"", rs: int = 16384, salt: bytes | None = None
) -> bytes:
    """One aes128gcm body: header, then records of ``rs`` bytes (the last shorter)."""
    if not 18 <= rs < 2**32 or len(keyid) > 255:
        raise ValueError("record size must be 18..2^32-1 and keyid at most 255 bytes")
    salt = salt if salt is not None else os.urandom(16)
    aead, nonce = _cipher(salt, ikm)
    chunk = rs - _TAG - 1
    view = memoryview(plaintext)
    out = [salt, rs.to_bytes(4), bytes([len(keyid)]), keyid]
    starts = range(0, len(plaintext), chunk) if plaintext else range(1)
    last_start = starts[-1]
    if len(starts) == 1:  # one record: no slicing copies
        out.append(aead.encrypt(nonce.to_bytes(12), plaintext + b"\x02", None))
        return b"".join(out)
    for seq, start in enumerate(starts):
        delimiter = b"\x02" if start == last_start else b"\x01"
        record = bytes(view[start : start + chunk]) + delimiter
        out.append(aead.encrypt((nonce ^ seq).to_bytes(12), record, None))
    return b"".join(out)


def record_size_for(length: int, largest: int = 1 << 20) -> int:
    """A record size that fits a message of ``length`` in one record, up to ``largest``.

    One record per message costs one AES-GCM call and no slicing; RFC 8188 leaves
    the record size to the sender, and the body's length shows the size anyway.
    """
    return max(18, min(length + 17, largest))


def header(body: bytes) -> tuple[int, bytes, int]:
    """The header's record size, keyid and length (not yet authenticated)."""
    if len(body) < HEADER_FIXED:
        raise ECEError("body is shorter than an aes128gcm header")
    rs = int.from_bytes(body[16:20])
    idlen = body[20]
    if len(body) < HEADER_FIXED + idlen:
        raise ECEError("aes128gcm header ends inside its keyid")
    return rs, body[HEADER_FIXED : HEADER_FIXED + idlen], HEADER_FIXED + idlen


def decrypt(body: bytes, ikm: bytes) -> bytes:
    """Open an aes128gcm body; every record must authenticate and end as RFC 8188 says."""
    rs, _, start = header(body)
    if rs < 18:
        raise ECEError(f"record size {rs} is below the minimum of 18")
    aead, nonce = _cipher(body[:16], ikm)
    view = memoryview(body)
    out = []
    end = len(body)
    if start >= end:
        # http_ece codes an empty message as a bare header; nothing would authenticate
        # it, and in key-export mode an empty message ends the session: refused
        raise ECEError("aes128gcm body has no records (nothing authenticates it)")
    seq, at = 0, start
    while at < end:
        record = view[at : at + rs]
        at += rs
        try:
            plain = aead.decrypt((nonce ^ seq).to_bytes(12), record, None)
        except InvalidTag:
            raise ECEError(f"record {seq} does not authenticate") from None
        # the delimiter is the last non-zero byte (usually the very last: no padding)
        stripped = plain if plain[-1:] in (b"\x01", b"\x02") else plain.rstrip(b"\x00")
        if not stripped or stripped[-1] not in (1, 2):
            raise ECEError(f"record {seq} has no valid padding delimiter")
        last = at >= end
        if (stripped[-1] == 2) != last:
            what = "ends early" if not last else "is truncated (no last record)"
            raise ECEError(f"aes128gcm body {what} at record {seq}")
        out.append(stripped[:-1])
        seq += 1
    return b"".join(out)
