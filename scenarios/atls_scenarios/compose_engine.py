"""The Docker Compose engine: the same scenarios in containers on isolated networks.

The compose CLI (``docker compose`` v2, or Debian's ``docker-compose`` 1.29)
brings the topology up and down; the Docker SDK watches the device containers,
reads their exit codes and logs, and runs the operator's ``events`` query
inside the service container (its networks are internal: the host cannot
reach it). Observations and expectations are the local engine's.

Runs coexist: each has its own project (``-p``), Docker picks its networks'
subnets, and cleanup (``down -v``) touches only that project.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .fleet import collect_reports, summarize, summary_line, uses_locust
from .images import DEFAULT_TAG, repo_root
from .local_engine import Observations, search_canary
from .scenario import LoadFault, Scenario

MIDDLEBOX_MODES = ("explicit", "transparent")
_LABEL = "com.docker.compose.project"
_SERVICE_LABEL = "com.docker.compose.service"
BUILD_HINT = "./testbed images build --offline"


class EngineUnavailable(RuntimeError):
    """Docker (engine, compose CLI, SDK or image) is not usable here; says what to do."""


def compose_cli() -> list[str]:
    """``docker compose`` (v2) if present, else ``docker-compose`` (v1, e.g. Debian's 1.29)."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise EngineUnavailable(
        "no compose CLI: install the docker compose plugin or docker-compose "
        "(apt-get install docker-compose)"
    )


def default_image() -> str:
    """The image to run: ``$ATLS_IMAGE`` (as the compose file reads it), else the default tag."""
    return os.environ.get("ATLS_IMAGE") or DEFAULT_TAG


def image_missing_message(image: str) -> str:
    """What to type when the image is absent (the command, not a module path)."""
    tag = "" if image == DEFAULT_TAG else f" --tag {image}"
    return (
        f"image {image} not found: build it with './testbed images build{tag}' "
        f"(no registry here: '{BUILD_HINT}{tag}')"
    )


def require_image(client: Any, image: str) -> None:
    try:
        client.images.get(image)
    except Exception:  # noqa: BLE001 - docker.errors.ImageNotFound and friends
        raise EngineUnavailable(image_missing_message(image)) from None


def docker_client() -> Any:
    try:
        import docker
    except ImportError:
        raise EngineUnavailable(
            "the Docker SDK is missing: pip install 'atls-testbed[compose]'"
        ) from None
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # noqa: BLE001 - the SDK raises many kinds for "no engine"
        raise EngineUnavailable(
            f"no Docker engine reachable ({type(exc).__name__}: {exc}); start it "
            "(e.g. 'dockerd &' as root, or 'systemctl start docker')"
        ) from None
    return client


def compose_files(scenario: Scenario, middlebox_mode: str) -> list[Path]:
    compose = repo_root() / "compose"
    files = [compose / "docker-compose.yml"]
    if not scenario.topology.middlebox:
        files.append(compose / "no-middlebox.yml")
    elif scenario.topology.forward_proxy:
        files.append(compose / "http-proxy.yml")
    if scenario.topology.gateway:
        if not scenario.topology.middlebox or not scenario.topology.udp_middlebox:
            raise EngineUnavailable(
                f"scenario {scenario.name}: compose runs the gateway between both middleboxes"
            )
        files.append(compose / "constrained.yml")
    if middlebox_mode == "transparent":
        if (
            not scenario.topology.middlebox
            or scenario.topology.forward_proxy
            or scenario.topology.gateway
        ):
            raise EngineUnavailable(f"scenario {scenario.name} has no transparent variant")
        files.append(compose / "transparent.yml")
    if uses_locust(scenario.devices):  # Locust master + scaled workers, no device containers
        files.append(compose / "fleet.yml")
    return files


def fleet_workers() -> int:
    """Locust workers for a compose fleet: ATLS_FLEET_WORKERS, default 2."""
    return max(1, int(os.environ.get("ATLS_FLEET_WORKERS", "2")))


