"""Handshake throughput: prints figures and ratios, asserts nothing.

1. In process: pair handshakes/s of ATLSSession (client+server, memory BIOs,
   mutual auth) against a bare pyOpenSSL memory-BIO loop with the same
   contexts, for TLS 1.3 and 1.2. The ratio is ATLSSession's overhead.
2. On loopback, against one atls-service process: ATLS handshakes over HTTP
   (one keep-alive carrier connection) against network TLS handshakes to the
   same server port (a new TCP+TLS connection each, with and without one GET).

Every loop is bounded by a count and a time budget.
Usage: python bench/handshake.py [--count N] [--seconds S] [--skip-network]
"""

from __future__ import annotations

import argparse
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from cryptography import x509
from OpenSSL import SSL, crypto

from atls.loopback import run_handshake
from atls.pki import init_pki
from atls.session import ATLSSession, Role, TLSConfig, TLSContext, TLSVersion
from atls_client.client import ATLSClient, CarrierSettings
from atls_scenarios.processes import ServiceProcess


def rate(fn: Callable[[], object], count: int, seconds: float) -> tuple[float, int]:
    fn()  # warm up
    done, start = 0, time.perf_counter()
    while done < count and time.perf_counter() - start < seconds:
        fn()
        done += 1
    return done / (time.perf_counter() - start), done


def bare_pair(client_ctx: SSL.Context, server_ctx: SSL.Context) -> None:
    """The baseline: the same handshake with nothing but pyOpenSSL."""
    c, s = SSL.Connection(client_ctx, None), SSL.Connection(server_ctx, None)
    c.set_connect_state()
    s.set_accept_state()
    for _ in range(8):
        for a, b in ((c, s), (s, c)):
            try:
                a.do_handshake()
            except SSL.WantReadError:
                pass
            try:
                data = a.bio_read(65536)
            except SSL.WantReadError:
                data = b""
            if data:
                b.bio_write(data)
        try:
            s.do_handshake()
            c.do_handshake()
            return
        except SSL.WantReadError:
            continue
    raise RuntimeError("bare handshake did not finish")


def in_process(pki_dir: Path, count: int, seconds: float) -> list[tuple[str, float, float]]:
    pki = init_pki(pki_dir)
    rows = []
    for version in (TLSVersion.TLS1_3, TLSVersion.TLS1_2):
        server = TLSConfig(
            Role.SERVER,
            identity=pki.service(),
            trust_anchors=pki.vendor_ca().cert_pem,
            require_client_certificate=True,
            min_version=version,
            max_version=version,
        ).build()
        client = TLSConfig(
            Role.CLIENT,
            identity=pki.device("device-0001"),
            trust_anchors=pki.vendor_ca().cert_pem,
            server_name="atls-service",
            min_version=version,
            max_version=version,
        ).build()
        bare_client, bare_server = _bare_contexts(client, server)
        base, _ = rate(lambda c=bare_client, s=bare_server: bare_pair(c, s), count, seconds)
        atls, _ = rate(
            lambda c=client, s=server: run_handshake(ATLSSession(c), ATLSSession(s)), count, seconds
        )
        rows.append((version.name, base, atls))
    return rows


def _bare_contexts(client: TLSContext, server: TLSContext) -> tuple[SSL.Context, SSL.Context]:
    """Plain pyOpenSSL contexts with the same material and versions, no callbacks."""

    def plain(config: TLSConfig, method: int, mode: int) -> SSL.Context:
        ctx = SSL.Context(method)
        ctx.set_min_proto_version(int(config.min_version))
        ctx.set_max_proto_version(int(config.max_version))
        assert config.identity is not None and config.trust_anchors is not None
        ctx.use_certificate(config.identity.certificate)
        ctx.use_privatekey(config.identity.private_key)
        for anchor in x509.load_pem_x509_certificates(config.trust_anchors):
            ctx.get_cert_store().add_cert(crypto.X509.from_cryptography(anchor))
        ctx.set_verify(mode)
        return ctx

    return (
        plain(client.config, SSL.TLS_CLIENT_METHOD, SSL.VERIFY_PEER),
        plain(
            server.config, SSL.TLS_SERVER_METHOD, SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT
        ),
    )


def network(pki_dir: Path, count: int, seconds: float) -> list[tuple[str, float]]:
    pki = init_pki(pki_dir)
    rows: list[tuple[str, float]] = []
    with ServiceProcess(pki.root, pki_dir / "logs") as service:
        config = TLSConfig(
            Role.CLIENT, identity=pki.device("device-0001"), trust_anchors=pki.vendor_ca().cert_pem
        )
        carrier = CarrierSettings(network_tls_verify=pki.vendor_ca_cert)
        with ATLSClient(service.url, config, carrier=carrier) as client:
            rows.append(
                (
                    "ATLS handshake over HTTP (mutual auth, keep-alive carrier)",
                    rate(client.handshake, count, seconds)[0],
                )
            )

            def atls_and_get() -> None:
                client.handshake()
                client.http.get("/api/hello")

            rows.append(
                (
                    "ATLS handshake + one GET over ATLS (export mode)",
                    rate(atls_and_get, count, seconds)[0],
                )
            )
        context = ssl.create_default_context(cafile=str(pki.vendor_ca_cert))

        def network_tls() -> None:
            with (
                socket.create_connection(("127.0.0.1", service.port)) as raw,
                context.wrap_socket(raw, server_hostname="127.0.0.1"),
            ):
                pass

        rows.append(
            (
                "network TLS handshake (new TCP+TLS, server auth)",
                rate(network_tls, count, seconds)[0],
            )
        )

        def network_get() -> None:
            with httpx.Client(verify=context) as http:
                http.get(service.url + "/api/hello")

        rows.append(
            ("network TLS + one GET (new httpx connection)", rate(network_get, count, seconds)[0])
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=400, help="max iterations per row")
    parser.add_argument("--seconds", type=float, default=4.0, help="max seconds per row")
    parser.add_argument("--skip-network", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pki_dir = Path(tmp)
        openssl = SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()
        print(f"Python {sys.version.split()[0]}, {openssl}")
        print("\nIn process, pair handshakes/s (client+server, ECDSA P-256, mutual auth)")
        print(f"{'version':<8} {'bare pyOpenSSL':>15} {'ATLSSession':>12} {'ratio':>7}")
        for version, base, atls in in_process(pki_dir, args.count, args.seconds):
            print(f"{version:<8} {base:>15.0f} {atls:>12.0f} {atls / base:>7.2f}")
        if args.skip_network:
            return 0
        print("\nLoopback, one atls-service process (uvicorn, 1 worker), per second")
        rows = network(pki_dir, args.count, args.seconds)
        baseline = rows[2][1]
        print(f"{'':<62} {'rate/s':>8} {'vs network TLS':>15}")
        for name, value in rows:
            print(f"{name:<62} {value:>8.0f} {value / baseline:>15.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
