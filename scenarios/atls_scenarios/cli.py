"""``atls-testbed``: the testbed's front door (PKI, demo, and later scenarios)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from atls.pki import DEFAULT_SERVICE_NAMES, PKIError, init_pki

from .processes import ProcessError
from .scenario import ScenarioError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="atls-testbed", description="Application-Layer TLS testbed")
    sub = p.add_subparsers(dest="command", required=True)

    pki = sub.add_parser("pki", help="test PKI")
    pki_sub = pki.add_subparsers(dest="pki_command", required=True)
    init = pki_sub.add_parser("init", help="create what is missing of a test PKI (idempotent)")
    init.add_argument("dir", type=Path, nargs="?", default=Path("pki"))
    init.add_argument(
        "--devices",
        type=int,
        default=1,
        help="number of device identities device-0001.. (default 1)",
    )
    init.add_argument(
        "--serial", action="append", default=[], help="an extra device serial (repeatable)"
    )
    init.add_argument(
        "--service-name",
        action="append",
        help=f"service certificate name (repeatable; default {DEFAULT_SERVICE_NAMES})",
    )

    sub.add_parser("list", help="list the scenarios")
    run = sub.add_parser("run", help="run a scenario and check its expectations")
    run.add_argument("scenario", help="scenario name (see 'list') or path to a YAML file")
    run.add_argument(
        "--engine",
        choices=["local", "compose"],
        default="local",
        help="local processes on loopback (default) or Docker Compose",
    )
    run.add_argument("--devices", type=int, help="override the number of devices")
    run.add_argument(
        "--report-dir",
        type=Path,
        default=Path("reports"),
        help="where run directories go (default ./reports)",
    )

    sub.add_parser("addon-path", help="print the file to give 'mitmdump -s' for the ATLS addon")

    demo = sub.add_parser("demo", help="start the service and do ATLS in both modes")
    demo.add_argument("--pki", type=Path, default=Path("pki"))
    demo.add_argument("--report-dir", type=Path, default=Path("reports/demo"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "pki":
            if args.devices < 0:
                raise PKIError("--devices must be 0 or more")
            serials = [f"device-{i:04d}" for i in range(1, args.devices + 1)] + args.serial
            pki = init_pki(
                args.dir,
                service_names=args.service_name or DEFAULT_SERVICE_NAMES,
                device_serials=serials,
            )
            created = ", ".join(pki.created) or "nothing (all present)"
            print(f"test PKI in {pki.root}: created {created}")
            print(f"  vendor CA   {pki.vendor_ca_cert}\n  service     {pki.service_cert}")
            print(f"  devices     {len(pki.device_serials())} in {pki.root / 'devices'}")
            return 0
        if args.command == "list":
            from .scenario import available

            for scenario in available():
                print(
                    f"{scenario.name:<16} {scenario.devices.count:>3} device(s)  "
                    f"{scenario.description}"
                )
            return 0
        if args.command == "run":
            from .runner import run_scenario
            from .scenario import find_scenario

            scenario = find_scenario(args.scenario)
            if args.devices is not None:
                if args.devices < 1:
                    raise ScenarioError("--devices must be at least 1")
                scenario = scenario.with_devices(args.devices)
            result = run_scenario(scenario, args.report_dir, args.engine)
            return 0 if result.ok else 1
        if args.command == "addon-path":
            from atls_policy import SCRIPT

            print(SCRIPT)
            return 0
        if args.command == "demo":
            from .demo import run_demo

            return run_demo(args.pki, args.report_dir)
    except (PKIError, ProcessError, ScenarioError, OSError) as exc:
        print(f"atls-testbed: {exc}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
