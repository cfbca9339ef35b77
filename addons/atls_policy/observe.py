"""What a middlebox can see of an ATLS flight without any keys.

Record types and sizes; from a ClientHello the offered versions, suites, SNI,
ALPN and key-share groups; from a ServerHello the chosen version and suite;
in TLS 1.2 the certificate subjects; in key-export mode the RFC 8188 header.
DTLS records too: each record's epoch and sequence number, and the DTLS
handshake (12-byte message headers, fragments reassembled): ClientHello (with
its cookie's length), HelloVerifyRequest, ServerHello, certificates.

The ClientHello is parsed by mitmproxy's maintained parser
(``mitmproxy.tls.ClientHello``). It exposes extensions only as raw bytes, so
the two small ones we need (supported_versions, key_share) are decoded here;
mitmproxy has no ServerHello or Certificate parser, so those few fields are
read here too. Nothing here ever raises on hostile input: problems end up in
``FlightSummary.notes``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, fields
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from atls.config import TLSVersion
from atls.identity import device_serial
from atls.records import ContentType, HandshakeType, RecordError, content_type_name, iter_records

# IANA TLS cipher suite names for the suites a modern stack offers.
_SUITES = {
    0x1301: "TLS_AES_128_GCM_SHA256",
    0x1302: "TLS_AES_256_GCM_SHA384",
    0x1303: "TLS_CHACHA20_POLY1305_SHA256",
    0x1304: "TLS_AES_128_CCM_SHA256",
    0x1305: "TLS_AES_128_CCM_8_SHA256",
    0xC02B: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    0xC02C: "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    0xC02F: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    0xC030: "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    0xCCA8: "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    0xCCA9: "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    0xC0AC: "TLS_ECDHE_ECDSA_WITH_AES_128_CCM",
    0xC0AD: "TLS_ECDHE_ECDSA_WITH_AES_256_CCM",
    0xC0AE: "TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8",
    0xC0AF: "TLS_ECDHE_ECDSA_WITH_AES_256_CCM_8",
    0xC009: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    0xC00A: "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    0xC013: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    0xC014: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    0x009C: "TLS_RSA_WITH_AES_128_GCM_SHA256",
    0x009D: "TLS_RSA_WITH_AES_256_GCM_SHA384",
    0x009E: "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256",
    0x009F: "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
    0x002F: "TLS_RSA_WITH_AES_128_CBC_SHA",
    0x0035: "TLS_RSA_WITH_AES_256_CBC_SHA",
    0xCCAA: "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    0xC023: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    0xC024: "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384",
    0xC027: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    0xC028: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
    0x0033: "TLS_DHE_RSA_WITH_AES_128_CBC_SHA",
    0x0039: "TLS_DHE_RSA_WITH_AES_256_CBC_SHA",
    0x0067: "TLS_DHE_RSA_WITH_AES_128_CBC_SHA256",
    0x006B: "TLS_DHE_RSA_WITH_AES_256_CBC_SHA256",
    0x003C: "TLS_RSA_WITH_AES_128_CBC_SHA256",
    0x003D: "TLS_RSA_WITH_AES_256_CBC_SHA256",
    0x00FF: "TLS_EMPTY_RENEGOTIATION_INFO_SCSV",
}
_GROUPS = {
    0x0017: "secp256r1",
    0x0018: "secp384r1",
    0x0019: "secp521r1",
    0x001D: "x25519",
    0x001E: "x448",
    0x0100: "ffdhe2048",
    0x11EB: "SecP256r1MLKEM768",
    0x11EC: "X25519MLKEM768",
    0x11ED: "SecP384r1MLKEM1024",
}
_EXT_SUPPORTED_GROUPS = 10
_EXT_SUPPORTED_VERSIONS = 43
_EXT_KEY_SHARE = 51
# IANA TLS ExtensionType names (RFC 8446 section 4.2 and the registry).
EXTENSIONS = {
    0: "server_name",
    1: "max_fragment_length",
    5: "status_request",
    10: "supported_groups",
    11: "ec_point_formats",
    13: "signature_algorithms",
    14: "use_srtp",
    15: "heartbeat",
    16: "application_layer_protocol_negotiation",
    18: "signed_certificate_timestamp",
    21: "padding",
    22: "encrypt_then_mac",
    23: "extended_master_secret",
    27: "compress_certificate",
    28: "record_size_limit",
    35: "session_ticket",
    41: "pre_shared_key",
    42: "early_data",
    43: "supported_versions",
    44: "cookie",
    45: "psk_key_exchange_modes",
    47: "certificate_authorities",
    48: "oid_filters",
    49: "post_handshake_auth",
    50: "signature_algorithms_cert",
    51: "key_share",
    54: "connection_id",
    57: "quic_transport_parameters",
    0xFE0D: "encrypted_client_hello",
    0xFF01: "renegotiation_info",
}
SUITES = _SUITES
GROUPS = _GROUPS
# RFC 8446 4.1.3: a ServerHello with this random is a HelloRetryRequest.
_HRR_RANDOM = bytes.fromhex("CF21AD74E59A6111BE1D8C021E65B891C2A211167ABB8C5E079E09E2C8A8339C")


def _grease(value: int) -> bool:
    return value & 0x0F0F == 0x0A0A and value >> 8 == value & 0xFF


def version_name(value: int) -> str:
    return TLSVersion.label_of(value)


def suite_name(value: int) -> str:
    return _SUITES.get(value, f"0x{value:04x}")


def group_name(value: int) -> str:
    return _GROUPS.get(value, f"0x{value:04x}")


def extension_name(value: int) -> str:
    return EXTENSIONS.get(value, f"0x{value:04x}")


@dataclass
class ClientHelloSummary:
    versions: list[str]
    cipher_suites: list[str]
    sni: str | None
    alpn: list[str]
    key_share_groups: list[str]
    supported_groups: list[str] = field(default_factory=list)
    extensions: list[str] = field(default_factory=list)


@dataclass
class ServerHelloSummary:
    version: str
    cipher_suite: str
    hello_retry_request: bool = False


@dataclass
class FlightSummary:
    bytes: int
    records: list[tuple[str, int]] = field(default_factory=list)
    handshake: list[str] = field(default_factory=list)
    client_hello: ClientHelloSummary | None = None
    server_hello: ServerHelloSummary | None = None
    certificates: list[str] = field(default_factory=list)
    certificate_serials: list[str] = field(default_factory=list)
    alert_records: int = 0
    protected: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    dtls: list[tuple[int, int]] = field(default_factory=list)  # (epoch, sequence) per record
    cookie_length: int | None = None  # DTLS: of the ClientHello or HelloVerifyRequest
    not_records: bool = False  # the body is not a sequence of TLS records (or is empty)

    @property
    def record_state(self) -> str:
        """``valid``, ``invalid`` (not TLS records) or ``protected`` (aes128gcm)."""
        if self.protected is not None:
            return "protected"
        return "invalid" if self.not_records or not self.records else "valid"

    @property
    def offered_versions(self) -> set[str]:
        return set(self.client_hello.versions) if self.client_hello else set()

    @property
    def sni(self) -> str | None:
        return self.client_hello.sni if self.client_hello else None

    def to_dict(self) -> dict[str, Any]:
        # By hand, not dataclasses.asdict: its deep copy was most of the addon's
        # per-flight cost (profiled), and only the hello summaries nest.
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in ("client_hello", "server_hello"):
            if data[key] is not None:
                data[key] = dict(vars(data[key]))
        data["records"] = [{"type": t, "length": n} for t, n in self.records]
        for record, (epoch, sequence) in zip(data["records"], self.dtls, strict=False):
            record.update(epoch=epoch, seq=sequence)
        del data["dtls"]
        kept = ("bytes", "cookie_length")  # a DTLS cookie of length 0 is worth saying
        return {k: v for k, v in data.items() if v not in (None, [], 0) or k in kept and v == 0}

    def one_line(self) -> str:
        parts = [f"{len(self.records)} {'DTLS ' if self.dtls else ''}records, {self.bytes} B"]
        if self.dtls:
            parts[0] += " (epoch.seq " + " ".join(f"{e}.{s}" for e, s in self.dtls) + ")"
        if self.protected is not None:
            parts = [f"aes128gcm seq={self.protected.get('seq')}, {self.bytes} B"]
        if self.client_hello:
            ch = self.client_hello
            parts.append(
                f"ClientHello[{'/'.join(ch.versions)} sni={ch.sni or '-'} "
                f"groups={','.join(ch.key_share_groups) or '-'}]"
            )
        if self.server_hello:
            parts.append(
                f"ServerHello[{self.server_hello.version} {self.server_hello.cipher_suite}]"
            )
        if self.certificates:
            parts.append(f"certs={'; '.join(self.certificates)}")
        if self.alert_records:
            parts.append(f"{self.alert_records} alert records")
        return ", ".join(parts)


def _u16_list(data: bytes) -> list[int]:
    return [int.from_bytes(data[i : i + 2]) for i in range(0, len(data) - 1, 2)]


def _client_hello(body: bytes, notes: list[str], dtls: bool = False) -> ClientHelloSummary | None:
    from mitmproxy.tls import ClientHello  # maintained parser; imported lazily

    try:
        hello = ClientHello(body, dtls=dtls)
        extensions = list(hello.extensions)
        suites = list(hello.cipher_suites)
        sni, alpn = hello.sni, [p.decode("latin-1") for p in hello.alpn_protocols]
    except Exception as exc:  # noqa: BLE001 - hostile input must not break the proxy
        notes.append(f"ClientHello does not parse: {exc}")
        return None
    versions = [version_name(int.from_bytes(body[:2]))]
    groups: list[str] = []
    supported: list[str] = []
    for ext_type, ext_data in extensions:
        if ext_type == _EXT_SUPPORTED_GROUPS and len(ext_data) >= 2:
            offered = _u16_list(ext_data[2 : 2 + int.from_bytes(ext_data[:2])])
            supported = [group_name(g) for g in offered if not _grease(g)]
        elif ext_type == _EXT_SUPPORTED_VERSIONS and ext_data:
            offered = _u16_list(ext_data[1 : 1 + ext_data[0]])
            versions = [version_name(v) for v in offered if not _grease(v)]
        elif ext_type == _EXT_KEY_SHARE and len(ext_data) >= 2:
            at, end = 2, 2 + int.from_bytes(ext_data[:2])
            while at + 4 <= min(end, len(ext_data)):
                group = int.from_bytes(ext_data[at : at + 2])
                if not _grease(group):
                    groups.append(group_name(group))
                at += 4 + int.from_bytes(ext_data[at + 2 : at + 4])
    return ClientHelloSummary(
        versions=versions,
        cipher_suites=[suite_name(s) for s in suites if not _grease(s)],
        sni=sni,
        alpn=alpn,
        key_share_groups=groups,
        supported_groups=supported,
        extensions=[extension_name(t) for t, _ in extensions if not _grease(t)],
    )


def _server_hello(body: bytes, notes: list[str]) -> ServerHelloSummary | None:
    try:
        version = int.from_bytes(body[0:2])
        random = body[2:34]
        sid_len = body[34]
        at = 35 + sid_len
        suite = int.from_bytes(body[at : at + 2])
        at += 3  # suite + compression method
        if at + 2 <= len(body):
            end = at + 2 + int.from_bytes(body[at : at + 2])
            at += 2
            while at + 4 <= min(end, len(body)):
                ext_type = int.from_bytes(body[at : at + 2])
                ext_len = int.from_bytes(body[at + 2 : at + 4])
                if ext_type == _EXT_SUPPORTED_VERSIONS and ext_len == 2:
                    version = int.from_bytes(body[at + 4 : at + 6])
                at += 4 + ext_len
        if len(body) < at or len(random) != 32:
            raise ValueError("too short")
    except (IndexError, ValueError) as exc:
        notes.append(f"ServerHello does not parse: {exc}")
        return None
    return ServerHelloSummary(version_name(version), suite_name(suite), random == _HRR_RANDOM)


def _certificates(body: bytes, notes: list[str]) -> list[tuple[str, str | None]]:
    """TLS 1.2 Certificate message: a 3-byte list length, then 3-byte-prefixed DER.

    Each certificate as its subject and the device serial number it claims (X.520
    serialNumber, as in an IDevID), if any.
    """
    subjects: list[tuple[str, str | None]] = []
    at, end = 3, 3 + int.from_bytes(body[:3])
    while at + 3 <= min(end, len(body)):
        length = int.from_bytes(body[at : at + 3])
        der = body[at + 3 : at + 3 + length]
        try:
            # A malformed certificate is the sender's problem: a note, not a proxy warning.
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                cert = x509.load_der_x509_certificate(der)
                subject = cert.subject.rfc4514_string({NameOID.SERIAL_NUMBER: "serialNumber"})
                subjects.append((subject, device_serial(cert)))
            notes.extend(f"certificate: {w.message}" for w in caught)
        except Exception as exc:  # noqa: BLE001 - a corrupt DER raised KeyError once (fuzzing)
            notes.append(f"certificate does not parse: {type(exc).__name__}: {exc}")
        at += 3 + length
    return subjects


def _protected_header(body: bytes) -> dict[str, Any]:
    """RFC 8188 header: salt(16) rs(4) idlen(1) keyid; keyid is the ATLS sequence."""
    if len(body) < 21:
        return {"error": "shorter than an aes128gcm header"}
    idlen = body[20]
    keyid = body[21 : 21 + idlen]
    seq: int | str = int(keyid) if keyid.isdigit() and len(keyid) < 20 else keyid.hex()
    return {"coding": "aes128gcm", "record_size": int.from_bytes(body[16:20]), "seq": seq}


def summarize(body: bytes, content_encoding: str | None = None) -> FlightSummary:
    """Everything an observer can read from one ATLS message body; never raises."""
    summary = FlightSummary(bytes=len(body))
    try:
        _summarize_into(summary, body, content_encoding)
    except Exception as exc:  # noqa: BLE001 - a parser bug must not take the proxy down
        summary.notes.append(f"summary incomplete: {type(exc).__name__}: {exc}")
    return summary


def _summarize_into(summary: FlightSummary, body: bytes, content_encoding: str | None) -> None:
    if (content_encoding or "").strip().lower() == "aes128gcm":
        summary.protected = _protected_header(body)
        return
    handshake_bytes = bytearray()
    dtls_fragments: list[bytes] = []
    plaintext = True  # handshake records before a ChangeCipherSpec are readable
    try:
        for record in iter_records(body):
            summary.records.append((content_type_name(record.content_type), len(record.payload)))
            if record.dtls:
                summary.dtls.append((record.epoch or 0, record.sequence or 0))
            if record.content_type is ContentType.CHANGE_CIPHER_SPEC:
                plaintext = False
            elif record.content_type is ContentType.ALERT:
                summary.alert_records += 1
            elif record.content_type is ContentType.HANDSHAKE and plaintext:
                if record.dtls:
                    plaintext = record.epoch == 0  # epoch 1 and later are encrypted
                    if plaintext:
                        dtls_fragments.append(record.payload)
                else:
                    handshake_bytes += record.payload
            elif record.content_type is ContentType.APPLICATION_DATA:
                plaintext = False
    except RecordError as exc:
        summary.not_records = True
        summary.notes.append(f"not TLS records: {exc}")
    messages = _dtls_messages(dtls_fragments) if summary.dtls else _tls_messages(handshake_bytes)
    for msg_type, msg in messages:
        try:
            name = HandshakeType(msg_type).name.lower()
        except ValueError:
            summary.notes.append(f"unknown handshake type {msg_type}")
            break
        summary.handshake.append(name)
        if msg_type == HandshakeType.CLIENT_HELLO:
            summary.client_hello = _client_hello(msg, summary.notes, dtls=bool(summary.dtls))
            if summary.dtls and len(msg) > 35 and len(msg) > 35 + msg[34]:
                summary.cookie_length = msg[35 + msg[34]]  # after version, random, session id
        elif msg_type == HandshakeType.HELLO_VERIFY_REQUEST and len(msg) > 2:
            summary.cookie_length = msg[2]
        elif msg_type == HandshakeType.SERVER_HELLO:
            summary.server_hello = _server_hello(msg, summary.notes)
            if summary.server_hello and summary.server_hello.version == "1.3":
                break  # everything after a TLS 1.3 ServerHello is encrypted
        elif msg_type == HandshakeType.CERTIFICATE:
            for subject, serial in _certificates(msg, summary.notes):
                summary.certificates.append(subject)
                if serial is not None:
                    summary.certificate_serials.append(serial)


def _tls_messages(data: bytearray) -> list[tuple[int, bytes]]:
    """TLS handshake messages: a 4-byte header (type, 24-bit length) each."""
    messages, at = [], 0
    while at + 4 <= len(data):
        length = int.from_bytes(data[at + 1 : at + 4])
        msg = bytes(data[at + 4 : at + 4 + length])
        if len(msg) < length:
            break
        messages.append((data[at], msg))
        at += 4 + length
    return messages


def _dtls_messages(fragments: list[bytes]) -> list[tuple[int, bytes]]:
    """DTLS handshake messages from fragments with 12-byte headers (RFC 6347 4.2.2).

    Header: type, 24-bit length, 16-bit message_seq, 24-bit fragment offset and
    length. Fragments are put together by message_seq; incomplete messages are
    left out (the rest of the flight may be in another body).
    """
    parts: dict[int, tuple[int, bytearray, set[int]]] = {}
    available = sum(len(p) for p in fragments)  # no message can be longer: bounds memory
    for payload in fragments:
        at = 0
        while at + 12 <= len(payload):
            msg_type = payload[at]
            length = int.from_bytes(payload[at + 1 : at + 4])
            seq = int.from_bytes(payload[at + 4 : at + 6])
            offset = int.from_bytes(payload[at + 6 : at + 9])
            frag_len = int.from_bytes(payload[at + 9 : at + 12])
            fragment = payload[at + 12 : at + 12 + frag_len]
            if len(fragment) < frag_len or offset + frag_len > length or length > available:
                break
            _, buffer, covered = parts.setdefault(seq, (msg_type, bytearray(length), set()))
            if len(buffer) == length:
                buffer[offset : offset + frag_len] = fragment
                covered.update(range(offset, offset + frag_len))
            at += 12 + frag_len
    return [
        (msg_type, bytes(buffer))
        for _, (msg_type, buffer, covered) in sorted(parts.items())
        if len(covered) == len(buffer)
    ]
