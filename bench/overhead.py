"""Bytes on the wire: per protected message, and per handshake. Prints tables, asserts nothing.

Every figure is measured from real sessions (pyOpenSSL memory BIOs, aiocoap's
OSCORE, http_ece for RFC 8188) and printed beside the figures published in
draft-ietf-iotops-security-protocol-comparison-08 (January 2025; the source at
github.com/lwig-wg/protocol-comparison, commit a0d541f):

- per message: section 4.1 (Overhead for Protection of Application Data,
  Summary), the figure "Overhead (8 bytes ICV) in bytes as a function of
  sequence number", column '05': a 6-byte plaintext; "if 16 bytes tag are
  used, all numbers increase by 8";
- per handshake: section 3.1 (Summary), the figure comparing DTLS 1.3 and
  TLS 1.3 with CCM_8, secp256r1 and ECDSA without Connection ID (raw public
  keys, mutual authentication), and section 3.5 for TLS 1.2 vs 1.3 (the
  Illustrated TLS examples: server certificate only).

Ours differ in kind where the table says so: X.509 chains (not raw public
keys) and mutual authentication as ATLS runs them, DTLS 1.2 (no stack here
has DTLS 1.3), and HelloVerifyRequest (the draft leaves DoS protection out).

Usage: python bench/overhead.py [--sizes 6,100,1000] [--skip-network]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import textwrap
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import aiocoap
import httpx
from aiocoap.message import Direction
from aiocoap.numbers.codes import Code

from atls.config import Mode, Role, TLSConfig, TLSVersion
from atls.dtls import DTLSContext, DTLSSession
from atls.keys import export_keys
from atls.loopback import run_datagram_handshake, run_handshake
from atls.oscore import ATLSSecurityContext
from atls.pki import PKIDirectory, init_pki
from atls.protection import ClientProtector, ServerProtector
from atls.session import ATLSSession
from atls_client.client import ATLSClient, CarrierSettings
from atls_scenarios.processes import ServiceProcess

SOURCE = (
    "draft-ietf-iotops-security-protocol-comparison-08 (Jan 2025), "
    "github.com/lwig-wg/protocol-comparison a0d541f"
)
# Section 4.1, 8-byte ICV, sequence number '05', Connection/Sender ID ''.
PUBLISHED_RECORD = {
    "TLS 1.3": 14,
    "TLS 1.2": 21,
    "DTLS 1.2": 29,
    "DTLS 1.3": 11,
    "OSCORE request": 13,
    "OSCORE response": 11,
}
# Section 3.1, CCM_8 + secp256r1 + ECDSA, raw public keys, no Connection ID: flights #1-#3.
PUBLISHED_HANDSHAKE = {
    "DTLS 1.3 RPKs, ECDHE": (179, 447, 254),
    "TLS 1.3 RPKs, ECDHE": (162, 394, 233),
}
# Section 3.5: the Illustrated TLS examples (server certificate only), totals.
PUBLISHED_ILLUSTRATED = {"TLS 1.2": 1550, "TLS 1.3": 1699}

CCM8_13 = "TLS_AES_128_CCM_8_SHA256"
GCM_13 = "TLS_AES_128_GCM_SHA256"
CCM8_12 = "ECDHE-ECDSA-AES128-CCM8:@SECLEVEL=0"
GCM_12 = "ECDHE-ECDSA-AES128-GCM-SHA256"


@dataclasses.dataclass
class Configs:
    pki: PKIDirectory

    def server(self, profile: str = "constrained", **kw: object) -> TLSConfig:
        base = TLSConfig(
            Role.SERVER,
            identity=self.pki.service(),
            trust_anchors=self.pki.vendor_ca().cert_pem,
            require_client_certificate=True,
        ).with_profile(profile)
        return dataclasses.replace(base, **kw)  # type: ignore[arg-type]

    def client(self, profile: str = "constrained", **kw: object) -> TLSConfig:
        base = TLSConfig(
            Role.CLIENT,
            identity=self.pki.device(self.pki.device_serials()[0]),
            trust_anchors=self.pki.vendor_ca().cert_pem,
            server_name="atls-service",
        ).with_profile(profile)
        return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def _tls_pair(cfg: Configs, version: TLSVersion, suite: str) -> tuple[ATLSSession, ATLSSession]:
    key = "tls13_ciphersuites" if version is TLSVersion.TLS1_3 else "tls12_cipher_list"
    pin: dict[str, Any] = {"min_version": version, "max_version": version, key: suite}
    client = ATLSSession(cfg.client(**pin).build())
    server = ATLSSession(cfg.server().build())
    run_handshake(client, server)
    return client, server


def _dtls_pair(cfg: Configs, suite: str) -> tuple[DTLSSession, DTLSSession]:
    client = DTLSSession(DTLSContext(cfg.client(tls12_cipher_list=suite)))
    server = DTLSSession(DTLSContext(cfg.server()), client_id="bench")
    run_datagram_handshake(client, server)
    return client, server


def _record_overhead(session: ATLSSession | DTLSSession, size: int) -> int:
    session.send(b"x" * size)
    out = session.data_to_send()
    wire = out if isinstance(out, bytes) else b"".join(out)
    return len(wire) - size


def _rfc8188(cfg: Configs, which: int, size: int) -> int:
    client, server = _tls_pair(cfg, TLSVersion.TLS1_3, GCM_13)
    keys_c, keys_s = export_keys(client), export_keys(server)
    sealer, opener = ClientProtector(keys_c), ServerProtector(keys_s)
    seq, body = sealer.seal_request(b"x" * size)
    opener.open_request(body)
    answer = opener.seal_response(seq, b"x" * size)
    return (len(body), len(answer))[which] - size


def _oscore(cfg: Configs, suite: str, which: int, size: int) -> int:
    """OSCORE request and response overhead, the draft's way.

    Counted: the OSCORE option (delta, length, flags, Partial IV, kid), the
    payload marker, the encrypted inner code and the tag; the CoAP header and
    token are not (they exist without OSCORE too). The inner payload marker
    (1 byte) is counted as well, and the Sender ID is one byte (the draft's
    row uses an empty one; its '42' column adds 1 to requests).
    """
    client, server = _tls_pair(cfg, TLSVersion.TLS1_3, suite)
    device = ATLSSecurityContext(export_keys(client), b"\x07", b"\x01")
    service = ATLSSecurityContext(export_keys(server), b"\x01", b"\x07")
    request = aiocoap.Message(code=Code.POST, payload=b"x" * size)
    request.direction = Direction.OUTGOING
    outer, request_id = device.protect(request)
    incoming = outer.copy()
    incoming.direction = Direction.INCOMING
    _, service_request_id = service.unprotect(incoming)
    response = aiocoap.Message(code=Code.CHANGED, payload=b"x" * size)
    response.direction = Direction.OUTGOING
    protected, _ = service.protect(response, service_request_id)
    sizes = []
    for message, mtype in ((outer, aiocoap.CON), (protected, aiocoap.ACK)):
        message.mtype, message.mid = mtype, 1  # what the transport would fill in
        header_and_token = 4 + len(message.token)
        sizes.append(len(message.encode()) - header_and_token - size)
    return sizes[which]


def per_message(cfg: Configs, sizes: list[int]) -> list[tuple[str, str, list[int], str]]:
    rows: list[tuple[str, str, list[int], str]] = []

    def add(name: str, aead: str, fn: Callable[[int], int], published: str) -> None:
        rows.append((name, aead, [fn(n) for n in sizes], published))

    for label, suite, tag in (("AES-128-CCM_8", CCM8_13, 8), ("AES-128-GCM", GCM_13, 16)):
        c13 = _tls_pair(cfg, TLSVersion.TLS1_3, suite)[0]
        add("TLS 1.3 records", label, partial(_record_overhead, c13), _pub("TLS 1.3", tag))
    for label, suite, tag in (("AES-128-CCM_8", CCM8_12, 8), ("AES-128-GCM", GCM_12, 16)):
        c12 = _tls_pair(cfg, TLSVersion.TLS1_2, suite)[0]
        add("TLS 1.2 records", label, partial(_record_overhead, c12), _pub("TLS 1.2", tag))
    for label, suite, tag in (("AES-128-CCM_8", CCM8_12, 8), ("AES-128-GCM", GCM_12, 16)):
        d12 = _dtls_pair(cfg, suite)[0]
        add(
            "DTLS 1.2 records",
            label,
            partial(_record_overhead, d12),
            _pub("DTLS 1.2", tag),
        )
    rows.append(("DTLS 1.3 records", "AES-128-CCM_8", [], _pub("DTLS 1.3", 8)))
    add("RFC 8188 request", "AES-128-GCM", partial(_rfc8188, cfg, 0), "-")
    add("RFC 8188 response", "AES-128-GCM", partial(_rfc8188, cfg, 1), "-")
    for label, suite, tag in (("AES-CCM-16-64-128", CCM8_13, 8), ("A128GCM", GCM_13, 16)):
        add(
            "OSCORE request",
            label,
            partial(_oscore, cfg, suite, 0),
            _pub("OSCORE request", tag),
        )
        add(
            "OSCORE response",
            label,
            partial(_oscore, cfg, suite, 1),
            _pub("OSCORE response", tag),
        )
    return rows


def _pub(name: str, tag: int) -> str:
    """The draft's 8-byte-ICV figure, + 8 for a 16-byte tag (as the draft says)."""
    return str(PUBLISHED_RECORD[name] + (tag - 8))


