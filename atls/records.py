"""TLS and DTLS record framing, read from the outside.

Observers (the service's input checks, the middlebox addon) need to know
whether a body is a sequence of well-formed records and what kinds they are,
without any keys. This module only splits and labels records; parsing a
ClientHello body is left to mitmproxy's maintained parser in the addon.

A TLS record header is 5 bytes (type, version 3.x, length); a DTLS one is 13
(type, version 0xFEFF/0xFEFD/0xFEFC, epoch, 48-bit sequence number, length).
Every content type is accepted: the draft puts no limit on them, and types
such as heartbeat (24) or tls12_cid (25) are TLS all the same.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator
from dataclasses import dataclass

RECORD_HEADER_LEN = 5
DTLS_RECORD_HEADER_LEN = 13
DTLS_VERSIONS = frozenset({0xFEFF, 0xFEFD, 0xFEFC})
# RFC 8446 section 5.1: a TLSCiphertext may carry up to 2^14 + 256 bytes.
MAX_RECORD_PAYLOAD = 2**14 + 256


class ContentType(enum.IntEnum):
    CHANGE_CIPHER_SPEC = 20
    ALERT = 21
    HANDSHAKE = 22
    APPLICATION_DATA = 23
    HEARTBEAT = 24
    TLS12_CID = 25
    ACK = 26  # DTLS 1.3


def content_type_name(value: int) -> str:
    try:
        return ContentType(value).name.lower()
    except ValueError:
        return f"content_type_{value}"


class HandshakeType(enum.IntEnum):
    CLIENT_HELLO = 1
    SERVER_HELLO = 2
    HELLO_VERIFY_REQUEST = 3  # DTLS 1.2 only (RFC 6347 section 4.2.1)
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
    content_type: int  # a ContentType member when the type is a known one
    legacy_version: int
    payload: bytes
    epoch: int | None = None  # DTLS only
    sequence: int | None = None  # DTLS only

    @property
    def dtls(self) -> bool:
        return self.epoch is not None

    @property
    def header_length(self) -> int:
        return DTLS_RECORD_HEADER_LEN if self.dtls else RECORD_HEADER_LEN

    @property
    def wire_length(self) -> int:
        return self.header_length + len(self.payload)

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
    """Split ``data`` into TLS or DTLS records, raising RecordError on anything else."""
    offset = 0
    view = memoryview(data)
    total = len(data)
    while offset < total:
        if total - offset < RECORD_HEADER_LEN:
            raise TruncatedRecord(f"{total - offset} stray bytes after the last record")
        raw_type, major, minor = data[offset], data[offset + 1], data[offset + 2]
        version = (major << 8) | minor
        epoch = sequence = None
        if major == 3 and minor <= 4:
            header = RECORD_HEADER_LEN
            length = int.from_bytes(view[offset + 3 : offset + 5])
        elif version in DTLS_VERSIONS:
            header = DTLS_RECORD_HEADER_LEN
            if total - offset < header:
                raise TruncatedRecord(f"{total - offset} bytes: a DTLS record header needs 13")
            epoch = int.from_bytes(view[offset + 3 : offset + 5])
            sequence = int.from_bytes(view[offset + 5 : offset + 11])
            length = int.from_bytes(view[offset + 11 : offset + 13])
        else:
            raise RecordError(f"byte {offset}: version {major}.{minor} is neither TLS nor DTLS")
        content_type: int = raw_type
        with contextlib.suppress(ValueError):
            content_type = ContentType(raw_type)
        if length == 0 and content_type != ContentType.APPLICATION_DATA:
            raise RecordError(f"byte {offset}: empty {content_type_name(raw_type)} record")
        if length > MAX_RECORD_PAYLOAD:
            raise RecordError(f"byte {offset}: record length {length} exceeds 2^14+256")
        end = offset + header + length
        if end > total:
            raise TruncatedRecord(
                f"record at byte {offset} declares {length} bytes, {total - offset - header} follow"
            )
        yield Record(content_type, version, bytes(view[offset + header : end]), epoch, sequence)
        offset = end


def check_records(data: bytes) -> None:
    """Raise RecordError unless ``data`` is exactly a sequence of whole records.

    The same rules as ``iter_records``, without building records: the session
    checks every flight this way before TLS sees a byte.
    """
    offset, total = 0, len(data)
    while offset < total:
        if total - offset < RECORD_HEADER_LEN:
            break  # iter_records says why
        major, minor = data[offset + 1], data[offset + 2]
        if major == 3 and minor <= 4:
            header = RECORD_HEADER_LEN
            length = (data[offset + 3] << 8) | data[offset + 4]
        else:
            break
        if (
            length == 0
            and data[offset] != ContentType.APPLICATION_DATA
            or length > MAX_RECORD_PAYLOAD
        ):
            break
        offset += header + length
    if offset != total:
        for _ in iter_records(data):  # the slow path names the problem
            pass


def parse_records(data: bytes) -> list[Record]:
    return list(iter_records(data))


def looks_like_tls(data: bytes) -> bool:
    """True when ``data`` is non-empty and exactly a sequence of whole TLS or DTLS records."""
    if not data:
        return False
    try:
        for _ in iter_records(data):
            pass
    except RecordError:
        return False
    return True
