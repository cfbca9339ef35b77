"""``atls-testbed``: the testbed's front door (PKI, demo, and later scenarios)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from atls.pki import DEFAULT_SERVICE_NAMES, PKIError, init_pki

from .compose_engine import EngineUnavailable
from .images import ImageError
from .interop import runner as interop_runner
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
    ceiling = sub.add_parser(
        "fleet-ceiling",
        help="mitmdump's own ceiling for a fleet's requests (Locust, do-nothing upstream)",
    )
    ceiling.add_argument("--users", type=int, default=100, help="concurrent devices (100)")
    ceiling.add_argument("--run-time", type=int, default=60, help="seconds (60)")
    ceiling.add_argument("--with-addon", action="store_true", help="load the ATLS policy addon")
    ceiling.add_argument(
        "--processes", type=int, default=4, help="Locust processes (4, as a 1,000-device fleet)"
    )
    ceiling.add_argument(
        "--report-dir", type=Path, default=Path("reports"), help="default ./reports"
    )
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
        "--middlebox-mode",
        choices=["explicit", "transparent"],
        default="explicit",
        help="compose engine: devices use the middlebox as proxy (explicit), or "
        "route through it with no proxy configured (transparent)",
    )
    run.add_argument(
        "--report-dir",
        type=Path,
        default=Path("reports"),
        help="where run directories go (default ./reports)",
    )

    images = sub.add_parser("images", help="container images")
    images_sub = images.add_subparsers(dest="images_command", required=True)
    build = images_sub.add_parser("build", help="build the testbed image")
    build.add_argument(
        "--offline",
        action="store_true",
        help="no registry: debootstrap a trixie base and install from a wheelhouse",
    )
    build.add_argument(
        "--base",
        help="base image (default python:3.13-slim, offline: atls-testbed-base:trixie-<hash>)",
    )
    build.add_argument("--tag", default="atls-testbed:latest")
    build.add_argument(
        "--interop-peers",
        action="store_true",
        help="build only atls-interop-peers (Debian bookworm, debootstrap, no registry): the "
        "runtime of the host-built foreign interop peers under `interop --engine compose`",
    )

    scenario = sub.add_parser("scenario", help="author scenario files")
    scenario_sub = scenario.add_subparsers(dest="scenario_command", required=True)
    check = scenario_sub.add_parser(
        "check", help="validate scenario files; errors name the place and the problem"
    )
    check.add_argument("files", nargs="+", type=Path, metavar="FILE")

    policy = sub.add_parser("scenario-policy", help="print a scenario's middlebox policy (YAML)")
    policy.add_argument("scenario")
    dev_args = sub.add_parser("scenario-device-args", help="print a scenario's atls-device options")
    dev_args.add_argument("scenario")

    op = sub.add_parser("operator", help="the domain operator's steps (used by compose)")
    op_sub = op.add_subparsers(dest="operator_command", required=True)
    for name, text in (
        ("setup", "register the domain CA and claim the PKI's devices"),
        ("events", "print the service's bootstrap events and health as JSON"),
    ):
        cmd = op_sub.add_parser(name, help=text)
        cmd.add_argument("--service", required=True, help="service base URL")
        cmd.add_argument("--pki", type=Path, required=True)
        cmd.add_argument(
            "--server-name",
            help="the service's certificate name, when --service names one replica by address",
        )
        if name == "setup":
            cmd.add_argument("--ca", type=Path, required=True, help="the domain CA (PEM)")
            cmd.add_argument(
                "--scenario",
                default="bootstrap",
                help="whose topology says whether to register and claim",
            )
            cmd.add_argument("--domain", default="lab")
            cmd.add_argument(
                "--replicas",
                metavar="HOST",
                help="register with every address HOST resolves to (service replicas; "
                "name the certificate with --server-name)",
            )
            cmd.add_argument(
                "--watch",
                type=float,
                metavar="SECONDS",
                help="with --replicas: keep running, re-registering any replica that lost "
                "the domain (a restarted replica forgets it) every SECONDS",
            )
            cmd.add_argument("--ready-file", type=Path, help="touched once the first pass is done")

    sub.add_parser("addon-path", help="print the file to give 'mitmdump -s' for the ATLS addon")
    sub.add_parser(
        "fleet-locustfile", help="print the file to give 'locust -f' for a fleet of devices"
    )

    bench = sub.add_parser(
        "bench",
        help="measure every performance figure against its baseline (table, JSON, plots)",
    )
    bench.add_argument("--quick", action="store_true", help="a bounded run of under three minutes")
    bench.add_argument(
        "--only",
        default="",
        help="comma-separated sections: session,protection,memory,network,addon,fleet",
    )
    bench.add_argument("--out", type=Path, default=Path("reports/bench"))
    bench.add_argument(
        "--profile",
        action="store_true",
        help="network section: also profile the service (CPU per component, "
        "service-profile.txt in the run folder)",
    )

    demo = sub.add_parser("demo", help="start the service and do ATLS in both modes")
    demo.add_argument("--pki", type=Path, default=Path("pki"))
    demo.add_argument("--report-dir", type=Path, default=Path("reports/demo"))
    interop_runner.add_parser(sub)
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
        if args.command == "fleet-ceiling":
            from .ceiling import run_ceiling

            out = args.report_dir / f"fleet-ceiling-{time.strftime('%Y%m%d-%H%M%S')}"
            run_ceiling(
                out,
                args.users,
                args.run_time,
                with_addon=args.with_addon,
                processes=args.processes,
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
            result = run_scenario(
                scenario, args.report_dir, args.engine, middlebox_mode=args.middlebox_mode
            )
            return 0 if result.ok else 1
        if args.command == "images":
            from .images import build_image, build_peers_image

            if args.interop_peers:
                build_peers_image()
                return 0
            build_image(offline=args.offline, base=args.base, tag=args.tag)
            return 0
        if args.command == "scenario":
            return _check_scenarios(args.files)
        if args.command == "scenario-policy":
            from .scenario import find_scenario

            print(find_scenario(args.scenario).policy_text, end="")
            return 0
        if args.command == "scenario-device-args":
            from .scenario import find_scenario

            found = find_scenario(args.scenario)
            devices = found.devices
            if found.topology.gateway:  # atls-device coap
                print(
                    f"--mode {devices.mode} --retries {devices.retries} "
                    f"--timeout {devices.timeout:g} --profile {devices.profile} "
                    f"--readings {devices.readings}" + (" --dtls" if devices.dtls else "")
                )
                return 0
            extra = " --draft00" if devices.variant == "draft-00" else ""
            if devices.tls_version:
                extra += f" --tls-version {devices.tls_version}"
            extra += f" --profile {devices.profile}" + (" --dtls" if devices.dtls else "")
            print(
                f"--mode {devices.mode} --retries {devices.retries} --backoff 0.1 "
                f"--timeout {devices.timeout:g}{extra}"
            )
            return 0
        if args.command == "operator":
            return _operator(args)
        if args.command == "fleet-locustfile":
            from .fleet import LOCUSTFILE

            print(LOCUSTFILE)
            return 0
        if args.command == "addon-path":
            from atls_policy import SCRIPT

            print(SCRIPT)
            return 0
        if args.command == "bench":
            from .bench.run import SECTIONS, run

            only = {s for s in args.only.split(",") if s}
            unknown = only - set(SECTIONS)
            if unknown:
                raise ValueError(
                    f"unknown bench section {sorted(unknown)[0]!r}; use {', '.join(SECTIONS)}"
                )
            run(args.out, args.quick, only, profile=args.profile)
            return 0
        if args.command == "interop":
            return interop_runner.main(args)
        if args.command == "demo":
            from .demo import run_demo

            return run_demo(args.pki, args.report_dir)
    except (
        PKIError,
        ProcessError,
        ScenarioError,
        ImageError,
        EngineUnavailable,
        ValueError,
        OSError,
    ) as exc:
        print(f"atls-testbed: {exc}", file=sys.stderr)
        return 2
    return 2


def _check_scenarios(files: list[Path]) -> int:
    """Load each file as ``run`` would; 0 if all are valid, 2 otherwise."""
    from atls_policy.policy import parse_policy

    from .scenario import load_scenario

    bad = 0
    for path in files:
        try:
            if not path.is_file():
                raise ScenarioError(f"{path}: no such file")
            scenario = load_scenario(path)
        except ScenarioError as exc:
            print(f"atls-testbed: {exc}", file=sys.stderr)
            bad += 1
            continue
        policy = parse_policy(scenario.policy_text, str(path))
        print(
            f"{path}: ok: scenario {scenario.name}, {scenario.devices.count} device(s), "
            f"policy with {len(policy.rules)} rule(s) (default {policy.default.action.value}), "
            f"{len(scenario.expect)} expectation(s), faults: {', '.join(scenario.faults) or '-'}"
        )
    return 2 if bad else 0


def _operator(args: argparse.Namespace) -> int:
    import json

    from atls.pki import PKIDirectory

    from .operator import (
        domain_registered,
        fetch_events,
        operator_setup,
        replica_urls,
        wait_ready,
    )
    from .scenario import find_scenario

    pki = PKIDirectory(args.pki)
    token_path = pki.root / "operator-token"
    wait_ready(args.service, pki.vendor_ca_cert, server_name=args.server_name)
    token = token_path.read_text().strip()
    if args.operator_command == "events":
        events, health = fetch_events(
            args.service, token, pki.vendor_ca_cert, server_name=args.server_name
        )
        print(json.dumps({"events": events, "health": health}))
        return 0
    topology = find_scenario(args.scenario).topology
    if not topology.register_domain:
        print(f"operator: scenario {args.scenario} registers no domain")
        return 0

    def setup(url: str) -> None:
        result = operator_setup(
            url,
            args.ca,
            token,
            pki.device_serials(),
            pki.vendor_ca_cert,
            topology.claim_devices,
            args.domain,
            server_name=args.server_name,
        )
        print(
            f"operator: {url}: domain {result['domain']} CA {result['ca']}, "
            f"{len(result['devices'])} devices claimed",
            flush=True,
        )

    urls = replica_urls(args.replicas) if args.replicas else [args.service]
    for url in urls:
        wait_ready(url, pki.vendor_ca_cert, server_name=args.server_name)
        setup(url)
    if args.ready_file:
        args.ready_file.touch()
    while args.replicas and args.watch:
        time.sleep(args.watch)
        for url in replica_urls(args.replicas):
            try:
                if not domain_registered(
                    url, token, pki.vendor_ca_cert, args.server_name, args.domain
                ):
                    print(f"operator: {url} lost the domain (restarted?): again", flush=True)
                    setup(url)
            except Exception as exc:  # noqa: BLE001 - a restarting replica: next round
                print(f"operator: {url}: {type(exc).__name__}: {exc}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