# ---------------------------------------------------------------------------
# Handshakes


def handshakes(cfg: Configs) -> list[tuple[str, list[int]]]:
    """Flight sizes (records only, as carried in every transport) of full mutual handshakes."""
    rows: list[tuple[str, list[int]]] = []
    cases: list[tuple[str, str, TLSVersion, dict[str, object]]] = [
        ("TLS 1.3, default profile (X25519MLKEM768)", "default", TLSVersion.TLS1_3, {}),
        (
            "TLS 1.3, constrained (P-256, CCM_8)",
            "constrained",
            TLSVersion.TLS1_3,
            {"tls13_ciphersuites": CCM8_13},
        ),
        (
            "TLS 1.2, constrained (P-256, CCM_8)",
            "constrained",
            TLSVersion.TLS1_2,
            {"tls12_cipher_list": CCM8_12},
        ),
    ]
    for name, profile, version, extra in cases:
        client = ATLSSession(
            cfg.client(profile, min_version=version, max_version=version, **extra).build()
        )
        server = ATLSSession(cfg.server(profile).build())
        transcript = run_handshake(client, server)
        rows.append((name, [len(f) for _, f in transcript.flights]))
    dtls_cases: list[tuple[str, str, dict[str, Any]]] = [
        ("DTLS 1.2, default profile (x25519)", "default", {}),
        ("DTLS 1.2, constrained (P-256, CCM_8)", "constrained", {"tls12_cipher_list": CCM8_12}),
    ]
    for name, profile, extra in dtls_cases:
        dclient = DTLSSession(DTLSContext(cfg.client(profile, **extra)))
        dserver = DTLSSession(DTLSContext(cfg.server(profile)), client_id="bench")
        transcript = run_datagram_handshake(dclient, dserver)
        rows.append((name + ", with HelloVerifyRequest", [len(f) for _, f in transcript.flights]))
    return rows


