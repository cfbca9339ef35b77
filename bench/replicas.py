"""Service replicas behind HAProxy: fleet throughput against N, and who holds the CPU.

For each N, the compose fleet (Locust workers, the middlebox with the addon,
HAProxy in front of N ``atls-service`` replicas) bootstraps the same number
of devices; meanwhile ``docker stats`` is sampled, so the table says both how
fast devices completed and which container was using the CPU. The middlebox
is the bound where adding replicas stops adding throughput while mitmdump
(one process, one core at most) stays near 100 %. Prints a table and writes
``replicas.json``; asserts nothing.

Completion rate: devices that bootstrapped, over the time from the first
device's start to the last device's end (each report says how long its
device ran), so image start, PKI and operator setup are not counted.

Usage: ./testbed bench replicas [--replicas 1,2,3] [--devices 200] [--workers 2]
       [--spawn-rate 1000] [--image atls-testbed:latest] [--out reports/bench]
Needs Docker, docker-compose and the image (./testbed images build --offline).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILES = ["compose/docker-compose.yml", "compose/fleet.yml", "compose/replicas.yml"]
ROLES = ("middlebox", "service", "atls-service", "locust-worker", "locust-master", "host")


def _compose(project: str, env: dict[str, str], *args: str) -> list[str]:
    files = [f for name in COMPOSE_FILES for f in ("-f", str(ROOT / name))]
    return ["docker-compose", *files, "-p", project, *args]


def _host_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [float(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def _sample(project: str, samples: list[dict[str, float]], stop: threading.Event) -> None:
    """CPU % per role (summed over its containers), one dict per docker stats call.

    ``host`` is the whole machine's busy share since the previous sample, in % of
    all cores (100 = every core busy).
    """
    last = _host_cpu()
    while not stop.is_set():
        done = subprocess.run(
            ["docker", "stats", "--no-stream", "--format", "{{.Name}}\t{{.CPUPerc}}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        sample: dict[str, float] = {}
        for line in done.stdout.splitlines():
            name, _, cpu = line.partition("\t")
            parts = name.split("_")  # docker-compose v1: project_service_index
            if len(parts) < 3 or parts[0] != project:
                continue
            role = "_".join(parts[1:-1])
            try:
                sample[role] = sample.get(role, 0.0) + float(cpu.rstrip("%"))
            except ValueError:
                continue
        now = _host_cpu()
        if now[1] > last[1]:
            sample["host"] = 100 * (now[0] - last[0]) / (now[1] - last[1])
        last = now
        if len(sample) > 1:
            samples.append(sample)
        stop.wait(1.0)


def run_one(
    n: int, devices: int, workers: int, spawn_rate: int, image: str, out: Path
) -> dict[str, object]:
    project = f"atlsrep{n}"
    reports = out / f"replicas-{n}"
    reports.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "ATLS_IMAGE": image,
        "ATLS_DEVICES": str(devices),
        "ATLS_FLEET_WORKERS": str(workers),
        "ATLS_SCENARIO": "many-devices",
        "ATLS_FLEET_SPAWN_RATE": str(spawn_rate),
        "ATLS_REPORTS": str(reports.resolve()),
    }
    up = _compose(project, env, "up", "--exit-code-from", "collector", "--scale", "device=0",
                  "--scale", f"locust-worker={workers}", "--scale", f"service={n}")  # fmt: skip
    samples: list[dict[str, float]] = []
    stop = threading.Event()
    sampler = threading.Thread(target=_sample, args=(project, samples, stop), daemon=True)
    print(f"[replicas] N={n}: {devices} devices, {workers} workers ...", flush=True)
    started = time.monotonic()
    sampler.start()
    with open(reports / "compose.log", "wb") as log:
        try:
            code = subprocess.run(up, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  timeout=1200, check=False).returncode  # fmt: skip
        except subprocess.TimeoutExpired:
            code = -1
    stop.set()
    sampler.join(timeout=60)
    subprocess.run(_compose(project, env, "down", "-v", "--remove-orphans"), env=env,
                   capture_output=True, timeout=300, check=False)  # fmt: skip
    starts, ends = [], []
    ok = 0
    for path in (reports / "devices").glob("*.json"):
        try:
            report = json.loads(path.read_text())
        except ValueError:
            continue
        # written when the device finished; it ran for fleet.total_ms before that
        ends.append(path.stat().st_mtime)
        starts.append(ends[-1] - report.get("fleet", {}).get("total_ms", 0.0) / 1000)
        ok += report.get("exit_code") == 0
    span = max(ends) - min(starts) if ends else 0.0
    # while the fleet ran: samples where the workers were busy
    busy = [s for s in samples if s.get("locust-worker", 0.0) > 5.0] or samples
    cpu = {role: round(statistics.mean(s.get(role, 0.0) for s in busy), 1) for role in ROLES}
    return {
        "replicas": n,
        "devices": devices,
        "ok": ok,
        "exit_code": code,
        "wall_s": round(time.monotonic() - started, 1),
        "completion_span_s": round(span, 1),
        "bootstraps_per_s": round(ok / span, 2) if span else 0.0,
        "cpu_percent_while_busy": cpu,
        "samples": len(busy),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench replicas", description=__doc__.split("\n")[0])
    parser.add_argument("--replicas", default="1,2,3", help="comma-separated N to measure")
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--spawn-rate",
        type=int,
        default=1000,
        help="devices started per second (default: all at once, so the fleet, "
        "not the spawn rate, sets the pace)",
    )
    parser.add_argument("--image", default=os.environ.get("ATLS_IMAGE", "atls-testbed:latest"))
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench")
    args = parser.parse_args(argv)
    try:
        counts = [int(x) for x in args.replicas.split(",") if x]
    except ValueError:
        print(f"bench replicas: --replicas wants numbers, got {args.replicas!r}", file=sys.stderr)
        return 2
    if not counts or min(counts) < 1 or args.devices < 2 or args.workers < 1:
        print("bench replicas: need N >= 1, at least 2 devices and 1 worker", file=sys.stderr)
        return 2
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        print("bench replicas: Docker is not running (start dockerd)", file=sys.stderr)
        return 2
    if subprocess.run(["docker", "image", "inspect", args.image], capture_output=True,
                      check=False).returncode != 0:  # fmt: skip
        print(f"bench replicas: image {args.image} not found "
              "(./testbed images build --offline)", file=sys.stderr)  # fmt: skip
        return 2
    out = args.out / time.strftime("replicas-%Y%m%d-%H%M%S")
    results = [
        run_one(n, args.devices, args.workers, args.spawn_rate, args.image, out) for n in counts
    ]
    (out / "replicas.json").write_text(json.dumps(results, indent=2))
    print(f"{'N':>2} {'ok':>9} {'per s':>6} {'span s':>7}   CPU % while busy: "
          + " ".join(f"{r:>13}" for r in ROLES))  # fmt: skip
    for r in results:
        cpu = r["cpu_percent_while_busy"]
        assert isinstance(cpu, dict)
        print(f"{r['replicas']:>2} {r['ok']:>4}/{r['devices']:<4} {r['bootstraps_per_s']:>6} "
              f"{r['completion_span_s']:>7}                     "
              + " ".join(f"{cpu[role]:>13}" for role in ROLES))  # fmt: skip
    print(f"[replicas] wrote {out / 'replicas.json'} (compose logs and device reports beside it)")
    return 0 if all(r["ok"] == r["devices"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
