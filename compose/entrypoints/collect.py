#!/usr/bin/env python3
"""The collector: waits for every device's result, prints them, exits with the aggregate.

Why: with `up --scale device=N --exit-code-from device` compose stops the
stack when the first device exits, so the other devices' results are lost.
Devices instead drop ``<container>.rc`` (and their report ``<container>.json``)
into the project's ``results`` volume and stay up; this one-shot exits once
ATLS_DEVICES results are in, so ``up --exit-code-from collector`` reports all.

Exit code: 0 if every device exited 0, else the largest device exit code;
124 if not every device reported within ATLS_COLLECT_TIMEOUT seconds.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

RESULTS = Path(os.environ.get("ATLS_RESULTS", "/results"))
TIMEOUT_EXIT = 124


def read_results(results: Path) -> dict[str, tuple[int, dict]]:
    """Container name -> (exit code, report or {}), for the devices that finished."""
    found: dict[str, tuple[int, dict]] = {}
    for rc_file in sorted(results.glob("*.rc")):
        name = rc_file.stem
        try:
            code = int(rc_file.read_text().strip())
        except ValueError:
            continue
        report_file = results / f"{name}.json"
        try:
            report = json.loads(report_file.read_text()) if report_file.exists() else {}
        except json.JSONDecodeError:
            report = {}
        found[name] = (code, report)
    return found


def describe(name: str, code: int, report: dict) -> str:
    device = report.get("device", "?")
    result = report.get("result", "no report")
    line = f"  {device:<12} {result:<13} exit {code:<3} (container {name})"
    if report.get("error"):
        line += f": {report['error']}"
    return line


def aggregate(codes: list[int]) -> int:
    return max(codes, default=0)


def main() -> int:
    expected = int(os.environ.get("ATLS_DEVICES", "1"))
    timeout = float(os.environ.get("ATLS_COLLECT_TIMEOUT", "600"))
    print(f"collector: waiting for {expected} device result(s) (timeout {timeout:g}s)", flush=True)
    deadline = time.monotonic() + timeout
    seen = -1
    while True:
        found = read_results(RESULTS)
        if len(found) != seen:
            seen = len(found)
            print(f"collector: {seen}/{expected} devices finished", flush=True)
        if seen >= expected:
            break
        if time.monotonic() > deadline:
            print(
                f"collector: only {seen} of {expected} devices reported in {timeout:g}s "
                "(see the device containers' logs)",
                flush=True,
            )
            break
        time.sleep(0.5)
    time.sleep(1)  # a straggler beyond ATLS_DEVICES (a larger --scale) still gets listed
    found = read_results(RESULTS)
    codes = [code for code, _ in found.values()]
    ok = sum(1 for c in codes if c == 0)
    print(f"collector: {len(found)} device result(s), {ok} exited 0", flush=True)
    for name, (code, report) in sorted(found.items(), key=lambda kv: str(kv[1][1].get("device"))):
        print(describe(name, code, report), flush=True)
    if len(found) > expected:
        print(f"collector: note: more devices than ATLS_DEVICES={expected}", flush=True)
    if len(found) < expected:
        return TIMEOUT_EXIT
    code = aggregate(codes)
    print(f"collector: exit {code}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
