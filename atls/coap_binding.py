"""The CoAP binding of ATLS (-01 and later), sans I/O and without a CoAP library.

Wire contract (the constrained side of the draft's second use case):

- each flight is the payload of a Confirmable ``POST /.well-known/atls``;
  the answer is ``2.04 Changed`` with the peer's next flight;
- ``application/atls`` has no CoAP Content-Format number yet (the draft says
  TBD), so it takes one from the experimental range (65000-65535),
  configurable: ``CONTENT_FORMAT_ATLS`` (65000) for TLS/DTLS records.
  A CoAP Content-Format is a media type *plus a content coding* (RFC 7252
  section 12.3), so key-export messages (``aes128gcm``, RFC 8188) get their
  own number, ``CONTENT_FORMAT_ATLS_PROTECTED`` (65001), where HTTP uses
  ``Content-Encoding``;
- flights larger than one datagram (a certificate chain is) go blockwise
  (RFC 7959, Block1 up, Block2 down);
- the session is named by the ``ATLS-Session`` option (experimental number
  65003: critical, so a server that does not know it refuses instead of
  starting a new session; unsafe-to-forward, because it names state at the
  next hop only). The gateway hands it out on a session's first answer,
  exactly where HTTP sets the cookie. The mode (records or key export) is
  stated on the first flight in the ``ATLS-Mode`` option (65005, uint:
  0 records, 1 export; absent = records), where HTTP uses the header;
- errors are 4.xx/5.xx with a diagnostic payload (RFC 7252 section 5.5.2:
  UTF-8 text for a human): ``<reason slug>: <detail>``. ``COAP_CODE`` maps
  every ``Reason`` once, beside ``atls.http_binding.HTTP_STATUS``;
- after a key-export handshake, application data is OSCORE (RFC 8613) keyed
  from the exporter (see ``atls.oscore``), Content-Format 10001 when carried
  over HTTP (``application/oscore``, registered by RFC 8613).

Codes are plain ``(class, detail)`` pairs so this module needs no CoAP library.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .config import Mode
from .errors import Reason, Refusal
from .server import Coding

URI_PATH = (".well-known", "atls")  # Uri-Path segments of /.well-known/atls
CONTENT_FORMAT_ATLS = 65000  # application/atls (experimental range; the draft says TBD)
CONTENT_FORMAT_ATLS_PROTECTED = 65001  # application/atls with content coding aes128gcm
CONTENT_FORMAT_OSCORE = 10001  # application/oscore (RFC 8613, registered)
SESSION_OPTION = 65003  # ATLS-Session: critical, unsafe, opaque, 1-8 bytes from the gateway
MODE_OPTION = 65005  # ATLS-Mode: critical, uint (0 records, 1 export); first flight only
MAX_SESSION_OPTION_LENGTH = 8

# The codes a CoAP adapter answers with, as (class, detail): 4.04 is (4, 4).
CoAPCode = tuple[int, int]
CHANGED: CoAPCode = (2, 4)

COAP_CODE: dict[Reason, CoAPCode] = {
    Reason.NOT_ATLS: (4, 15),  # Unsupported Content-Format
    Reason.UNSUPPORTED_CODING: (4, 15),
    Reason.FLIGHT_TOO_LARGE: (4, 13),  # Request Entity Too Large (with Size1)
    Reason.NOT_TLS: (4, 0),
    Reason.INCOMPLETE_FLIGHT: (4, 0),
    Reason.TLS_ALERT: (4, 0),
    Reason.NO_HANDSHAKE_TO_START: (4, 0),
    Reason.HANDSHAKE_NOT_FINISHED: (4, 9),  # Conflict (RFC 8132)
    Reason.WRONG_MODE: (4, 9),
    Reason.EXPORT_UNAVAILABLE: (4, 9),
    Reason.REPLAYED: (4, 1),  # as OSCORE answers a replay (RFC 8613 section 7.4)
    Reason.PROTECTION_FAILED: (4, 0),
    Reason.HANDSHAKE_CAPACITY: (5, 3),
    Reason.CLIENT_HANDSHAKE_LIMIT: (4, 29),  # Too Many Requests (RFC 8516)
    Reason.UNKNOWN_SESSION: (4, 4),
    Reason.SESSION_ENDED: (4, 4),  # CoAP has no 410
    Reason.BODY_TOO_LARGE: (4, 13),
    Reason.INVALID_JSON: (4, 0),
    Reason.INVALID_QUERY: (4, 0),
    Reason.INVALID_DOMAIN: (4, 0),
    Reason.UNKNOWN_DOMAIN: (4, 4),
    Reason.INVALID_CLAIM: (4, 0),
    Reason.SERIAL_CLAIMED: (4, 9),
    Reason.OPERATOR_API_DISABLED: (5, 3),
    Reason.OPERATOR_UNAUTHORIZED: (4, 1),
    Reason.ATLS_REQUIRED: (4, 3),
    Reason.NO_DEVICE_IDENTITY: (4, 3),
    Reason.SERIAL_NOT_CLAIMED: (4, 4),
    Reason.SERIAL_MISMATCH: (4, 3),
    Reason.INVALID_NONCE: (4, 0),
    Reason.NO_VOUCHER_SIGNER: (5, 3),
    Reason.INVALID_REPORT: (4, 0),
    Reason.NOT_FOUND: (4, 4),
    Reason.METHOD_NOT_ALLOWED: (4, 5),
    Reason.HTTP_ERROR: (4, 0),
    Reason.BLOCKED_BY_POLICY: (4, 3),
    Reason.LIMIT_EXCEEDED: (4, 29),
    Reason.UNEXPECTED_RESPONSE: (5, 2),  # Bad Gateway
    # the HTTP front's own guards, as a gateway passes them on
    Reason.MIDDLEBOX_ERROR: (5, 2),
    Reason.REQUEST_TIMEOUT: (4, 8),  # Request Entity Incomplete (RFC 7959)
    Reason.HEADER_TOO_LARGE: (4, 13),
    Reason.MALFORMED_REQUEST: (4, 0),
    Reason.TOO_MANY_CONNECTIONS: (5, 3),  # Service Unavailable
}

# A CoAP answer that is no refusal of ours (e.g. aiocoap's own 4.02 Bad Option).
_GENERIC_REASON: dict[CoAPCode, Reason] = {
    (4, 1): Reason.PROTECTION_FAILED,
    (4, 4): Reason.UNKNOWN_SESSION,
    (4, 8): Reason.INCOMPLETE_FLIGHT,
    (4, 13): Reason.FLIGHT_TOO_LARGE,
    (4, 15): Reason.NOT_ATLS,
    (4, 29): Reason.LIMIT_EXCEEDED,
    (5, 3): Reason.HANDSHAKE_CAPACITY,
}


def code_text(code: CoAPCode) -> str:
    return f"{code[0]}.{code[1]:02d}"


# RFC 7959's code for a block that continues nothing the server holds; the
# reason stays incomplete-flight (a client treats it as damage in transit).
REQUEST_ENTITY_INCOMPLETE: CoAPCode = (4, 8)


def coap_code(refusal: Refusal) -> CoAPCode:
    """The code a refusal is answered with: its own (``extra["coap_code"]``) or its reason's."""
    own = refusal.extra.get("coap_code")
    if isinstance(own, tuple) and len(own) == 2:
        return (int(own[0]), int(own[1]))
    return COAP_CODE[refusal.reason]


