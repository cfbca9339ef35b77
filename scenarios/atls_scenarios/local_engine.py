"""The default engine: every component a real local process on loopback.

atls-service (network TLS), mitmdump with the policy addon (explicit proxy),
optionally a plain forward proxy in front of it, and one ``atls-device``
process per device, or for fleets (``atls_scenarios.fleet``) one Locust process
running every device in-process. The operator step registers the middlebox's CA and the
device serials through the service's operator API, as a domain operator would.
"""

from __future__ import annotations

import fnmatch
import json
import secrets
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from atls.pki import DEFAULT_SERVICE_NAMES, init_pki

from .fleet import collect_reports, fleet_config, run_local_fleet, summary_line, uses_locust
from .operator import fetch_events, operator_setup
from .processes import (
    GatewayProcess,
    MitmdumpProcess,
    ServiceProcess,
    UdpMitmdumpProcess,
)
from .relay import Relay
from .scenario import LoadFault, Scenario

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
    # constrained runs: the canary put in every reading, and where it was found
    canary: str | None = None
    canary_hits: list[str] = field(default_factory=list)
    canary_searched: list[str] = field(default_factory=list)
    coap_audit: list[dict[str, Any]] = field(default_factory=list)
    # after the devices and the service's TTLs: its store, and its memory (KiB)
    store_after: dict[str, Any] | None = None
    rss_baseline_kb: int | None = None
    rss_after_kb: int | None = None


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
        service_args = [*sc.service_args]
        if fleet:
            service_args += fleet_service_args(sc.devices.count, sc.devices.timeout)
        service = ServiceProcess(pki.root, logs, extra_args=service_args)
        relay: Relay | None = None
        timers: list[threading.Thread] = []
        mitm: MitmdumpProcess | None = None
        front: MitmdumpProcess | None = None
        gateway: GatewayProcess | None = None
        udp_mitm: UdpMitmdumpProcess | None = None
        audit_log = self.run_dir / "audit.jsonl"
        coap_audit_log = self.run_dir / "coap-audit.jsonl"
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
                    save_flows=self.run_dir / "flows.mitm" if sc.topology.gateway else None,
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
            url = service.url
            if any(f.type == "cut-service" for f in sc.load_faults):
                relay = Relay(service.host, service.port).start()
                url = f"https://{service.host}:{relay.port}"
                self.say(f"[runner] network to the service through a relay at {url}")
            obs.rss_baseline_kb = _rss_kb(service)

            def operator() -> None:
                if sc.topology.register_domain:
                    ca = mitm.ca_cert if mitm else pki.vendor_ca_cert
                    operator_setup(
                        service.url, ca, token, serials, verify, sc.topology.claim_devices
                    )

            for load_fault in sc.load_faults:
                timer = threading.Thread(
                    target=self._load_fault,
                    args=(load_fault, service, relay, operator),
                    daemon=True,
                )
                timer.start()
                timers.append(timer)
            if sc.topology.gateway:
                gateway = GatewayProcess(
                    service.url,
                    logs,
                    proxy=proxy,
                    network_ca=mitm.ca_cert if mitm else pki.vendor_ca_cert,
                ).start()
                self.say(f"[runner] atls-gateway (CoAP) at {gateway.uri} -> {proxy or 'service'}")
                device_uri = gateway.uri
                if sc.topology.udp_middlebox:
                    policy = self.run_dir / "policy.yaml"
                    policy.write_text(sc.policy_text)
                    udp_mitm = UdpMitmdumpProcess(
                        f"{gateway.host}:{gateway.port}",
                        self.run_dir / "mitmproxy-udp",
                        logs,
                        policy=policy,
                        audit_log=coap_audit_log,
                    ).start()
                    device_uri = udp_mitm.uri
                    self.say(f"[runner] UDP middlebox mitmdump + CoAP addon at {udp_mitm.uri}")
                obs.canary = "CANARY-" + secrets.token_hex(8)
                obs.devices = self._run_coap_devices(serials, device_uri, pki.root, obs.canary)
            elif fleet:
                config = fleet_config(sc.devices, self.run_dir, url, pki.root, proxy, SERVICE_NAME)
                summary = run_local_fleet(sc.devices, self.run_dir, config, self.say)
                obs.devices = collect_reports(self.run_dir, serials)
                obs.notes.append(summary_line(summary))
                self.say(f"[runner] {summary_line(summary)}")
            else:
                obs.devices = self._run_devices(serials, url, pki.root, proxy)
            for timer in timers:
                timer.join(120)
            if sc.expect.get("store_baseline") or "memory_growth_mb" in sc.expect:
                obs.store_after = self._await_baseline(service, token, verify)
                obs.rss_after_kb = _rss_kb(service)
                self.say(
                    f"[runner] after the TTLs: store {obs.store_after}, service memory "
                    f"{(obs.rss_baseline_kb or 0) // 1024} MB before the devices, "
                    f"{(obs.rss_after_kb or 0) // 1024} MB after"
                )
            obs.events, obs.health = fetch_events(service.url, token, verify)
        finally:
            if relay:
                relay.stop()
            for proc in (udp_mitm, gateway, front, mitm):
                if proc:
                    proc.stop()
            service.stop()
        if audit_log.exists():
            obs.audit = [json.loads(line) for line in audit_log.read_text().splitlines()]
        if coap_audit_log.exists():
            obs.coap_audit = [json.loads(x) for x in coap_audit_log.read_text().splitlines()]
        if obs.canary:
            obs.canary_hits, obs.canary_searched = search_canary(self.run_dir, obs.canary)
        return obs

    def _run_coap_devices(
        self, serials: list[str], uri: str, pki_root: Path, canary: str
    ) -> list[dict[str, Any]]:
        sc = self.scenario

        def argv(serial: str, report: Path) -> list[str]:
            return [
                sys.executable,
                "-m",
                "atls_client.device_cli",
                "coap",
                "--gateway",
                uri,
                "--pki",
                str(pki_root),
                "--device",
                serial,
                "--mode",
                sc.devices.mode,
                "--profile",
                sc.devices.profile,
                "--readings",
                str(sc.devices.readings),
                "--canary",
                canary,
                "--retries",
                str(sc.devices.retries),
                "--timeout",
                str(sc.devices.timeout),
                "--report",
                str(report),
                "--json",
                *(["--dtls"] if sc.devices.dtls else []),
            ]

        return self._run_device_commands(serials, argv)

    def _load_fault(
        self,
        fault: LoadFault,
        service: ServiceProcess,
        relay: Relay | None,
        operator: Callable[[], None],
    ) -> None:
        """A fault while the devices run (see scenario.LOAD_FAULTS).

        ``after`` counts from the service's first handshake in progress (polled,
        bounded), so the fault lands mid-handshake however slowly devices start.
        """
        self._await_first_handshake(service)
        time.sleep(fault.after)
        if fault.type == "restart-service":
            service.stop()
            self.say(f"[runner] fault: service stopped {fault.after:g}s into the run")
            time.sleep(fault.duration)
            service.start()  # same port; its sessions and registry are gone
            operator()  # the operator's registrations, as a persistent config would restore
            self.say(f"[runner] fault: service back after {fault.duration:g}s, re-registered")
        elif fault.type == "cut-service" and relay is not None:
            relay.cut()
            self.say(f"[runner] fault: network to the service cut {fault.after:g}s into the run")
            time.sleep(fault.duration)
            relay.restore()
            self.say(f"[runner] fault: network restored after {fault.duration:g}s")

    def _await_first_handshake(self, service: ServiceProcess, timeout: float = 60.0) -> None:
        context = ssl.create_default_context(cafile=str(service.pki / "vendor-ca.pem"))
        deadline = time.monotonic() + timeout
        with httpx.Client(verify=context, timeout=2.0) as http:
            while time.monotonic() < deadline:
                try:
                    store = http.get(service.url + "/healthz").json().get("store", {})
                except (httpx.HTTPError, ValueError):
                    store = {}
                if store.get("handshakes") or store.get("sessions"):
                    return
                time.sleep(0.05)

    def _await_baseline(
        self, service: ServiceProcess, token: str, verify: Path
    ) -> dict[str, Any] | None:
        """Poll the service's store until it is empty again (bounded by its TTLs)."""
        args = list(self.scenario.service_args)
        ttl = (
            sum(
                float(args[i + 1])
                for i, a in enumerate(args)
                if a in ("--handshake-ttl", "--idle-ttl")
            )
            or 330.0
        )
        deadline = time.monotonic() + min(ttl, 120.0) + 15.0
        store: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            try:
                _, health = fetch_events(service.url, token, verify)
            except Exception:  # noqa: BLE001 - not up (yet): try again until the deadline
                health = None
            store = (health or {}).get("store")
            if store and store.get("handshakes") == 0 and store.get("sessions") == 0:
                break
            time.sleep(1.0)
        return store

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

        def command(serial: str, report_path: Path) -> list[str]:
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
            argv += ["--profile", sc.devices.profile] + (["--dtls"] if sc.devices.dtls else [])
            return argv

        return self._run_device_commands(serials, command)

    def _run_device_commands(
        self, serials: list[str], command: Callable[[str, Path], list[str]]
    ) -> list[dict[str, Any]]:
        sc = self.scenario
        reports: list[dict[str, Any]] = []
        started = time.monotonic()

        def one(serial: str) -> dict[str, Any]:
            report_path = self.run_dir / "devices" / f"{serial}.json"
            argv = command(serial, report_path)
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


# What the gateway and the middleboxes logged or stored, searched for the canary:
# everything in the run's directory except the endpoints' own records (the
# service's log, the devices' reports) and the PKI.
_NOT_OBSERVERS = ("pki", "devices", "stores")


def search_canary(
    run_dir: Path, canary: str, exclude: tuple[str, ...] = ("service.log",)
) -> tuple[list[str], list[str]]:
    """Files under ``run_dir`` holding ``canary``, and the files searched."""
    needle = canary.encode()
    hits: list[str] = []
    searched: list[str] = []
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir)
        if not path.is_file() or rel.parts[0] in _NOT_OBSERVERS:
            continue
        if any(fnmatch.fnmatchcase(path.name, pattern) for pattern in exclude):
            continue
        searched.append(str(rel))
        try:
            if needle in path.read_bytes():
                hits.append(str(rel))
        except OSError:
            continue
    return hits, searched


def _rss_kb(service: ServiceProcess) -> int | None:
    proc = service.process.proc if service.process else None
    if proc is None:
        return None
    try:
        status = Path(f"/proc/{proc.pid}/status").read_text()
    except OSError:
        return None
    line = next((x for x in status.splitlines() if x.startswith("VmRSS")), None)
    return int(line.split()[1]) if line else None
