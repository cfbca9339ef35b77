"""Requests/s through mitmdump with and without the ATLS policy addon.

Prints figures and ratios, asserts nothing. On loopback: one atls-service, one
mitmdump per configuration, a keep-alive client. Two kinds of traffic: ATLS
requests (export mode, one session) and ordinary HTTPS requests. The addon
runs with an audit rule and an audit log, as a lab would use it.
Usage: python bench/addon.py [--count N] [--seconds S]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from atls.pki import init_pki
from atls.session import Role, TLSConfig
from atls_client.client import ATLSClient, CarrierSettings
from atls_scenarios.processes import MitmdumpProcess, ServiceProcess

POLICY = (
    "rules:\n  - {id: watch, action: audit}\n  - {id: no-smuggling, action: block, "
    "match: {variant: unlabelled}}\ndefault: allow\n"
)


def rate(fn: Callable[[], object], count: int, seconds: float) -> float:
    for _ in range(5):
        fn()  # warm up connections
    done, start = 0, time.perf_counter()
    while done < count and time.perf_counter() - start < seconds:
        fn()
        done += 1
    return done / (time.perf_counter() - start)


def measure(
    pki_root: Path, service: ServiceProcess, proxy: str, count: int, seconds: float
) -> tuple[float, float]:
    pki = init_pki(pki_root)
    config = TLSConfig(
        Role.CLIENT,
        identity=pki.device("device-0001"),
        trust_anchors=pki.vendor_ca().cert_pem,
        server_name="127.0.0.1",
    )
    carrier = CarrierSettings(proxy=proxy, network_tls_verify=False)
    with ATLSClient(service.url, config, carrier=carrier) as client:
        client.handshake()
        atls = rate(lambda: client.http.get("/api/hello"), count, seconds)
    with httpx.Client(proxy=proxy, verify=False) as plain:
        https = rate(lambda: plain.get(service.url + "/api/hello"), count, seconds)
    return atls, https


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=600, help="max requests per row")
    parser.add_argument("--seconds", type=float, default=5.0, help="max seconds per row")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pki = init_pki(root / "pki")
        results = {}
        with ServiceProcess(pki.root, root / "logs") as service:
            for label, with_addon in (("without addon", False), ("with addon", True)):
                policy = root / "policy.yaml"
                policy.write_text(POLICY)
                mitm = MitmdumpProcess(
                    root / f"conf-{with_addon}",
                    root / "logs",
                    upstream_ca=pki.vendor_ca_cert,
                    policy=policy if with_addon else None,
                    audit_log=root / "audit.jsonl" if with_addon else None,
                    log_level="warn",
                    extra_args=["--set", "flow_detail=0"],
                )
                with mitm:
                    results[label] = measure(pki.root, service, mitm.url, args.count, args.seconds)
    print("requests/s through mitmdump on loopback (keep-alive, GET /api/hello)")
    print(f"{'traffic':<34} {'without addon':>14} {'with addon':>11} {'ratio':>6}")
    for i, name in enumerate(("ATLS (export mode, one session)", "ordinary HTTPS")):
        base, with_addon = results["without addon"][i], results["with addon"][i]
        print(f"{name:<34} {base:>14.0f} {with_addon:>11.0f} {with_addon / base:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