def diagnostic(refusal: Refusal) -> bytes:
    """The diagnostic payload of a refusal: ``<slug>: <detail>`` (UTF-8 text)."""
    text = f"{refusal.slug}: {refusal.detail}"
    alert = refusal.extra.get("tls_alert")
    if alert and f"{alert}" not in text:
        text += f" (TLS alert {alert})"
    return text.encode("utf-8", "replace")[:MAX_DIAGNOSTIC]


MAX_DIAGNOSTIC = 512  # keeps an error inside one datagram


def refusal_from_diagnostic(code: CoAPCode, payload: bytes) -> Refusal:
    """The refusal a client raises for an error answer (its reason from the slug)."""
    text = payload.decode("utf-8", "replace").strip()
    slug, sep, detail = text.partition(": ")
    known = sep and slug in _SLUGS
    reason = Reason(slug) if known else Reason.UNEXPECTED_RESPONSE
    if not known:
        reason = _GENERIC_REASON.get(code, Reason.UNEXPECTED_RESPONSE)
        detail = f"CoAP {code_text(code)}: {text or 'no diagnostic'}"
    extra: dict[str, object] = {"coap_code": code_text(code)}
    if reason is Reason.TLS_ALERT:
        extra["tls_alert"] = _alert_in(detail)
    return Refusal(reason, detail, extra=extra)


