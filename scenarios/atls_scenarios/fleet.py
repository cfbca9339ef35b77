"""Fleets: many devices simulated in-process by Locust, each running the real bootstrap.

The local engine runs ``locust`` headless as a subprocess on
``fleet_locustfile.py`` (one ``User`` per device); the compose engine runs its
master and ``--scale``d workers. Either way the per-device JSON reports land
in the run's ``devices/`` folder (the same reports ``atls-device`` writes), so
the scenario's expectations are checked unchanged, and Locust's CSV
statistics and HTML report land in the run folder beside them.

Nothing here imports Locust: it is an optional dependency (``fleet`` extra).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from atls_client.bootstrap import STEPS

from .scenario import Devices

LOCUSTFILE = Path(__file__).with_name("fleet_locustfile.py")
# devices.engine "auto": more devices than this run in-process under Locust.
PROCESS_LIMIT = 50
DEFAULT_SPAWN_RATE = 50.0


class FleetError(RuntimeError):
    """Locust is missing or did not run."""


def uses_locust(devices: Devices) -> bool:
    if devices.engine == "locust":
        return True
    return devices.engine == "auto" and devices.count > PROCESS_LIMIT


def locust_command() -> str:
    candidate = Path(sys.executable).with_name("locust")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("locust")
    if found is None:
        raise FleetError(
            "fleets need Locust: pip install 'atls-testbed[fleet]' (./testbed installs it)"
        )
    return found


@dataclass
class FleetConfig:
    """What every simulated device needs (written as JSON, read by the user file)."""

    service_url: str
    pki: str
    devices: int
    claim_dir: str
    report_dir: str
    store_dir: str
    proxy: str | None
    server_name: str | None
    variant: str
    mode: str
    retries: int
    backoff: float
    timeout: float
    tls_version: str | None

    def write(self, path: Path) -> Path:
        path.write_text(json.dumps(asdict(self), indent=2))
        return path


def fleet_config(
    devices: Devices,
    run_dir: Path,
    service_url: str,
    pki_root: Path,
    proxy: str | None,
    server_name: str | None,
) -> FleetConfig:
    return FleetConfig(
        service_url=service_url,
        pki=str(pki_root),
        devices=devices.count,
        claim_dir=str(run_dir / "fleet" / "claims"),
        report_dir=str(run_dir / "devices"),
        store_dir=str(run_dir / "stores"),
        proxy=proxy,
        server_name=server_name,
        variant=devices.variant,
        mode=devices.mode,
        retries=devices.retries,
        backoff=0.1,
        timeout=devices.timeout,
        tls_version=devices.tls_version,
    )


def spawn_rate(devices: Devices) -> float:
    return devices.spawn_rate or min(float(devices.count), DEFAULT_SPAWN_RATE)


def processes(devices: Devices) -> int:
    """Locust processes (``--processes``) for a local fleet: one per 250 devices, at most 4,
    or ATLS_FLEET_PROCESSES. The devices' own TLS and voucher work is CPU in the fleet's
    process; one process on a shared machine gets one fair share and becomes the bound."""
    wanted = os.environ.get("ATLS_FLEET_PROCESSES")
    if wanted:
        return max(1, int(wanted))
    return min(4, max(1, devices.count // 250))


def run_time_limit(devices: Devices) -> int:
    """A bound for the whole fleet: spawning, plus every exchange timing out with retries."""
    spawn = devices.count / spawn_rate(devices)
    per_device = devices.timeout * (len(STEPS) + 2) * (devices.retries + 1)
    return math.ceil(spawn + per_device + 60)


def headless_locust(
    locustfile: Path, users: int, rate: float, run_time: float, out: Path, workers: int
) -> list[str]:
    """The ``locust`` command line of a bounded headless run that reports into ``out``."""
    argv = [
        locust_command(),
        "-f",
        str(locustfile),
        "--headless",
        "--users",
        str(users),
        "--spawn-rate",
        str(rate),
        "--run-time",
        f"{run_time:.0f}s",
        "--stop-timeout",
        "30",
        "--csv",
        str(out / "locust"),
        "--html",
        str(out / "locust-report.html"),
        "--only-summary",
        "--loglevel",
        "WARNING",
        "--logfile",
        str(out / "locust.log"),
        "--exit-code-on-error",
        "0",
    ]
    if workers > 1:  # Locust forks this many processes (one core share each is the bound)
        argv += ["--processes", str(workers)]
    return argv


def run_local_fleet(
    devices: Devices,
    run_dir: Path,
    config: FleetConfig,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run ``locust`` headless here; return the fleet summary (also in fleet/summary.json)."""
    out = run_dir / "fleet"
    out.mkdir(parents=True, exist_ok=True)
    config_path = config.write(out / "config.json")
    limit = run_time_limit(devices)
    rate = spawn_rate(devices)
    workers = processes(devices)
    argv = headless_locust(LOCUSTFILE, devices.count, rate, limit, out, workers)
    env = {**os.environ, "ATLS_FLEET_CONFIG": str(config_path)}
    say(
        f"[runner] fleet: {devices.count} in-process devices under Locust "
        f"({workers} process(es), spawn {rate:g}/s, bound {limit}s); statistics in {out}"
    )
    started = time.monotonic()
    with (out / "locust-stdout.txt").open("w") as stdout:
        try:
            done = subprocess.run(
                argv,
                stdout=stdout,
                stderr=subprocess.STDOUT,
                env=env,
                stdin=subprocess.DEVNULL,
                timeout=limit + 120,
            )
        except subprocess.TimeoutExpired as exc:
            raise FleetError(f"locust did not stop within {limit + 120}s") from exc
    wall = time.monotonic() - started
    if done.returncode not in (0, 1):
        tail = (out / "locust-stdout.txt").read_text(errors="replace")[-2000:]
        raise FleetError(f"locust exited {done.returncode}:\n{tail}")
    return summarize(run_dir, devices.count, wall)


