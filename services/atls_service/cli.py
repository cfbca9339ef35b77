"""``atls-service``: run the ATLS service on uvicorn."""

from __future__ import annotations

import argparse
import datetime
import os
import secrets
import signal
import sys
from pathlib import Path

from atls.keys import DEFAULT_EXPORTER_LABEL, ExporterSettings
from atls.pki import PKIError, init_pki
from atls.session import TLSVersion, open_keylog
from atls.store import SessionLimits

from .app import ServiceSettings, create_app
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
    p.add_argument(
        "--keep-alive",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="close idle HTTP connections after SECONDS (default 5, uvicorn's): a middlebox "
        "that reuses its upstream connection across a busy device's pauses needs more",
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


def main(argv: list[str] | None = None) -> int:
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
        settings = ServiceSettings.from_pki(
            args.pki,
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
        )
        settings.tls_config()  # refuse bad TLS settings here, with exit 2
    except (PKIError, ValueError, OSError) as exc:
        print(f"atls-service: {exc}", file=sys.stderr)
        return 2
    import uvicorn

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
    )
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
        timeout_keep_alive=max(1, round(args.keep_alive)),
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