_SLUGS = frozenset(r.value for r in Reason)


def _alert_in(detail: str) -> str | None:
    words = detail.replace("(", " ").replace(")", " ").split()
    for i, word in enumerate(words[:-1]):
        if word == "alert":
            return words[i + 1]
    return None


def coding_of_format(content_format: int | None, *, atls: int, protected: int) -> Coding | None:
    """The body coding a Content-Format names; None for one ATLS does not use."""
    if content_format == atls:
        return Coding.TLS
    if content_format == protected:
        return Coding.PROTECTED
    return None


def mode_of_option(value: int | None) -> Mode:
    return Mode.EXPORT if value == 1 else Mode.RECORDS


def mode_option(mode: Mode) -> int:
    return 1 if mode is Mode.EXPORT else 0


@dataclass(frozen=True)
class CoAPSettings:
    """The numbers a deployment may change (both ends must agree)."""

    content_format: int = CONTENT_FORMAT_ATLS
    protected_content_format: int = CONTENT_FORMAT_ATLS_PROTECTED
    session_option: int = SESSION_OPTION
    mode_option: int = MODE_OPTION

    def __post_init__(self) -> None:
        for name in ("content_format", "protected_content_format"):
            value = getattr(self, name)
            if not 0 <= value <= 65535:
                raise ValueError(f"{name} {value} is not a Content-Format number (0-65535)")
        if self.content_format == self.protected_content_format:
            raise ValueError("the two Content-Formats must differ")
        for name in ("session_option", "mode_option"):
            value = getattr(self, name)
            if not 65000 <= value <= 65535 or value % 2 == 0:
                raise ValueError(
                    f"{name} {value}: use a critical (odd) number from the experimental "
                    "range 65000-65535"
                )

    def coding_of(self, content_format: int | None) -> Coding | None:
        return coding_of_format(
            content_format, atls=self.content_format, protected=self.protected_content_format
        )

    def format_of(self, coding: Coding) -> int:
        return self.content_format if coding is Coding.TLS else self.protected_content_format


# ---------------------------------------------------------------------------
# Bounded blockwise reassembly (RFC 7959 Block1), for a server facing hostile devices


