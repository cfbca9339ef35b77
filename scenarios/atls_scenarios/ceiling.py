"""The middlebox's own ceiling for a fleet's requests (issue #11: fleet >= 70 % of it).

``atls-testbed fleet-ceiling`` starts a do-nothing HTTPS upstream
(``ceiling_upstream``) and mitmdump (no addon by default: mitmdump's own ceiling),
then runs Locust headless with ``ceiling_locustfile``: every iteration is one
device's worth of requests (``MIX``, taken from a many-devices run's audit log
and mitmdump log). Iterations per second compare with a fleet's bootstraps per
second through the same mitmdump with the addon and the real service.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from atls.pki import init_pki

from .fleet import headless_locust
from .processes import ManagedProcess, MitmdumpProcess, free_port, wait_port

# One bootstrapping device through the middlebox (many-devices, TLS 1.3, export mode):
# 4 CONNECT + TLS connections (probe, the presented chain, network TLS, the app
# request) and one keep-alive connection with 6 ATLS POSTs (request, answer bytes).
MIX: dict[str, Any] = {
    "new_connections": 4,
    "probe_response": 16,
    "atls_exchanges": [
        (1551, 2490),
        (1100, 1406),
        (1523, 165),
        (331, 2904),
        (211, 1319),
        (22, 22),
    ],
}
LOCUSTFILE = Path(__file__).with_name("ceiling_locustfile.py")


def run_ceiling(
    out: Path,
    users: int = 100,
    run_time: int = 60,
    spawn_rate: float = 50.0,
    with_addon: bool = False,
    say: Callable[[str], None] = print,
    processes: int = 1,
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    pki = init_pki(out / "pki", device_serials=[])
    logs = out / "logs"
    port = free_port()
    upstream = ManagedProcess(
        "ceiling-upstream",
        [
            sys.executable,
            "-m",
            "uvicorn",
            "atls_scenarios.ceiling_upstream:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--ssl-certfile",
            str(pki.service_cert),
            "--ssl-keyfile",
            str(pki.service_key),
            "--log-level",
            "warning",
            "--no-access-log",
            "--timeout-keep-alive",
            "300",
        ],
        logs / "upstream.log",
    )
    upstream.start()
    mitm: MitmdumpProcess | None = None
    try:
        wait_port("127.0.0.1", port, upstream)
        mitm = MitmdumpProcess(
            out / "mitmproxy",
            logs,
            upstream_ca=pki.vendor_ca_cert,
            with_addon=with_addon,
            log_level="warn",
        ).start()
        config = out / "ceiling-config.json"
        config.write_text(
            json.dumps(
                {
                    "upstream": f"https://127.0.0.1:{port}",
                    "proxy": mitm.url,
                    "ca": str(mitm.ca_cert),
                }
            )
        )
        # as many Locust processes as the fleet had: the client is no bound
        argv = headless_locust(LOCUSTFILE, users, spawn_rate, run_time, out, processes)
        say(
            f"[ceiling] {users} users ({processes} Locust process(es)) through mitmdump "
            f"({'with' if with_addon else 'without'} the addon) for {run_time}s"
        )
        env = {**os.environ, "ATLS_CEILING_CONFIG": str(config)}
        started = time.monotonic()
        with (out / "locust-stdout.txt").open("w") as stdout:
            subprocess.run(
                argv,
                stdout=stdout,
                stderr=subprocess.STDOUT,
                env=env,
                stdin=subprocess.DEVNULL,
                timeout=run_time + 120,
                check=False,
            )
        wall = time.monotonic() - started
    finally:
        if mitm:
            mitm.stop()
        upstream.stop()
    rows = {(r["Type"], r["Name"]): r for r in csv.DictReader((out / "locust_stats.csv").open())}
    device = rows.get(("mix", "device"), {})
    done = int(device.get("Request Count", 0))
    failed = int(device.get("Failure Count", 0))
    summary = {
        "users": users,
        "run_time_s": run_time,
        "wall_s": round(wall, 1),
        "with_addon": with_addon,
        "processes": processes,
        "devices_worth": done,
        "failures": failed,
        "devices_per_s": round(float(device.get("Requests/s", 0.0)), 2),
        "requests_per_s": round(float(rows.get(("", "Aggregated"), {}).get("Requests/s", 0)), 1),
        "device_p50_ms": float(device.get("50%", 0) or 0),
        "device_p99_ms": float(device.get("99%", 0) or 0),
        "mix": MIX,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    say(
        f"[ceiling] {summary['devices_per_s']} devices' worth of requests/s "
        f"({summary['requests_per_s']} requests/s, {failed} failed iterations); {out}"
    )
    return summary
