"""A Locust fleet of in-process devices through the real middlebox, checked like any scenario.

Timing is reported, never asserted. The 1,000-device run is ``ATLS_FLEET_DEVICES=1000``
(or ``./testbed run many-devices --devices 1000``).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os

import pytest

from atls_scenarios.runner import run_scenario
from atls_scenarios.scenario import find_scenario

# Never import locust here: it monkey-patches the whole test process with gevent.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        importlib.util.find_spec("locust") is None,
        reason="fleets need Locust: pip install -e '.[fleet]'",
    ),
]

DEVICES = int(os.environ.get("ATLS_FLEET_DEVICES", "60"))


def test_a_locust_fleet_passes_the_many_devices_expectations(tmp_path):
    scenario = find_scenario("many-devices").with_devices(DEVICES)
    lines: list[str] = []
    result = run_scenario(scenario, tmp_path, "local", say=lines.append)
    failed = [c for c in result.checks if not c.ok]
    assert result.ok, "\n".join(lines[-40:]) + f"\nfailed: {failed}"
    run_dir = result.report_json.parent
    fleet = run_dir / "fleet"
    assert any("under Locust" in line for line in lines), "the fleet path ran, not processes"
    # one real report per device, written by the in-process bootstrap
    assert len(list((run_dir / "devices").glob("device-*.json"))) == DEVICES
    assert all(d["steps"] and d["installed"] for d in result.observations.devices)
    # Locust's statistics and HTML report are in the run folder
    rows = {(r["Type"], r["Name"]): r for r in csv.DictReader((fleet / "locust_stats.csv").open())}
    whole = rows[("device", "bootstrap")]
    assert int(whole["Request Count"]) == DEVICES and int(whole["Failure Count"]) == 0
    assert int(rows[("step", "atls")]["Request Count"]) == DEVICES
    assert "<html" in (fleet / "locust-report.html").read_text().lower()
    summary = json.loads((fleet / "summary.json").read_text())
    assert summary["succeeded"] == DEVICES and summary["success_rate"] == 1.0
    assert any(note.startswith("fleet: ") for note in result.observations.notes)
    # every device its own trust store
    assert len(list((run_dir / "stores").iterdir())) == DEVICES