class BlockwiseError(Exception):
    """A block that cannot be taken; ``refusal`` says why (and so its CoAP code)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(str(refusal))
        self.refusal = refusal


@dataclass
class _Assembly:
    data: bytearray
    updated: float


class BlockAssembler:
    """Block1 transfers in progress, bounded in count, size and age.

    aiocoap's own spool keeps any number of transfers of any size for 93 s
    after their last block; a gateway facing untrusted devices cannot. Memory
    here is at most ``max_transfers * max_bytes`` payload bytes: a new
    transfer beyond the count evicts the stalest one, a transfer beyond the
    size is dropped with 4.13, and one idle for ``ttl`` seconds is forgotten.
    """

    def __init__(
        self,
        *,
        max_transfers: int = 64,
        max_bytes: int = 16384,
        ttl: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_transfers < 1 or max_bytes < 1 or ttl <= 0:
            raise ValueError("limits must be positive")
        self.max_transfers = max_transfers
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.clock = clock
        self._transfers: OrderedDict[object, _Assembly] = OrderedDict()  # stalest first
        self.evicted = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self._transfers)

    @property
    def buffered_bytes(self) -> int:
        return sum(len(a.data) for a in self._transfers.values())

    def _expire(self, now: float) -> None:
        while self._transfers:
            key, oldest = next(iter(self._transfers.items()))
            if now - oldest.updated < self.ttl:
                break
            del self._transfers[key]
            self.expired += 1

    def feed(self, key: object, number: int, more: bool, size: int, payload: bytes) -> bytes | None:
        """Take one block; the whole body when it was the last one, else None."""
        now = self.clock()
        self._expire(now)
        if more and len(payload) != size:
            self._transfers.pop(key, None)
            raise BlockwiseError(
                Refusal(
                    Reason.INCOMPLETE_FLIGHT,
                    f"block {number} has {len(payload)} bytes but announces blocks of {size}",
                    title="malformed Block1",
                )
            )
        if number == 0:
            self._transfers.pop(key, None)
            if not more:
                return payload
            if len(self._transfers) >= self.max_transfers:
                self._transfers.popitem(last=False)
                self.evicted += 1
            assembly = _Assembly(bytearray(), now)
            self._transfers[key] = assembly
        else:
            found = self._transfers.get(key)
            if found is None:
                raise BlockwiseError(
                    Refusal(
                        Reason.INCOMPLETE_FLIGHT,
                        f"block {number} continues no transfer in progress (expired, evicted "
                        "or never started): send the flight again from block 0",
                        title="Request Entity Incomplete",
                        extra={"coap_code": REQUEST_ENTITY_INCOMPLETE},
                    )
                )
            assembly = found
            if number * size != len(assembly.data):
                del self._transfers[key]
                raise BlockwiseError(
                    Refusal(
                        Reason.INCOMPLETE_FLIGHT,
                        f"block {number} of {size} bytes starts at {number * size}, "
                        f"but {len(assembly.data)} bytes arrived so far",
                        title="Request Entity Incomplete",
                        extra={"coap_code": REQUEST_ENTITY_INCOMPLETE},
                    )
                )
        if len(assembly.data) + len(payload) > self.max_bytes:
            del self._transfers[key]
            raise BlockwiseError(
                Refusal(
                    Reason.FLIGHT_TOO_LARGE,
                    f"the flight passed {self.max_bytes} bytes in block {number}; "
                    "the transfer was dropped",
                    title="ATLS message too large",
                    extra={"max_bytes": self.max_bytes},
                )
            )
        assembly.data += payload
        assembly.updated = now
        self._transfers.move_to_end(key)
        if more:
            return None
        del self._transfers[key]
        return bytes(assembly.data)


class ResponseBlocks:
    """Answers too large for one datagram, served block by block (Block2), bounded.

    Keyed like the request; at most ``max_entries`` answers of at most the
    flight limit each, each kept ``ttl`` seconds after its last block was read.
    """

    def __init__(
        self,
        *,
        max_entries: int = 64,
        ttl: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self.clock = clock
        self._entries: OrderedDict[object, tuple[Any, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, key: object, body: Any) -> None:
        self._entries.pop(key, None)
        while len(self._entries) >= self.max_entries:
            self._entries.popitem(last=False)
        self._entries[key] = (body, self.clock())

    def get(self, key: object) -> Any:
        now = self.clock()
        while self._entries:
            oldest_key, (_, stamp) = next(iter(self._entries.items()))
            if now - stamp < self.ttl:
                break
            del self._entries[oldest_key]
        found = self._entries.get(key)
        if found is None:
            return None
        self._entries[key] = (found[0], now)
        self._entries.move_to_end(key)
        return found[0]

    def drop(self, key: object) -> None:
        self._entries.pop(key, None)


def block_slice(body: bytes, number: int, size_exponent: int) -> tuple[bytes, bool]:
    """Block ``number`` of ``body`` at size 2**(4+szx), and whether more follow."""
    size = 1 << (size_exponent + 4)
    start = number * size
    return body[start : start + size], start + size < len(body)
