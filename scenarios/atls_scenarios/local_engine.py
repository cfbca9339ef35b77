"""The default engine: every component a real local process on loopback.

atls-service (network TLS), mitmdump with the policy addon (explicit proxy),
optionally a plain forward proxy in front of it, and one ``atls-device``
process per device, or for fleets (``atls_scenarios.fleet``) one Locust process
running every device in-process. The operator step registers the middlebox's CA and the
device serials through the service's operator API, as a domain operator would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atls.pki import DEFAULT_SERVICE_NAMES, init_pki

from .fleet import collect_reports, fleet_config, run_local_fleet, summary_line, uses_locust
from .operator import fetch_events, operator_setup
from .processes import MitmdumpProcess, ServiceProcess
from .scenario import Scenario

# The service's name in the test PKI and under compose: devices ask for it in both engines.
SERVICE_NAME = DEFAULT_SERVICE_NAMES[0]
DEVICE_TIMEOUT = 180.0


@dataclass
class Observations:
    """Everything a run gathered, engine-independent, for the expectations."""

    devices: list[dict[str, Any]] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    health: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def fleet_service_args(devices: int, timeout: float) -> list[str]:
    """A fleet reaches the service from one address (the middlebox's), all at once:
    the per-client handshake limit becomes a per-middlebox one, so size it for the fleet.
    A loaded device pauses for seconds between its exchanges while the middlebox keeps
    the upstream connection: uvicorn's 5 s keep-alive closes it under the middlebox,
    whose next request then fails with 502 "server closed connection". A handshake's
    two round trips may each take the device's whole exchange timeout."""
    room = str(max(256, 2 * devices))
    return [
        "--max-handshakes",
        room,
        "--max-handshakes-per-client",
        room,
        "--keep-alive",
        "300",
        "--handshake-ttl",
        str(max(30.0, 2 * timeout)),
    ]


class LocalEngine:
    name = "local"

    def __init__(
        self, scenario: Scenario, run_dir: Path, say: Callable[[str], None] = print
    ) -> None:
        self.scenario = scenario
        self.run_dir = run_dir
        self.say = say

    def run(self) -> Observations:
        sc = self.scenario
        serials = [f"device-{i:04d}" for i in range(1, sc.devices.count + 1)]
        pki = init_pki(self.run_dir / "pki", device_serials=serials)
        logs = self.run_dir / "logs"
        obs = Observations()
        self.say(f"[runner] test PKI with {len(serials)} devices in {pki.root}")
        fleet = uses_locust(sc.devices)
        service = ServiceProcess(
            pki.root,
            logs,
            extra_args=fleet_service_args(sc.devices.count, sc.devices.timeout) if fleet else (),
        )
        mitm: MitmdumpProcess | None = None
        front: MitmdumpProcess | None = None
        audit_log = self.run_dir / "audit.jsonl"
        try:
            service.start()
            self.say(f"[runner] atls-service at {service.url}")
            proxy = None
            if sc.topology.middlebox:
                policy = self.run_dir / "policy.yaml"
                policy.write_text(sc.policy_text)
                mitm = MitmdumpProcess(
                    self.run_dir / "mitmproxy",
                    logs,
                    upstream_ca=pki.vendor_ca_cert,
                    policy=policy,
                    audit_log=audit_log,
                ).start()
                proxy = mitm.url
                self.say(f"[runner] middlebox mitmdump + ATLS addon at {mitm.url}")
                if sc.topology.forward_proxy:
                    front = MitmdumpProcess(
                        self.run_dir / "front-proxy",
                        logs,
                        intercept=False,
                        extra_args=["--mode", f"upstream:{mitm.url}"],
                    ).start()
                    proxy = front.url
                    self.say(f"[runner] plain forward proxy at {front.url} -> middlebox")
            token = (pki.root / "operator-token").read_text().strip()
            verify = pki.vendor_ca_cert
            if sc.topology.register_domain:
                ca = mitm.ca_cert if mitm else pki.vendor_ca_cert
                operator_setup(service.url, ca, token, serials, verify, sc.topology.claim_devices)
                claimed = len(serials) if sc.topology.claim_devices else 0
                self.say(
                    f"[runner] operator registered domain CA {ca.name}, claimed {claimed} devices"
                )
            for fault in sc.faults:
                mitm = self._apply_fault(fault, mitm)
            if fleet:
                config = fleet_config(
                    sc.devices, self.run_dir, service.url, pki.root, proxy, SERVICE_NAME
                )
                summary = run_local_fleet(sc.devices, self.run_dir, config, self.say)
                obs.devices = collect_reports(self.run_dir, serials)
                obs.notes.append(summary_line(summary))
                self.say(f"[runner] {summary_line(summary)}")
            else:
                obs.devices = self._run_devices(serials, service.url, pki.root, proxy)
            obs.events, obs.health = fetch_events(service.url, token, verify)
        finally:
            for proc in (front, mitm):
                if proc:
                    proc.stop()
            service.stop()
        if audit_log.exists():
            obs.audit = [json.loads(line) for line in audit_log.read_text().splitlines()]
        return obs

    def _apply_fault(self, fault: str, mitm: MitmdumpProcess | None) -> MitmdumpProcess | None:
        """Break the middlebox before the devices start (see scenario.FAULTS)."""
        assert mitm is not None, "faults need a middlebox"
        if fault == "restart-middlebox":
            mitm.stop()
            mitm.start()  # same port, same confdir: the same CA the domain registered
            self.say(f"[runner] fault: middlebox restarted at {mitm.url}")
            return mitm
        mitm.stop()
        self.say("[runner] fault: middlebox stopped; devices cannot reach it")
        return None

    def _run_devices(
        self, serials: list[str], url: str, pki_root: Path, proxy: str | None
    ) -> list[dict[str, Any]]:
        sc = self.scenario
        reports: list[dict[str, Any]] = []
        started = time.monotonic()

        def one(serial: str) -> dict[str, Any]:
            report_path = self.run_dir / "devices" / f"{serial}.json"
            argv = [
                sys.executable,
                "-m",
                "atls_client.device_cli",
                "bootstrap",
                "--service",
                url,
                "--pki",
                str(pki_root),
                "--device",
                serial,
                "--store",
                str(self.run_dir / "stores" / serial),
                "--retries",
                str(sc.devices.retries),
                "--backoff",
                "0.1",
                "--timeout",
                str(sc.devices.timeout),
                "--mode",
                sc.devices.mode,
                "--report",
                str(report_path),
                "--json",
            ]
            if proxy:
                argv += ["--proxy", proxy]
            # Devices reach the service at 127.0.0.1 here; ask for the name it has under
            # compose, so the ClientHello carries the same SNI and sni: rules act the same.
            argv += ["--server-name", SERVICE_NAME]
            if sc.devices.variant == "draft-00":
                argv.append("--draft00")
            if sc.devices.tls_version:
                argv += ["--tls-version", sc.devices.tls_version]
            try:
                done = subprocess.run(argv, capture_output=True, text=True, timeout=DEVICE_TIMEOUT)
            except subprocess.TimeoutExpired:
                return {
                    "device": serial,
                    "exit_code": -1,
                    "result": "failed",
                    "error": f"device did not finish in {DEVICE_TIMEOUT:.0f}s",
                    "steps": [],
                }
            try:
                report: dict[str, Any] = json.loads(report_path.read_text())
            except (OSError, ValueError):
                report = {
                    "device": serial,
                    "result": "failed",
                    "steps": [],
                    "error": f"no report; stderr: {done.stderr[-500:]}",
                }
            report["exit_code"] = done.returncode
            return report

        with ThreadPoolExecutor(max_workers=max(1, sc.devices.parallel)) as pool:
            futures = [pool.submit(one, s) for s in serials]
            for n, future in enumerate(as_completed(futures), 1):
                report = future.result()
                reports.append(report)
                if n == len(serials) or n % max(1, len(serials) // 10) == 0:
                    self.say(
                        f"[runner] devices {n}/{len(serials)} finished "
                        f"({time.monotonic() - started:.1f}s); last: {report['device']} "
                        f"exit {report['exit_code']} {report.get('result')}"
                    )
        return sorted(reports, key=lambda r: r["device"])
