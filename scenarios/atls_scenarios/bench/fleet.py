"""Bootstrap latency against fleet size: the many-devices scenario at a few sizes (local engine)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..runner import run_scenario
from ..scenario import find_scenario


def measure(root: Path, quick: bool) -> dict[str, object]:
    """Per fleet size: every device's total bootstrap time (seconds) and the success count."""
    sizes = [1, 5] if quick else [1, 10, 50]
    base = find_scenario("many-devices")
    out: dict[str, object] = {}
    for size in sizes:
        scenario = replace(base, devices=replace(base.devices, count=size))
        result = run_scenario(scenario, root / f"fleet-{size}", "local", say=lambda _: None)
        devices = result.observations.devices
        totals = [sum(step.get("ms", 0) for step in d.get("steps", [])) / 1000 for d in devices]
        out[str(size)] = {
            "devices": size,
            "ok": sum(1 for d in devices if d.get("exit_code") == 0),
            "bootstrap_s": totals,
        }
    return out
