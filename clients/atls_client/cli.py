"""``atls-client``: one ATLS handshake and one request, with facts printed.

Exit codes (also in the README):
  0 success            3 carrier failed (connect, proxy, network TLS, timeout)
  1 unexpected error   4 ATLS/TLS failure (alert, bad flight, protection)
  2 usage or config    5 refused by the service or a middlebox (HTTP problem)
                       6 the inner request answered with status >= 400
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from atls.cli_options import add_dtls_arguments, add_profile_arguments, profile_settings
from atls.dtls import DTLSContext
from atls.http_binding import Mode, Problem, ServiceRefusedError, Variant
from atls.inner_http import InnerHTTPError, InnerRequest, InnerResponse
from atls.keys import DEFAULT_EXPORTER_LABEL, ExporterSettings
from atls.pki import PKIDirectory, PKIError
from atls.session import ATLSError, Role, TLSConfig, TLSVersion, open_keylog

from .client import ATLSClient, CarrierError, CarrierSettings

EXIT_OK, EXIT_UNEXPECTED, EXIT_USAGE, EXIT_CARRIER, EXIT_TLS, EXIT_REFUSED, EXIT_INNER = range(7)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="atls-client",
        description="Open an ATLS session to URL (TLS inside HTTP bodies) and send one request.",
        epilog="exit codes: 0 ok, 2 usage, 3 carrier, 4 TLS/ATLS, 5 refused, 6 inner status>=400",
    )
    p.add_argument("url", help="service base URL, e.g. https://127.0.0.1:8443")
    p.add_argument("--pki", type=Path, default=Path("pki"), help="test PKI directory (./pki)")
    p.add_argument("--device", help="device serial whose identity to use (default: first in PKI)")
    p.add_argument("--no-client-cert", action="store_true", help="present no device certificate")
    p.add_argument(
        "--anchor", type=Path, help="trust anchor for the ATLS service (default: PKI vendor CA)"
    )
    p.add_argument("--server-name", help="name the ATLS service must prove (default: URL host)")
    p.add_argument(
        "--mode",
        choices=[m.value for m in Mode],
        default=Mode.EXPORT.value,
        help="application data: export (RFC 8188, default) or records (TLS records)",
    )
    p.add_argument(
        "--draft00",
        action="store_true",
        help="use draft-00's POST /atls with application/atls+octet-stream",
    )
    p.add_argument("--tls-version", choices=["1.2", "1.3"], help="pin the ATLS TLS version")
    p.add_argument("--exporter-label", default=DEFAULT_EXPORTER_LABEL)
    p.add_argument("--exporter-context", choices=["absent", "empty"], default="absent")
    p.add_argument(
        "--keylog",
        type=Path,
        metavar="FILE",
        help="append the ATLS session's secrets to FILE (SSLKEYLOGFILE format, mode 0600) "
        "to decrypt captured ATLS records",
    )
    add_profile_arguments(p)
    add_dtls_arguments(p)
    carrier = p.add_argument_group("carrier (the network connection that carries ATLS)")
    carrier.add_argument("--proxy", help="HTTP forward proxy URL, e.g. http://127.0.0.1:8080")
    carrier.add_argument(
        "--network-ca", type=Path, help="CA bundle to validate network TLS (default: system store)"
    )
    carrier.add_argument(
        "--no-network-tls-verify",
        action="store_true",
        help="accept any network TLS certificate for ATLS messages only "
        "(a middlebox the device cannot validate yet); ATLS still "
        "authenticates the service end to end",
    )
    carrier.add_argument("--timeout", type=float, default=10.0, help="seconds per HTTP exchange")
    carrier.add_argument(
        "--retries",
        type=int,
        default=2,
        help="restart the handshake this many times after a carrier failure "
        "(default 2; TLS failures are never retried)",
    )
    req = p.add_argument_group("the request sent over ATLS")
    req.add_argument("--request", default="GET /api/whoami", help="'METHOD /path'")
    req.add_argument("--data", help="request body (text)")
    req.add_argument("--content-type", default="text/plain")
    p.add_argument("--json", action="store_true", help="print one JSON report instead of text")
    return p


def _config(args: argparse.Namespace) -> TLSConfig:
    pki = PKIDirectory(args.pki)
    identity = None
    if not args.no_client_cert:
        serial = args.device or next(iter(pki.device_serials()), None)
        if serial is None:
            raise PKIError(
                f"no device identities in {pki.root / 'devices'}; "
                "run 'atls-testbed pki init' or pass --no-client-cert"
            )
        identity = pki.device(serial)
    anchor_path = args.anchor or pki.vendor_ca_cert
    try:
        anchors = anchor_path.read_bytes()
    except OSError as exc:
        raise PKIError(f"cannot read trust anchor {anchor_path}: {exc.strerror}") from None
    version = TLSVersion.parse(args.tls_version) if args.tls_version else None
    return TLSConfig(
        Role.CLIENT,
        identity=identity,
        trust_anchors=anchors,
        server_name=args.server_name,
        min_version=version or TLSVersion.TLS1_2,
        max_version=version or TLSVersion.TLS1_3,
        keylog=open_keylog(args.keylog),
        **profile_settings(args),
    )


def _parse_request(text: str, data: str | None, content_type: str) -> InnerRequest:
    parts = text.split(None, 1)
    if len(parts) != 2 or not parts[1].startswith("/"):
        raise ValueError(f"--request must look like 'GET /path', got {text!r}")
    body = (data or "").encode()
    headers = [("content-type", content_type)] if data is not None else []
    return InnerRequest(parts[0].upper(), parts[1], headers, body)


def run(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    report: dict[str, Any] = {"url": args.url}
    try:
        config = _config(args)
        tls = DTLSContext(config, mtu=args.mtu) if args.dtls else config
        inner = _parse_request(args.request, args.data, args.content_type)
    except (PKIError, ValueError) as exc:
        return EXIT_USAGE, {**report, "error": str(exc), "stage": "config"}
    verify: bool | Path = True
    if args.no_network_tls_verify:
        verify = False
    elif args.network_ca:
        verify = args.network_ca
    carrier = CarrierSettings(proxy=args.proxy, network_tls_verify=verify, timeout=args.timeout)
    exporter = ExporterSettings(
        args.exporter_label, None if args.exporter_context == "absent" else b""
    )
    stage = "handshake"
    try:
        with ATLSClient(
            args.url,
            tls,
            mode=Mode(args.mode),
            variant=Variant.DRAFT00 if args.draft00 else Variant.CURRENT,
            exporter=exporter,
            carrier=carrier,
            retries=max(0, args.retries),
        ) as client:
            info = client.handshake()
            binding = client.binding
            assert binding is not None
            report["session"] = {
                "version": info.version,
                "cipher": info.cipher,
                "group": info.group,
                "alpn": info.alpn,
                "peer": info.peer_subject,
                "mode": args.mode,
                "variant": binding.variant.value,
                "exporter_label": exporter.label,
                "exporter_context": args.exporter_context,
                "exporter_fingerprint": binding.keys.fingerprint if binding.keys else None,
                "handshake_round_trips": binding.round_trips,
                "handshake_attempts": client.handshake_attempts,
            }
            stage = "request"
            response = client.request_inner(inner)
    except CarrierError as exc:
        return EXIT_CARRIER, {**report, "error": str(exc), "stage": stage}
    except ServiceRefusedError as exc:
        return EXIT_REFUSED, {
            **report,
            "error": str(exc),
            "stage": stage,
            "problem": Problem.from_refusal(exc).to_dict(),
        }
    except (ATLSError, InnerHTTPError) as exc:
        return EXIT_TLS, {**report, "error": str(exc), "stage": stage}
    report["request"] = f"{inner.method} {inner.target}"
    report["response"] = _response_report(response)
    return (EXIT_INNER if response.status >= 400 else EXIT_OK), report


def _response_report(response: InnerResponse) -> dict[str, Any]:
    body: Any = response.body.decode("utf-8", "replace")
    if (response.header("content-type") or "").startswith("application/json"):
        try:
            body = json.loads(response.body)
        except ValueError:
            pass
    return {"status": response.status, "body": body}


def render(code: int, report: dict[str, Any]) -> str:
    lines = []
    session = report.get("session")
    if session:
        lines.append(f"ATLS session established with {report['url']}")
        for key in (
            "version",
            "cipher",
            "peer",
            "mode",
            "variant",
            "exporter_label",
            "exporter_context",
            "exporter_fingerprint",
            "handshake_round_trips",
            "handshake_attempts",
        ):
            lines.append(f"  {key.replace('_', ' '):<22} {session[key]}")
    if "response" in report:
        response = report["response"]
        lines.append(f"{report['request']} -> {response['status']} (over ATLS)")
        body = response["body"]
        lines.append(json.dumps(body, indent=2) if not isinstance(body, str) else body)
    if "error" in report:
        lines.append(f"atls-client: {report['stage']} failed: {report['error']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code, report = run(args)
    except Exception as exc:  # noqa: BLE001 - last line of defence: say what broke
        code, report = (
            EXIT_UNEXPECTED,
            {"url": args.url, "stage": "internal", "error": f"{type(exc).__name__}: {exc}"},
        )
    report["exit_code"] = code
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        out = render(code, report)
        print(out, file=sys.stderr if code else sys.stdout)
    return code


if __name__ == "__main__":
    sys.exit(main())