def collect_reports(run_dir: Path, serials: list[str]) -> list[dict[str, Any]]:
    """One report per device; a device that never reported is a failure with a reason."""
    reports = []
    for serial in serials:
        path = run_dir / "devices" / f"{serial}.json"
        try:
            report: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            report = {
                "device": serial,
                "result": "failed",
                "exit_code": -1,
                "steps": [],
                "error": "the fleet never ran this device (Locust stopped first?)",
            }
        reports.append(report)
    return reports


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summarize(run_dir: Path, count: int, wall: float) -> dict[str, Any]:
    """Exact per-step p50/p99 from the device reports, success, throughput; as JSON too."""
    reports = [json.loads(p.read_text()) for p in sorted((run_dir / "devices").glob("*.json"))]
    ok = [r for r in reports if r.get("exit_code") == 0]
    steps: dict[str, dict[str, float]] = {}
    for name in STEPS:
        times = [
            s["ms"] for r in reports for s in r.get("steps", []) if s["name"] == name and s["ok"]
        ]
        if times:
            steps[name] = {
                "n": len(times),
                "p50_ms": percentile(times, 50),
                "p99_ms": percentile(times, 99),
            }
    totals = [r["fleet"]["total_ms"] for r in reports if "fleet" in r]
    summary = {
        "devices": count,
        "reported": len(reports),
        "succeeded": len(ok),
        "success_rate": round(len(ok) / count, 4) if count else 0.0,
        "wall_s": round(wall, 1),
        "bootstraps_per_s": round(len(ok) / wall, 2) if wall else 0.0,
        "bootstrap_p50_ms": percentile(totals, 50),
        "bootstrap_p99_ms": percentile(totals, 99),
        "steps": steps,
    }
    (run_dir / "fleet").mkdir(exist_ok=True)
    (run_dir / "fleet" / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def summary_line(summary: dict[str, Any]) -> str:
    return (
        f"fleet: {summary['succeeded']}/{summary['devices']} bootstrapped in "
        f"{summary['wall_s']}s ({summary['bootstraps_per_s']}/s); bootstrap p50 "
        f"{summary['bootstrap_p50_ms'] / 1000:.1f}s p99 {summary['bootstrap_p99_ms'] / 1000:.1f}s"
    )
