"""``atls-service``: run the ATLS service on uvicorn."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import secrets
import signal
import ssl
import sys
from pathlib import Path

from atls.cli_options import add_profile_arguments, profile_settings
from atls.keys import DEFAULT_EXPORTER_LABEL, ExporterSettings
from atls.pki import PKIError, init_pki
from atls.session import TLSVersion, open_keylog
from atls.store import SessionLimits

from .app import ServiceSettings, create_app
from .interop import InteropSettings
from .limits import ConnectionLimits, guarded_protocol
from .logs import configure_logging, log_event


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="atls-service",
        description="Serve ATLS (POST /.well-known/atls and draft-00 /atls) plus a demo API.",
    )
    p.add_argument(
        "--pki",
        type=Path,
        default=Path("pki"),
        help="test PKI directory (created if missing; default: ./pki)",
    )
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8443, help="listen port (default 8443)")
    p.add_argument(
        "--plain-http",
        action="store_true",
        help="serve plain HTTP instead of network TLS (e.g. behind a gateway)",
    )
    p.add_argument(
        "--http",
        choices=["httptools", "h11"],
        default="httptools",
        help="HTTP parser: httptools (compiled, default; about a third of the service's CPU "
        "per ATLS handshake went to h11) or h11 (pure Python)",
    )
    p.add_argument(
        "--network-client-auth",
        choices=["none", "optional", "required"],
        default="none",
        help="ask devices for their certificate on the network TLS too (vendor CA); "
        "'optional' lets the benchmark compare mutual network TLS with ATLS on one server",
    )
    p.add_argument(
        "--no-client-auth",
        action="store_true",
        help="do not demand a device certificate in the ATLS handshake",
    )
    p.add_argument("--tls-max", default="1.3", help="highest ATLS TLS version (1.2 or 1.3)")
    p.add_argument("--tls-min", default="1.2", help="lowest ATLS TLS version (1.2 or 1.3)")
    p.add_argument(
        "--exporter-label",
        default=DEFAULT_EXPORTER_LABEL,
        help=f"exporter label (default {DEFAULT_EXPORTER_LABEL})",
    )
    p.add_argument(
        "--exporter-context",
        choices=["absent", "empty"],
        default="absent",
        help="exporter context: absent (default, portable) or empty",
    )
    d = SessionLimits()
    p.add_argument("--max-handshakes", type=int, default=d.max_handshakes)
    p.add_argument("--max-handshakes-per-client", type=int, default=d.max_handshakes_per_client)
    p.add_argument("--max-sessions", type=int, default=d.max_sessions)
    p.add_argument(
        "--max-sessions-per-device",
        type=int,
        default=d.max_sessions_per_identity,
        help="established sessions per device identity (certificate serial); beyond it "
        f"that device's oldest session ends (default {d.max_sessions_per_identity})",
    )
    p.add_argument("--handshake-ttl", type=float, default=d.handshake_ttl, help="seconds")
    p.add_argument("--idle-ttl", type=float, default=d.idle_ttl, help="seconds")
    p.add_argument("--max-flight-bytes", type=int, default=d.max_flight_bytes)
    p.add_argument(
        "--operator-token-file",
        type=Path,
        help="file holding the operator API token (default: PKI/operator-token, "
        "created with a random token if missing; env ATLS_OPERATOR_TOKEN wins)",
    )
    p.add_argument(
        "--voucher-lifetime",
        type=float,
        default=600.0,
        help="seconds a voucher stays valid (default 600)",
    )
    p.add_argument(
        "--keylog",
        type=Path,
        metavar="FILE",
        help="append every ATLS session's secrets to FILE (SSLKEYLOGFILE format, mode 0600)",
    )
    add_profile_arguments(p.add_argument_group("TLS profile (TLS and DTLS sessions)"))
    p.add_argument(
        "--export-file",
        type=Path,
        help="interop runner only (interop/CONTRACT.md): append the hex of 32 bytes exported "
        "(label application-layer-tls, --exporter-context) per established session",
    )
    c = ConnectionLimits()
    p.add_argument(
        "--header-timeout",
        type=float,
        default=c.header_timeout,
        help="seconds a request head may take to arrive, also between keep-alive requests; "
        f"past it: 408 and the connection closes (default {c.header_timeout:g})",
    )
    p.add_argument(
        "--body-timeout",
        type=float,
        default=c.body_timeout,
        help="seconds a whole request body may take to arrive; past it: 408 and the "
        f"connection closes (default {c.body_timeout:g})",
    )
    p.add_argument(
        "--keep-alive",
        type=int,
        default=c.keep_alive,
        help=f"seconds an idle keep-alive connection stays open (default {c.keep_alive})",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=c.max_connections,
        help="concurrent connections; beyond it a new one gets 503 and is closed "
        f"(default {c.max_connections})",
    )
    p.add_argument(
        "--max-header-bytes",
        type=int,
        default=c.max_header_bytes,
        help=f"size of a request head; beyond it: 431 (default {c.max_header_bytes})",
    )
    p.add_argument("--log-level", default="info")
    return p


def operator_token(path: Path) -> str:
    """ATLS_OPERATOR_TOKEN, else the token in ``path`` (created, mode 0600, if missing)."""
    token = os.environ.get("ATLS_OPERATOR_TOKEN")
    if token:
        return token
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(24) + "\n")
    token = path.read_text().strip()
    if not token:
        raise ValueError(f"operator token file {path} is empty")
    return token


# Set to a file name, the whole run is profiled in CPU time (cProfile) and the
# stats are written there at exit: how `atls-testbed bench --profile` shows
# where the service's time goes.
PROFILE_ENV = "ATLS_SERVICE_PROFILE"


def main(argv: list[str] | None = None) -> int:
    path = os.environ.get(PROFILE_ENV)
    if not path:
        return _main(argv)
    import cProfile
    import time

    profiler = cProfile.Profile(time.process_time)
    try:
        return profiler.runcall(_main, argv)
    finally:
        profiler.dump_stats(path)


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        pki = init_pki(args.pki)
        limits = SessionLimits(
            max_handshakes=args.max_handshakes,
            max_handshakes_per_client=args.max_handshakes_per_client,
            max_sessions=args.max_sessions,
            max_sessions_per_identity=args.max_sessions_per_device,
            handshake_ttl=args.handshake_ttl,
            idle_ttl=args.idle_ttl,
            max_flight_bytes=args.max_flight_bytes,
        )
        interop = {"export_file": args.export_file} if args.export_file else {}
        settings = (InteropSettings if interop else ServiceSettings).from_pki(
            args.pki,
            **interop,
            require_client_certificate=not args.no_client_auth,
            limits=limits,
            exporter=ExporterSettings(
                args.exporter_label, None if args.exporter_context == "absent" else b""
            ),
            min_version=TLSVersion.parse(args.tls_min),
            max_version=TLSVersion.parse(args.tls_max),
            operator_token=operator_token(args.operator_token_file or args.pki / "operator-token"),
            voucher_lifetime=datetime.timedelta(seconds=args.voucher_lifetime),
            keylog=open_keylog(args.keylog),
            tls_options=profile_settings(args),
            connection=ConnectionLimits(
                header_timeout=args.header_timeout,
                body_timeout=args.body_timeout,
                keep_alive=args.keep_alive,
                max_connections=args.max_connections,
                max_header_bytes=args.max_header_bytes,
            ),
        )
        settings.tls_config()  # refuse bad TLS settings here, with exit 2
    except (PKIError, ValueError, OSError) as exc:
        print(f"atls-service: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    base: type[asyncio.Protocol]
    if args.http == "httptools":
        try:
            from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

            base = HttpToolsProtocol
        except ImportError:
            print("atls-service: --http httptools needs httptools", file=sys.stderr)
            return 2
    else:
        from uvicorn.protocols.http.h11_impl import H11Protocol

        base = H11Protocol

    certfile = None if args.plain_http else str(pki.service_cert)
    keyfile = None if args.plain_http else str(pki.service_key)
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal
    # with the handlers it found; make that a plain exit 0 after a clean stop.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: sys.exit(0))
    log_event(
        "service.config",
        host=args.host,
        port=args.port,
        network_tls=not args.plain_http,
        pki=str(args.pki),
        http_parser=args.http,
    )
    network_auth = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL}.get(
        args.network_client_auth, ssl.CERT_REQUIRED
    )
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        loop="uvloop" if args.http == "httptools" else "asyncio",
        log_config=None,
        access_log=False,
        ws="none",  # no WebSocket route: skip importing a WebSocket stack at start
        timeout_graceful_shutdown=5,
        # the limits live in the protocol subclass and the ASGI middleware, so they
        # hold with either parser (--http)
        http=guarded_protocol(base, settings.connection),
        timeout_keep_alive=settings.connection.keep_alive,
        # h11 buffers an incomplete head up to this; the guard answers 431 first
        h11_max_incomplete_event_size=2 * settings.connection.max_header_bytes + 4096,
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
        ssl_cert_reqs=network_auth,
        ssl_ca_certs=str(pki.vendor_ca_cert) if network_auth != ssl.CERT_NONE else None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