def over_http(cfg: Configs) -> list[tuple[str, int, int, int]]:
    """Handshake bytes through a real atls-service: records, and HTTP/1.1 messages around them.

    HTTP bytes are the request and status lines, the headers and the bodies as
    httpx sent and received them (the carrier's own TLS is not counted).
    """
    rows = []
    with (
        tempfile.TemporaryDirectory() as logs,
        ServiceProcess(
            cfg.pki.root, Path(logs), extra_args=["--profile", "constrained"]
        ) as service,
    ):
        for name, dtls, extra in (
            (
                "TLS 1.3, constrained (CCM_8)",
                False,
                {"tls13_ciphersuites": CCM8_13, "min_version": TLSVersion.TLS1_3},
            ),
            ("DTLS 1.2, constrained (CCM_8)", True, {"tls12_cipher_list": CCM8_12}),
        ):
            counted = _Counter()
            config = cfg.client(server_name="127.0.0.1", **extra)  # type: ignore[arg-type]
            carrier = CarrierSettings(network_tls_verify=cfg.pki.vendor_ca_cert)
            with ATLSClient(
                service.url,
                DTLSContext(config) if dtls else config,
                mode=Mode.EXPORT,
                carrier=carrier,
            ) as client:
                # count what the carrier sends and receives
                client._carrier = _Counting(client._carrier, counted)  # noqa: SLF001
                client.handshake()
            rows.append((name, counted.messages, counted.records, counted.http))
    return rows


class _Counting(httpx.BaseTransport):
    """The carrier's transport, counting every message it carries."""

    def __init__(self, inner: httpx.BaseTransport, counter: _Counter) -> None:
        self.inner, self.counter = inner, counter

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.counter.request(request)
        response = self.inner.handle_request(request)
        self.counter.response(response)
        return response

    def close(self) -> None:
        self.inner.close()


@dataclasses.dataclass
class _Counter:
    messages: int = 0
    records: int = 0
    http: int = 0

    def request(self, request: httpx.Request) -> None:
        request.read()
        self.messages += 1
        self.records += len(request.content)
        line = f"{request.method} {request.url.raw_path.decode()} HTTP/1.1"
        self.http += _http_size(line, request.headers, request.content)

    def response(self, response: httpx.Response) -> None:
        response.read()
        self.records += len(response.content)
        line = f"HTTP/1.1 {response.status_code} {response.reason_phrase}"
        self.http += _http_size(line, response.headers, response.content)


