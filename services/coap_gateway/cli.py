"""``atls-gateway``: the CoAP front for constrained devices.

Listens for CoAP over UDP and forwards ATLS flights (and OSCORE messages) to
the service's HTTP binding, through the middlebox when ``--proxy`` is given.
Logs are JSON lines on stderr; SIGTERM stops it (exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from atls.coap_binding import (
    CONTENT_FORMAT_ATLS,
    CONTENT_FORMAT_ATLS_PROTECTED,
    MODE_OPTION,
    SESSION_OPTION,
    CoAPSettings,
)

from .gateway import GatewayLimits, GatewaySettings, serve_forever, start_gateway


def build_parser() -> argparse.ArgumentParser:
    d = GatewayLimits()
    p = argparse.ArgumentParser(
        prog="atls-gateway",
        description="CoAP gateway: forwards ATLS flights from devices to the service over HTTP",
    )
    p.add_argument("--service", required=True, help="service base URL, e.g. https://svc:8443")
    p.add_argument("--host", default="127.0.0.1", help="CoAP listen address")
    p.add_argument("--port", type=int, default=5683, help="CoAP listen port (5683)")
    p.add_argument("--proxy", help="the middlebox as an HTTP proxy, e.g. http://mb:8080")
    tls = p.add_mutually_exclusive_group()
    tls.add_argument("--network-ca", type=Path, help="CA bundle for network TLS to the service")
    tls.add_argument(
        "--no-network-tls-verify",
        action="store_true",
        help="do not validate network TLS (the ATLS session inside is still end to end)",
    )
    p.add_argument("--content-format", type=int, default=CONTENT_FORMAT_ATLS)
    p.add_argument("--protected-content-format", type=int, default=CONTENT_FORMAT_ATLS_PROTECTED)
    p.add_argument("--session-option", type=int, default=SESSION_OPTION)
    p.add_argument("--mode-option", type=int, default=MODE_OPTION)
    p.add_argument("--max-sessions", type=int, default=d.max_sessions)
    p.add_argument("--session-ttl", type=float, default=d.session_ttl)
    p.add_argument("--max-transfers", type=int, default=d.max_transfers)
    p.add_argument("--max-flight-bytes", type=int, default=d.max_flight_bytes)
    p.add_argument("--transfer-ttl", type=float, default=d.transfer_ttl)
    p.add_argument("--max-responses", type=int, default=d.max_responses)
    p.add_argument("--max-forwards", type=int, default=d.max_forwards)
    p.add_argument("--timeout", type=float, default=d.timeout)
    return p


def settings_from(args: argparse.Namespace) -> GatewaySettings:
    verify: bool | Path = True
    if args.no_network_tls_verify:
        verify = False
    elif args.network_ca:
        verify = args.network_ca
    return GatewaySettings(
        service_url=args.service,
        proxy=args.proxy,
        network_tls_verify=verify,
        coap=CoAPSettings(
            args.content_format,
            args.protected_content_format,
            args.session_option,
            args.mode_option,
        ),
        limits=GatewayLimits(
            max_sessions=args.max_sessions,
            session_ttl=args.session_ttl,
            max_transfers=args.max_transfers,
            max_flight_bytes=args.max_flight_bytes,
            transfer_ttl=args.transfer_ttl,
            max_responses=args.max_responses,
            max_forwards=args.max_forwards,
            timeout=args.timeout,
        ),
    )


async def _run(settings: GatewaySettings, host: str, port: int) -> None:
    gateway = await start_gateway(settings, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await serve_forever(gateway, stop)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    logging.getLogger("coap-server").setLevel(logging.WARNING)
    logging.getLogger("coap").setLevel(logging.WARNING)
    try:
        settings = settings_from(args)
    except ValueError as exc:
        print(f"atls-gateway: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_run(settings, args.host, args.port))
    except OSError as exc:
        print(f"atls-gateway: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