class ComposeEngine:
    name = "compose"

    def __init__(
        self,
        scenario: Scenario,
        run_dir: Path,
        say: Callable[[str], None] = print,
        middlebox_mode: str = "explicit",
        image: str | None = None,
    ) -> None:
        if middlebox_mode not in MIDDLEBOX_MODES:
            raise ValueError(f"middlebox mode is one of {MIDDLEBOX_MODES}")
        self.scenario = scenario
        self.run_dir = run_dir.resolve()
        self.say = say
        self.middlebox_mode = middlebox_mode
        self.image = image or default_image()
        # constrained scenarios run CoAP devices (compose/constrained.yml)
        self.device_service = "coap-device" if scenario.topology.gateway else "device"

    def run(self) -> Observations:
        sc = self.scenario
        client = docker_client()
        cli = compose_cli()
        require_image(client, self.image)
        files = compose_files(sc, self.middlebox_mode)
        if sc.service_args:  # the scenario's service options, as a generated override file
            override = self.run_dir / "service-override.yml"
            override.parent.mkdir(parents=True, exist_ok=True)
            command = ["atls-service", "--pki", "/pki", "--host", "0.0.0.0", "--port", "8443"]
            override.write_text(
                json.dumps(
                    {"services": {"atls-service": {"command": [*command, *sc.service_args]}}}
                )
            )
            files.append(override)
        project = f"atls{sc.name.replace('-', '')}{secrets.token_hex(3)}"
        base = [*cli, "-p", project] + [a for f in files for a in ("-f", str(f))]
        env = {
            **os.environ,
            "ATLS_SCENARIO": Path(sc.source).stem,
            "ATLS_SCENARIOS": str(Path(sc.source).resolve().parent),
            "ATLS_DEVICES": str(sc.devices.count),
            "ATLS_REPORTS": str(self.run_dir),
            "ATLS_IMAGE": self.image,
            "ATLS_DEVICE_LINGER": "0",  # devices exit: their exit codes are watched here
            "COMPOSE_HTTP_TIMEOUT": "300",
        }
        if sc.topology.gateway:
            env["ATLS_CANARY"] = "CANARY-" + secrets.token_hex(8)
        scale = [f"{self.device_service}={sc.devices.count}"]
        if self.device_service != "device":
            scale = ["device=0", *scale]
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        obs = Observations()
        if sc.topology.gateway:
            obs.canary = env["ATLS_CANARY"]
        self.say(
            f"[compose] project {project}: {' + '.join(f.name for f in files)} "
            f"({self.middlebox_mode} middlebox, image {self.image}, {' '.join(cli)})"
        )
        try:
            if sc.faults:  # everything but the devices first, then the faults
                infra = ["device=0"] + (["coap-device=0"] if sc.topology.gateway else [])
                self._up(
                    client,
                    project,
                    base + ["up", "-d"] + [a for x in infra for a in ("--scale", x)],
                    env,
                    "up-infra",
                )
                for fault in sc.faults:
                    self._apply_fault(client, project, fault)
            if uses_locust(sc.devices):
                workers = fleet_workers()
                env["ATLS_FLEET_WORKERS"] = str(workers)
                scale = ["--scale", "device=0", "--scale", f"locust-worker={workers}"]
                started = time.monotonic()
                self._up(client, project, base + ["up", "-d", "--no-recreate", *scale], env, "up")
                serials = [f"device-{i:04d}" for i in range(1, sc.devices.count + 1)]
                self._wait_fleet(serials, workers)
                obs.devices = collect_reports(self.run_dir, serials)
                summary = summarize(self.run_dir, sc.devices.count, time.monotonic() - started)
                obs.notes.append(f"{summary_line(summary)}; {workers} Locust workers")
                self.say(f"[compose] {summary_line(summary)}")
            else:
                self._up(
                    client,
                    project,
                    base
                    + ["up", "-d", "--no-recreate"]
                    + [a for x in scale for a in ("--scale", x)],
                    env,
                    "up",
                )
                timers = [
                    threading.Thread(
                        target=self._load_fault, args=(client, project, fault), daemon=True
                    )
                    for fault in sc.load_faults
                ]
                obs.rss_baseline_kb = self._service_rss_kb(client, project)
                for timer in timers:
                    timer.start()
                exits = self._wait_devices(client, project)
                for timer in timers:
                    timer.join(120)
                obs.devices = self._device_reports(exits)
                if sc.expect.get("store_baseline") or "memory_growth_mb" in sc.expect:
                    obs.store_after = self._await_baseline(client, project)
                    obs.rss_after_kb = self._service_rss_kb(client, project)
                    self.say(
                        f"[compose] after the TTLs: store {obs.store_after}, service memory "
                        f"{(obs.rss_baseline_kb or 0) // 1024} MB before, "
                        f"{(obs.rss_after_kb or 0) // 1024} MB after"
                    )
            obs.events, obs.health = self._events(client, project)
        finally:
            self._save_containers(client, project)
            self._save_logs(client, project)
            self._compose(
                base + ["down", "-v", "--remove-orphans", "--timeout", "5"],
                env,
                "down",
                timeout=300,
                check=False,
            )
        audit = self.run_dir / "audit.jsonl"
        if audit.exists():
            obs.audit = [json.loads(line) for line in audit.read_text().splitlines() if line]
        coap_audit = self.run_dir / "coap-audit.jsonl"
        if coap_audit.exists():
            obs.coap_audit = [json.loads(x) for x in coap_audit.read_text().splitlines() if x]
        if obs.canary:
            # the service's own log is the endpoint's (it may name the canary)
            obs.canary_hits, obs.canary_searched = search_canary(
                self.run_dir, obs.canary, exclude=("*atls-service*",)
            )
        obs.notes.append(f"compose project {project}, middlebox {self.middlebox_mode}")
        return obs

    def _compose(
        self, argv: list[str], env: dict[str, str], what: str, timeout: float, check: bool = True
    ) -> None:
        done = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=timeout, cwd=repo_root()
        )
        (self.run_dir / "logs" / f"compose-{what}.log").write_text(done.stdout + done.stderr)
        if check and done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            raise RuntimeError(f"compose {what} failed (exit {done.returncode}):\n{tail}")

    def _apply_fault(self, client: Any, project: str, fault: str) -> None:
        """Fault injection through the Docker SDK, before the devices start."""
        middlebox = self._containers(client, project, "middlebox")[0]
        if fault == "restart-middlebox":
            middlebox.restart(timeout=5)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                middlebox.reload()
                if middlebox.attrs["State"].get("Health", {}).get("Status") == "healthy":
                    break
                time.sleep(1)
            else:
                raise RuntimeError("the middlebox did not become healthy after its restart")
            self.say("[compose] fault: middlebox restarted (healthy again)")
        elif fault == "middlebox-unreachable":
            lan = next(
                n
                for n in client.networks.list(filters={"label": f"{_LABEL}={project}"})
                if n.name.endswith("_lan")
            )
            lan.disconnect(middlebox)
            self.say(f"[compose] fault: middlebox disconnected from {lan.name}")
        else:
            raise ValueError(f"unknown fault {fault!r}")

    # -- faults under load (Docker SDK) -----------------------------------------------

    def _store(self, client: Any, project: str) -> dict[str, Any] | None:
        try:
            _, health = self._events(client, project, quiet=True)
        except Exception:  # noqa: BLE001 - a restarting service: no answer yet
            return None
        store = (health or {}).get("store")
        return store if isinstance(store, dict) else None

    def _load_fault(self, client: Any, project: str, fault: LoadFault) -> None:
        """restart-service / cut-service, ``after`` seconds from the first handshake seen."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            store = self._store(client, project) or {}
            if store.get("handshakes") or store.get("sessions"):
                break
            time.sleep(0.2)
        time.sleep(fault.after)
        service = self._containers(client, project, "atls-service")[0]
        if fault.type == "restart-service":
            service.stop(timeout=5)
            self.say(f"[compose] fault: service stopped {fault.after:g}s after a handshake began")
            time.sleep(fault.duration)
            service.start()
            self._await_healthy(service)
            operator = self._containers(client, project, "operator")
            if operator:  # re-registers the domain and claims (the registry was in memory)
                operator[0].restart(timeout=5)
                self._await_healthy(operator[0])
            self.say(f"[compose] fault: service back after {fault.duration:g}s, re-registered")
        elif fault.type == "cut-service":
            wan = next(
                n
                for n in client.networks.list(filters={"label": f"{_LABEL}={project}"})
                if n.name.endswith("_wan")
            )
            service.reload()
            settings = service.attrs["NetworkSettings"]["Networks"][wan.name]
            address = settings.get("IPAMConfig", {}).get("IPv4Address") or settings["IPAddress"]
            wan.disconnect(service, force=True)
            self.say(f"[compose] fault: service disconnected from {wan.name}")
            time.sleep(fault.duration)
            wan.connect(service, ipv4_address=address, aliases=["atls-service"])
            self.say(f"[compose] fault: service reconnected after {fault.duration:g}s")

    def _await_healthy(self, container: Any, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            container.reload()
            if container.attrs["State"].get("Health", {}).get("Status") == "healthy":
                return
            time.sleep(0.5)
        raise RuntimeError(f"{container.name} did not become healthy")

    def _await_baseline(self, client: Any, project: str) -> dict[str, Any] | None:
        args = list(self.scenario.service_args)
        ttl = (
            sum(
                float(args[i + 1])
                for i, a in enumerate(args)
                if a in ("--handshake-ttl", "--idle-ttl")
            )
            or 330.0
        )
        deadline = time.monotonic() + min(ttl, 120.0) + 20.0
        store = None
        while time.monotonic() < deadline:
            store = self._store(client, project)
            if store and store.get("handshakes") == 0 and store.get("sessions") == 0:
                break
            time.sleep(1.0)
        return store

    def _service_rss_kb(self, client: Any, project: str) -> int | None:
        service = self._containers(client, project, "atls-service")
        if not service:
            return None
        probe = (
            "import glob\n"
            "for p in glob.glob('/proc/[0-9]*'):\n"
            "    try:\n"
            "        cmd = open(p + '/cmdline', 'rb').read()\n"
            "        if b'atls-service' in cmd and b'python3\\x00-c' not in cmd:\n"
            "            print(open(p + '/status').read().split('VmRSS:')[1].split()[0])\n"
            "    except OSError:\n"
            "        pass\n"
        )
        result = service[0].exec_run(["python3", "-c", probe])
        values = [int(x) for x in result.output.decode().split() if x.isdigit()]
        return max(values) if result.exit_code == 0 and values else None

    def _containers(self, client: Any, project: str, service: str | None = None) -> list[Any]:
        labels = [f"{_LABEL}={project}"]
        if service:
            labels.append(f"com.docker.compose.service={service}")
        return list(client.containers.list(all=True, filters={"label": labels}))

    def _wait_devices(self, client: Any, project: str) -> dict[str, int]:
        count = self.scenario.devices.count
        deadline = time.monotonic() + 120 + 3 * count
        started = time.monotonic()
        last_done = -1
        while True:
            devices = self._containers(client, project, self.device_service)
            for c in devices:
                c.reload()
            done = {
                c.name: c.attrs["State"]["ExitCode"]
                for c in devices
                if c.status in ("exited", "dead")
            }
            if len(done) != last_done:
                self.say(
                    f"[compose] devices {len(done)}/{count} finished "
                    f"({time.monotonic() - started:.1f}s)"
                )
                last_done = len(done)
            if len(devices) == count and len(done) == count:
                return done
            if time.monotonic() > deadline:
                raise RuntimeError(f"devices did not finish in time: {len(done)}/{count}")
            time.sleep(1)

    def _wait_fleet(self, serials: list[str], workers: int) -> None:
        """Every simulated device wrote its report (workers write them to /reports/devices)."""
        count = len(serials)
        deadline = time.monotonic() + 300 + 3 * count
        started = time.monotonic()
        last = -1
        while True:
            done = sum(1 for s in serials if (self.run_dir / "devices" / f"{s}.json").exists())
            if done != last and (done == count or done - last >= max(1, count // 10)):
                self.say(
                    f"[compose] fleet ({workers} workers): {done}/{count} devices finished "
                    f"({time.monotonic() - started:.1f}s)"
                )
                last = done
            if done == count:
                return
            if time.monotonic() > deadline:
                self.say(f"[compose] the fleet did not finish in time: {done}/{count}")
                return
            time.sleep(1)

    def _device_reports(self, exits: dict[str, int]) -> list[dict[str, Any]]:
        reports = []
        for path in sorted((self.run_dir / "devices").glob("*.json")):
            reports.append(json.loads(path.read_text()))
        missing = len(exits) - len(reports)
        for name, code in list(exits.items())[: max(0, missing)]:
            reports.append(
                {
                    "device": name,
                    "exit_code": code,
                    "result": "failed",
                    "steps": [],
                    "error": "the device container left no report (see logs/)",
                }
            )
        codes = sorted(exits.values())
        if sorted(r.get("exit_code", -1) for r in reports) != codes:
            self.say(f"[compose] note: container exit codes {codes} differ from the reports")
        return sorted(reports, key=lambda r: str(r.get("device")))

    def _events(
        self, client: Any, project: str, quiet: bool = False
    ) -> tuple[list[dict[str, Any]], dict | None]:
        service = self._containers(client, project, "atls-service")
        if not service:
            return [], None
        result = service[0].exec_run(
            [
                "atls-testbed",
                "operator",
                "events",
                "--service",
                "https://atls-service:8443",
                "--pki",
                "/pki",
            ]
        )
        if result.exit_code != 0:
            if not quiet:
                self.say(f"[compose] could not read service events: {result.output[-300:]!r}")
            return [], None
        data = json.loads(result.output.decode().strip().splitlines()[-1])
        return data["events"], data["health"]

    def _save_logs(self, client: Any, project: str) -> None:
        for container in self._containers(client, project):
            try:
                text = container.logs(timestamps=False).decode(errors="replace")
            except Exception:  # noqa: BLE001 - a vanished container has no logs; fine
                continue
            (self.run_dir / "logs" / f"{container.name}.log").write_text(text)

    def _up(
        self, client: Any, project: str, argv: list[str], env: dict[str, str], what: str
    ) -> None:
        """``compose up -d``, saying what the stack is waiting on while it starts."""
        log_path = self.run_dir / "logs" / f"compose-{what}.log"
        started = time.monotonic()
        last = ""
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=repo_root()
            )
            while True:
                try:
                    code: int | None = proc.wait(timeout=1)
                except subprocess.TimeoutExpired:
                    code = None
                state = stack_state(
                    client.api.containers(all=True, filters={"label": [f"{_LABEL}={project}"]})
                )
                if state and state != last:
                    self.say(f"[compose] {time.monotonic() - started:4.0f}s {state}")
                    last = state
                if code is not None:
                    break
                if time.monotonic() - started > 600:
                    proc.kill()
                    proc.wait()
                    raise RuntimeError(f"compose {what} did not finish in 600 s ({last})")
        if code != 0:
            lines = log_path.read_text().strip().splitlines()
            tail = "\n".join(lines[-15:])
            if "non-overlapping IPv4 address pool" in tail:
                tail += (
                    "\nDocker has no free subnet left: networks of earlier runs may be "
                    "left over (docker network ls; docker network prune)"
                )
            raise RuntimeError(f"compose {what} failed (exit {code}):\n{tail}")

    def _save_containers(self, client: Any, project: str) -> None:
        """logs/containers.json: each container's service, image and final state."""
        rows = [
            {
                "name": c["Names"][0].lstrip("/"),
                "service": c["Labels"].get(_SERVICE_LABEL, ""),
                "image": c["Image"],
                "state": c["State"],
                "status": c["Status"],
            }
            for c in client.api.containers(all=True, filters={"label": [f"{_LABEL}={project}"]})
        ]
        path = self.run_dir / "logs" / "containers.json"
        path.write_text(json.dumps(sorted(rows, key=lambda r: r["name"]), indent=2))


def _health(status: str) -> str:
    """A container's readiness from the Docker API's status text ("Up 3 seconds (healthy)")."""
    for word in ("health: starting", "unhealthy", "healthy"):
        if f"({word})" in status:
            return word.replace("health: ", "")
    return ""


def stack_state(containers: list[dict[str, Any]]) -> str:
    """One line: which services are ready, which the stack is still waiting on."""
    by_service: dict[str, list[str]] = {}
    for c in containers:
        service = c.get("Labels", {}).get(_SERVICE_LABEL, "?")
        health = _health(c.get("Status", ""))
        state = c.get("State", "")
        if state == "running" and health:
            state = health
        by_service.setdefault(service, []).append(state)
    ready, waiting = [], []
    for service, states in sorted(by_service.items()):
        label = service if len(states) == 1 else f"{service} x{len(states)}"
        if all(st in ("healthy", "running", "exited") for st in states):
            ready.append(label)
        else:
            pending = sorted({st for st in states if st not in ("healthy", "running", "exited")})
            waiting.append(f"{label} ({', '.join(pending)})")
    parts = []
    if waiting:
        parts.append("waiting on " + ", ".join(waiting))
    if ready:
        parts.append("ready: " + ", ".join(ready))
    return "; ".join(parts)