def _http_size(start_line: str, headers: httpx.Headers, body: bytes) -> int:
    lines = [start_line] + [f"{k}: {v}" for k, v in headers.multi_items()]
    return sum(len(line) + 2 for line in lines) + 2 + len(body)


# ---------------------------------------------------------------------------


NOTES_RECORD = (
    "DTLS 1.3: no stack installable here has it (OpenSSL 4.0 offers DTLS 1.2 only). "
    "RFC 8188: header 21 B + keyid (the sequence number in decimal) + 1 B padding "
    "delimiter + 16 B tag, whatever the TLS suite. OSCORE: aiocoap, keys from the ATLS "
    "exporter, 1-byte Sender ID (+1 on requests vs the draft's row) and the inner payload "
    "marker counted (+1). DTLS 1.2 at N=1000: two records, as the default 1024-byte MTU "
    "leaves 995 B of plaintext per record. Published 16-byte-tag figures: the draft's "
    "8-byte ones + 8, as it says."
)
NOTES_HANDSHAKE = (
    "Ours: X.509 chains both ways (ATLS authenticates the device); TLS 1.3's last "
    "server flight is two small stateful tickets (ATLS turns tickets off, but pyOpenSSL "
    "cannot set their number to 0); DTLS 1.2 with HelloVerifyRequest; "
    "the draft's rows: raw public keys, no DoS protection, DTLS 1.3."
)
NOTES_HTTP = (
    "HTTP/1.1: request/status lines, headers and bodies as httpx sent and received "
    "them; the carrier's TLS is not counted."
)


def _table(title: str, head: str, rows: list[str], notes: str) -> None:
    print(title)
    print(head)
    print("-" * len(head))
    for row in rows:
        print(row)
    print(textwrap.fill(notes, 100))
    print()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="6,100,1000", help="plaintext sizes, comma-separated")
    parser.add_argument("--skip-network", action="store_true", help="no atls-service process")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Configs(init_pki(Path(tmp) / "pki"))
        rows = []
        for name, aead, values, published in per_message(cfg, sizes):
            cells = "".join(f" {v:>7}" for v in values) or "".join(f" {'n/a':>7}" for _ in sizes)
            rows.append(f"{name:<20} {aead:<18}{cells} {published:>10}")
        columns = "".join(f" {'N=' + str(n):>7}" for n in sizes)
        _table(
            "Overhead per protected message of N bytes (bytes on the wire minus N)\n"
            f"published: {SOURCE},\nsection 4.1 (8-byte ICV, N=6, sequence number '05')",
            f"{'protection':<20} {'AEAD':<18}{columns} {'published':>10}",
            rows,
            NOTES_RECORD,
        )
        measured = handshakes(cfg)
        flights = max(len(f) for _, f in measured)
        rows = []
        for name, sizes_ in measured:
            cells = "".join(f" {v:>6}" for v in sizes_) + " " * 7 * (flights - len(sizes_))
            rows.append(f"{name:<60}{cells} {sum(sizes_):>7}")
        for name, figures in PUBLISHED_HANDSHAKE.items():
            cells = "".join(f" {v:>6}" for v in figures) + " " * 7 * (flights - len(figures))
            rows.append(f"{'published: ' + name + ' (CCM_8, P-256)':<60}{cells} {sum(figures):>7}")
        for name, total in PUBLISHED_ILLUSTRATED.items():
            label = f"published: {name}, Illustrated TLS (server cert only)"
            rows.append(f"{label:<60}{' ' * 7 * flights} {total:>7}")
        columns = "".join(f" {'#' + str(i + 1):>6}" for i in range(flights))
        _table(
            "Handshake bytes per flight (records: what ATLS carries in any transport)\n"
            f"published: {SOURCE},\nsections 3.1 and 3.5",
            f"{'handshake':<60}{columns} {'total':>7}",
            rows,
            NOTES_HANDSHAKE,
        )
        if not args.skip_network:
            rows = [
                f"{name:<34} {messages:>8} {records:>8} {http:>9} {http / records:>6.2f}"
                for name, messages, records, http in over_http(cfg)
            ]
            _table(
                "Handshake through a real atls-service (constrained profile), per layer",
                f"{'handshake':<34} {'POSTs':>8} {'records':>8} {'HTTP/1.1':>9} {'ratio':>6}",
                rows,
                NOTES_HTTP,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
