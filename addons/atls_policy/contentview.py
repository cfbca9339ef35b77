"""A mitmproxy content view for ATLS bodies (``application/atls``, draft-00's
``application/atls+octet-stream``).

Without it mitmweb, mitmproxy and ``mitmdump --flow-detail`` show an ATLS flight
as a hex dump. With it they show what a middlebox can read of the flight: the
records, the plaintext handshake messages (ClientHello offers, ServerHello
choice, TLS 1.2 certificates) and, for everything encrypted, its size and the
word "unreadable". The parsing is ``atls_policy.observe`` (the same code the
policy and the audit log use), so the view never shows more than the audit.

Registered with ``mitmproxy.contentviews.add`` when ``script.py`` is loaded.
"""

from __future__ import annotations

from mitmproxy import contentviews
from mitmproxy.contentviews import Contentview, Metadata, SyntaxHighlight

from atls.http_binding import ATLS_MEDIA_TYPES, media_type_of
from atls.records import ContentType, RecordError, content_type_name, iter_records

from .observe import FlightSummary, summarize

_ALERT_LEVELS = {1: "warning", 2: "fatal"}


class ATLSContentview(Contentview):
    """Decodes ATLS flights for mitmproxy's UIs; chosen automatically for ATLS types."""

    @property
    def name(self) -> str:
        return "ATLS"

    @property
    def syntax_highlight(self) -> SyntaxHighlight:
        return "yaml"  # "key: value" lines read well with YAML colouring

    def render_priority(self, data: bytes, metadata: Metadata) -> float:
        # Above every built-in view (JSON claims its own type with 1, hex dump
        # binary with less), but only for the ATLS media types or flows the
        # policy addon recognised as ATLS (e.g. smuggled under another type).
        if not data:
            return -1
        if media_type_of(metadata.content_type) in ATLS_MEDIA_TYPES:
            return 2
        flow = metadata.flow
        if flow is not None and isinstance(flow.metadata.get("atls"), dict):
            return 1.5 if _is_records(data) else -1
        return -1

    def prettify(self, data: bytes, metadata: Metadata) -> str:
        message = metadata.http_message
        encoding = message.headers.get("content-encoding") if message is not None else None
        return render(data, metadata.content_type, encoding, _flow_note(metadata))


def _is_records(data: bytes) -> bool:
    try:
        for _ in iter_records(data):
            pass
    except RecordError:
        return False
    return True


def _flow_note(metadata: Metadata) -> str | None:
    """The policy addon's verdict on this flow (its comment), when it saw it."""
    flow = metadata.flow
    if flow is None or not isinstance(flow.metadata.get("atls"), dict):
        return None
    return flow.comment or None


def render(
    data: bytes,
    content_type: str | None = None,
    content_encoding: str | None = None,
    note: str | None = None,
) -> str:
    """The text of the view: a header line, then one block per record."""
    summary = summarize(data, content_encoding)
    media = media_type_of(content_type) or "(no content type)"
    lines = [f"ATLS message: {media}, {len(data)} bytes"]
    if note:  # the addon joins one line per direction with " | "
        lines += [f"middlebox: {part}" for part in note.split(" | ")]
    if summary.protected is not None:
        lines += _protected(summary, data)
    else:
        lines += _records(data, summary)
    for problem in summary.notes:
        lines.append(f"note: {problem}")
    return "\n".join(lines) + "\n"


def _protected(summary: FlightSummary, data: bytes) -> list[str]:
    header = summary.protected or {}
    if "error" in header:
        return [f"Content-Encoding aes128gcm: {header['error']}"]
    header_len = 21 + data[20]  # salt(16) rs(4) idlen(1) keyid(idlen)
    return [
        "key-export mode: Content-Encoding aes128gcm (RFC 8188), keys from the TLS exporter",
        f"  sequence number (keyid): {header.get('seq')}",
        f"  record size: {header.get('record_size')}",
        f"  application data, {_bytes(max(len(data) - header_len, 0))} after the header, "
        "unreadable",
    ]


def _records(data: bytes, summary: FlightSummary) -> list[str]:
    count = len(summary.records)
    lines = [f"{count} TLS record{'' if count == 1 else 's'}:"]
    encrypted = False
    try:
        for number, record in enumerate(iter_records(data), 1):
            kind, size = record.content_type, _bytes(len(record.payload))
            if kind is ContentType.HANDSHAKE and not encrypted:
                text = f"handshake, {size}"
            elif kind is ContentType.CHANGE_CIPHER_SPEC:
                text, encrypted = f"change_cipher_spec, {size}", True
            elif kind is ContentType.ALERT and not encrypted and len(record.payload) == 2:
                level = _ALERT_LEVELS.get(record.payload[0], str(record.payload[0]))
                text = f"alert, {level}, description {record.payload[1]}"
            elif kind is ContentType.APPLICATION_DATA:
                text, encrypted = f"application data, {size}, unreadable", True
            else:
                text = f"{content_type_name(kind)}, {size}, encrypted, unreadable"
            lines.append(f"  record {number}: {text}")
    except RecordError:
        pass  # summarize() already put the reason in the notes
    if summary.handshake:
        lines.append("plaintext handshake messages:")
        lines += _handshake(summary)
    return lines


def _bytes(n: int) -> str:
    return f"{n} byte{'' if n == 1 else 's'}"


def _handshake(summary: FlightSummary) -> list[str]:
    lines: list[str] = []
    for name in summary.handshake:
        lines.append(f"  {_title(name)}")
        if name == "client_hello" and summary.client_hello:
            ch = summary.client_hello
            lines += [
                f"    versions offered: {', '.join(ch.versions) or '-'}",
                f"    cipher suites ({len(ch.cipher_suites)}):",
                *(f"      {suite}" for suite in ch.cipher_suites),
                f"    key share groups: {', '.join(ch.key_share_groups) or '-'}",
                f"    SNI: {ch.sni or '-'}",
                f"    ALPN: {', '.join(ch.alpn) or '-'}",
            ]
        elif name == "server_hello" and summary.server_hello:
            sh = summary.server_hello
            if sh.hello_retry_request:
                lines.append("    HelloRetryRequest")
            lines += [f"    version: {sh.version}", f"    cipher suite: {sh.cipher_suite}"]
            if sh.version == "1.3":
                lines.append("    (everything after a TLS 1.3 ServerHello is encrypted)")
        elif name == "certificate":
            for subject in summary.certificates:
                lines.append(f"    subject: {subject}")
    return lines


def _title(name: str) -> str:
    special = {"client_hello": "ClientHello", "server_hello": "ServerHello"}
    return special.get(name, "".join(part.capitalize() for part in name.split("_")))


atls_view = ATLSContentview()


class ATLSView:
    """Addon that registers the view when mitmproxy loads the script."""

    def load(self, loader: object) -> None:
        contentviews.add(atls_view)
