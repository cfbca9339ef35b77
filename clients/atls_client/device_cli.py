"""``atls-device``: a bootstrapping device.

    atls-device bootstrap --service URL --pki DIR --device SERIAL --store DIR [--proxy URL]
    atls-device show --store DIR

Exit codes of ``bootstrap`` are listed by ``atls-device bootstrap --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from atls.cli_options import add_dtls_arguments, add_profile_arguments, profile_settings
from atls.config import Role, TLSConfig
from atls.http_binding import Mode, Variant
from atls.keys import DEFAULT_EXPORTER_LABEL, ExporterSettings
from atls.pki import PKIDirectory, PKIError
from atls.session import TLSVersion, open_keylog

from .bootstrap import EXIT_CODES, EXIT_USAGE, Bootstrap, BootstrapConfig
from .coap_device import COAP_EXIT_CODES, ConstrainedRun, run_constrained
from .truststore import TrustStore, TrustStoreError


def build_parser() -> argparse.ArgumentParser:
    codes = ", ".join(f"{code} {text}" for code, text in EXIT_CODES.items())
    p = argparse.ArgumentParser(prog="atls-device", description="A bootstrapping ATLS device.")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser(
        "bootstrap",
        help="get the local domain's trust anchors over ATLS",
        epilog=f"exit codes: {codes}",
    )
    b.add_argument("--service", required=True, help="service base URL, e.g. https://svc:8443")
    b.add_argument("--pki", type=Path, default=Path("pki"), help="test PKI directory")
    b.add_argument(
        "--device",
        help="device serial (default: the first in the PKI); 'auto' "
        "takes the first serial not yet taken in --claim-dir (for scaled fleets)",
    )
    b.add_argument("--claim-dir", type=Path, help="shared directory for --device auto")
    b.add_argument("--store", type=Path, required=True, help="the device's trust store directory")
    b.add_argument(
        "--voucher-signer",
        type=Path,
        help="pin the voucher signer: only this certificate (PEM) may sign vouchers "
        "(default: any vendor-issued certificate with the voucher-signing usage)",
    )
    b.add_argument("--proxy", help="HTTP proxy (the middlebox, explicit mode)")
    b.add_argument("--server-name", help="name the ATLS service must prove (default: URL host)")
    b.add_argument("--draft00", action="store_true", help="use draft-00's /atls form")
    b.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.EXPORT.value)
    b.add_argument(
        "--tls-version",
        choices=["1.2", "1.3"],
        help="offer only this ATLS TLS version (default: 1.3 and 1.2)",
    )
    b.add_argument(
        "--retries",
        type=int,
        default=2,
        help="retries after carrier failures or damaged flights (default 2)",
    )
    b.add_argument("--backoff", type=float, default=0.25, help="first retry delay, seconds")
    b.add_argument("--timeout", type=float, default=10.0, help="seconds per HTTP exchange")
    b.add_argument(
        "--keylog",
        type=Path,
        metavar="FILE",
        help="append the ATLS sessions' secrets to FILE (SSLKEYLOGFILE format, mode 0600)",
    )
    add_profile_arguments(b)
    add_dtls_arguments(b)
    b.add_argument("--report", type=Path, help="also write the JSON report to this file")
    b.add_argument("--report-dir", type=Path, help="write the JSON report to DIR/<serial>.json")
    b.add_argument("--json", action="store_true", help="print the JSON report, not progress")
    c = sub.add_parser(
        "coap",
        help="a constrained device: ATLS over CoAP via a gateway, then OSCORE readings",
        epilog="exit codes: "
        + ", ".join(f"{code} {text}" for code, text in COAP_EXIT_CODES.items()),
    )
    c.add_argument("--gateway", required=True, help="the CoAP gateway, e.g. coap://gw:5683")
    c.add_argument("--pki", type=Path, default=Path("pki"), help="test PKI directory")
    c.add_argument("--device", help="device serial (default: first in PKI); 'auto' as above")
    c.add_argument("--claim-dir", type=Path, help="shared directory for --device auto")
    c.add_argument("--server-name", default="atls-service", help="name the service must prove")
    c.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.EXPORT.value)
    c.add_argument("--dtls", action="store_true", help="DTLS 1.2 records instead of TLS")
    c.add_argument("--profile", default="constrained", help="TLS profile (constrained, default)")
    c.add_argument("--exporter-label", default=DEFAULT_EXPORTER_LABEL)
    c.add_argument("--readings", type=int, default=3, help="OSCORE readings to send")
    c.add_argument("--canary", default="", help="a marker put in every reading")
    c.add_argument("--no-replay", action="store_true", help="skip the replay check")
    c.add_argument("--retries", type=int, default=2)
    c.add_argument("--timeout", type=float, default=10.0, help="seconds per CoAP exchange")
    c.add_argument("--report", type=Path)
    c.add_argument("--report-dir", type=Path)
    c.add_argument("--json", action="store_true")
    s = sub.add_parser("show", help="show the trust store")
    s.add_argument("--store", type=Path, required=True)
    return p


def claim_serial(serials: list[str], claim_dir: Path | None) -> str | None:
    """The first serial nobody took yet: mkdir is atomic, so fleets never share one."""
    if claim_dir is None:
        raise ValueError("--device auto needs --claim-dir")
    claim_dir.mkdir(parents=True, exist_ok=True)
    for serial in serials:
        try:
            (claim_dir / serial).mkdir()
        except FileExistsError:
            continue
        return serial
    raise PKIError(f"every serial in the PKI is taken ({len(serials)}); add devices")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "coap":
        return _coap(args)
    if args.command == "show":
        try:
            store = TrustStore(args.store)
            installed = store.load()
            print(
                f"factory anchors: {[c.subject.rfc4514_string() for c in store.factory_anchors()]}"
            )
            if installed is None:
                print("installed: nothing")
            else:
                print(
                    f"installed: {installed.generation}: "
                    f"{[c.subject.rfc4514_string() for c in installed.anchors]}"
                )
        except TrustStoreError as exc:
            print(f"atls-device: {exc}", file=sys.stderr)
            return EXIT_USAGE
        return 0
    try:
        pki = PKIDirectory(args.pki)
        if args.device == "auto":
            serial = claim_serial(pki.device_serials(), args.claim_dir)
        else:
            serial = args.device or next(iter(pki.device_serials()), None)
        if serial is None:
            raise PKIError(f"no device identities in {pki.root / 'devices'}")
        if args.report_dir:
            args.report = args.report_dir / f"{serial}.json"
        config = BootstrapConfig(
            service_url=args.service.rstrip("/"),
            identity=pki.device(serial),
            vendor_anchor_pem=pki.vendor_ca_cert.read_bytes(),
            store=args.store,
            proxy=args.proxy,
            server_name=args.server_name,
            variant=Variant.DRAFT00 if args.draft00 else Variant.CURRENT,
            mode=Mode(args.mode),
            retries=max(0, args.retries),
            backoff=max(0.0, args.backoff),
            timeout=args.timeout,
            keylog=open_keylog(args.keylog),
            tls_version=TLSVersion.parse(args.tls_version) if args.tls_version else None,
            tls_options=profile_settings(args),
            dtls=args.dtls,
            mtu=args.mtu,
            voucher_signer_pem=args.voucher_signer.read_bytes() if args.voucher_signer else None,
        )
        bootstrap = Bootstrap(config, None if args.json else (lambda line: print(line, flush=True)))
    except (PKIError, OSError, ValueError) as exc:
        print(f"atls-device: {exc}", file=sys.stderr)
        return EXIT_USAGE
    report = bootstrap.run()
    data = report.to_dict()
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(data, indent=2))
    if args.json:
        print(json.dumps(data, indent=2))
    elif report.exit_code:
        print(f"atls-device: {report.device}: {report.error}", file=sys.stderr)
    else:
        print(f"[{report.device}] {report.result}; anchors installed: {report.anchors or 'none'}")
    return report.exit_code


def _coap(args: argparse.Namespace) -> int:
    try:
        pki = PKIDirectory(args.pki)
        if args.device == "auto":
            serial = claim_serial(pki.device_serials(), args.claim_dir)
        else:
            serial = args.device or next(iter(pki.device_serials()), None)
        if serial is None:
            raise PKIError(f"no device identities in {pki.root / 'devices'}")
        tls = TLSConfig(
            Role.CLIENT,
            identity=pki.device(serial),
            trust_anchors=pki.vendor_ca_cert.read_bytes(),
            server_name=args.server_name,
        ).with_profile(args.profile)
        run = ConstrainedRun(
            gateway=args.gateway,
            tls=tls,
            device=serial,
            mode=Mode(args.mode),
            dtls=args.dtls,
            exporter=ExporterSettings(label=args.exporter_label),
            readings=max(0, args.readings),
            canary=args.canary,
            replay=not args.no_replay,
            timeout=args.timeout,
            retries=max(0, args.retries),
        )
    except (PKIError, OSError, ValueError) as exc:
        print(f"atls-device: {exc}", file=sys.stderr)
        return EXIT_USAGE
    say = None if args.json else (lambda line: print(line, flush=True))
    data = asyncio.run(run_constrained(run, say))
    if args.report_dir:
        args.report = args.report_dir / f"{serial}.json"
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(data, indent=2))
    if args.json:
        print(json.dumps(data, indent=2))
    elif data["exit_code"]:
        print(f"atls-device: {serial}: {data.get('error')}", file=sys.stderr)
    return int(data["exit_code"])


if __name__ == "__main__":
    sys.exit(main())
