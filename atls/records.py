"""TLS record framing, read from the outside.

Observers (the service's input checks, the middlebox addon) need to know
whether a body is a sequence of well-formed TLS records and what kinds they
are, without any keys. This module only splits and labels records; parsing a
ClientHello body is left to mitmproxy's maintained parser in the addon.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass

RECORD_HEADER_LEN = 5
# RFC 8446 section 5.1: a TLSCiphertext may carry up to 2^14 + 256 bytes.
MAX_RECORD_PAYLOAD = 2**14 + 256


class ContentType(enum.IntEnum):
    CHANGE_CIPHER_SPEC = 20
    ALERT = 21
    HANDSHAKE = 22
    APPLICATION_DATA = 23


class HandshakeType(enum.IntEnum):
    CLIENT_HELLO = 1
    SERVER_HELLO = 2
    NEW_SESSION_TICKET = 4
    END_OF_EARLY_DATA = 5
    ENCRYPTED_EXTENSIONS = 8
    CERTIFICATE = 11
    SERVER_KEY_EXCHANGE = 12
    CERTIFICATE_REQUEST = 13
    SERVER_HELLO_DONE = 14
    CERTIFICATE_VERIFY = 15
    CLIENT_KEY_EXCHANGE = 16
    FINISHED = 20
    KEY_UPDATE = 24


class RecordError(ValueError):
    """The bytes are not a sequence of whole TLS records."""


class TruncatedRecord(RecordError):
    """The bytes end inside a record: the flight was cut short."""


@dataclass(frozen=True)
class Record:
    content_type: ContentType
    legacy_version: int
    payload: bytes

    @property
    def wire_length(self) -> int:
        return RECORD_HEADER_LEN + len(self.payload)

    @property
    def handshake_type(self) -> HandshakeType | None:
        """The first handshake message type, for plaintext handshake records."""
        if self.content_type != ContentType.HANDSHAKE or not self.payload:
            return None
        try:
            return HandshakeType(self.payload[0])
        except ValueError:
            return None


def iter_records(data: bytes) -> Iterator[Record]:
    """Split ``data`` into TLS records, raising RecordError on anything else."""
    offset = 0
    view = memoryview(data)
    while offset < len(data):
        if len(data) - offset < RECORD_HEADER_LEN:
            raise TruncatedRecord(f"{len(data) - offset} stray bytes after the last record")
        raw_type, major, minor = data[offset], data[offset + 1], data[offset + 2]
        length = int.from_bytes(view[offset + 3 : offset + 5])
        try:
            content_type = ContentType(raw_type)
        except ValueError:
            raise RecordError(f"byte {offset}: {raw_type} is not a TLS content type") from None
        if major != 3 or minor > 4:
            raise RecordError(f"byte {offset}: version {major}.{minor} is not TLS")
        if length == 0 and content_type != ContentType.APPLICATION_DATA:
            raise RecordError(f"byte {offset}: empty {content_type.name} record")
        if length > MAX_RECORD_PAYLOAD:
            raise RecordError(f"byte {offset}: record length {length} exceeds 2^14+256")
        end = offset + RECORD_HEADER_LEN + length
        if end > len(data):
            raise TruncatedRecord(
                f"record at byte {offset} declares {length} bytes, {len(data) - offset - 5} follow"
            )
        yield Record(content_type, (major << 8) | minor, bytes(view[offset + 5 : end]))
        offset = end


def parse_records(data: bytes) -> list[Record]:
    return list(iter_records(data))


def looks_like_tls(data: bytes) -> bool:
    """True when ``data`` is non-empty and exactly a sequence of whole TLS records."""
    if not data:
        return False
    try:
        for _ in iter_records(data):
            pass
    except RecordError:
        return False
    return True
