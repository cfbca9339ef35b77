"""Network TLS as the device sees it: validate, and record what was presented.

``probe`` makes an ordinary HTTPS request validated against the device's own
anchors (never the system store: an IoT device knows only what it shipped
with and what it was given). When validation fails it fetches, separately
and without validating, the chain the network presented, so the device can
report the middlebox's certificate (draft section 6.2).
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
from cryptography import x509

from atls.pki import CERT_PARSE_ERRORS

CONNECT_LIMIT = 65536
MAX_PROBE_BYTES = 1 << 20


@dataclass
class ProbeResult:
    ok: bool
    detail: str
    status: int | None = None
    body: bytes = b""
    presented_chain: list[x509.Certificate] = field(default_factory=list)
    validation_failed: bool = False


def _context(anchors_pem: bytes) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=anchors_pem.decode())
    return context


def probe(
    url: str,
    anchors_pem: bytes,
    *,
    proxy: str | None = None,
    timeout: float = 10.0,
    max_bytes: int = MAX_PROBE_BYTES,
) -> ProbeResult:
    """GET ``url`` over network TLS validated against ``anchors_pem`` only.

    At most ``max_bytes`` of the answer are read; a larger one fails the probe.
    """
    try:
        with (
            httpx.Client(
                verify=_context(anchors_pem), proxy=proxy, timeout=timeout, trust_env=False
            ) as client,
            client.stream("GET", url) as response,
        ):
            declared = response.headers.get("content-length", "")
            body = b""
            too_large = declared.isdigit() and int(declared) > max_bytes
            if not too_large:
                for chunk in response.iter_raw():
                    body += chunk
                    if len(body) > max_bytes:
                        too_large, body = True, body[:max_bytes]
                        break
            if too_large:
                return ProbeResult(
                    False,
                    f"HTTP {response.status_code} with an answer larger than {max_bytes} bytes",
                    response.status_code,
                    body,
                )
    except httpx.HTTPError as exc:
        text = str(exc) or type(exc).__name__
        if "CERTIFICATE_VERIFY_FAILED" in text:
            chain = presented_chain(url, proxy=proxy, timeout=timeout)
            who = chain[0].issuer.rfc4514_string() if chain else "unknown issuer"
            return ProbeResult(
                False,
                f"network TLS does not validate ({text}); presented certificate issued by {who}",
                presented_chain=chain,
                validation_failed=True,
            )
        return ProbeResult(False, f"{type(exc).__name__}: {text}")
    return ProbeResult(
        response.status_code < 400,
        f"HTTP {response.status_code}",
        response.status_code,
        body,
    )


def presented_chain(
    url: str, *, proxy: str | None = None, timeout: float = 10.0
) -> list[x509.Certificate]:
    """The certificates the network presents for ``url`` (unvalidated, leaf first)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 443
    try:
        if proxy:
            proxy_parts = urlsplit(proxy)
            sock = socket.create_connection(
                (proxy_parts.hostname or "", proxy_parts.port or 8080), timeout=timeout
            )
            target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
            reply = b""
            while b"\r\n\r\n" not in reply and len(reply) < CONNECT_LIMIT:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
            if not reply.split(b" ", 2)[1:2] == [b"200"]:
                sock.close()
                return []
        else:
            sock = socket.create_connection((host, port), timeout=timeout)
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with context.wrap_socket(sock, server_hostname=host) as tls:
            if hasattr(tls, "get_unverified_chain"):  # Python 3.13+: DER bytes, leaf first
                ders = list(tls.get_unverified_chain() or [])
            else:
                leaf = tls.getpeercert(binary_form=True)
                ders = [leaf] if leaf else []
        chain = [x509.load_der_x509_certificate(d) for d in ders]
        for cert in chain:  # fields parse lazily: touch the names the report uses
            cert.subject.rfc4514_string(), cert.issuer.rfc4514_string()
        return chain
    except OSError:
        return []
    except CERT_PARSE_ERRORS:  # a hostile network may present anything
        return []
