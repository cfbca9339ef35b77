"""Fleets: which devices run under Locust, the scaled audit expectation, the summary."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from atls_scenarios.expect import check
from atls_scenarios.fleet import PROCESS_LIMIT, percentile, run_time_limit, summarize, uses_locust
from atls_scenarios.local_engine import Observations
from atls_scenarios.scenario import Devices, ScenarioError, find_scenario, load_scenario


def test_small_scenarios_keep_processes_and_large_ones_use_locust():
    assert not uses_locust(Devices(count=PROCESS_LIMIT))
    assert uses_locust(Devices(count=PROCESS_LIMIT + 1))
    assert uses_locust(Devices(count=2, engine="locust"))
    assert not uses_locust(Devices(count=5000, engine="process"))


def test_the_fleet_is_bounded_in_time():
    small, large = run_time_limit(Devices(count=10)), run_time_limit(Devices(count=1000))
    assert 0 < small < large


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("name: x\ndevices: {engine: threads}\n", "devices.engine is auto, process or locust"),
        ("name: x\ndevices: {spawn_rate: -1}\n", "devices.spawn_rate must be a number >= 0"),
        (
            "name: x\nexpect: {audit: {min_flights_per_device: many}}\n",
            "min_flights_per_device must be a whole number",
        ),
    ],
)
def test_fleet_settings_are_checked(tmp_path: Path, text: str, problem: str):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError, match=problem):
        load_scenario(path)


def test_the_audit_expectation_scales_with_devices():
    """many-devices names flights per device, so --devices 1000 wants 10,000 lines."""
    scenario = find_scenario("many-devices").with_devices(1000)
    obs = Observations(audit=[{"decision": "allow"}] * 9999)
    (audit,) = [c for c in check(scenario, obs) if c.name == "audit lines"]
    assert not audit.ok and audit.expected.startswith(">= 10000")
    obs.audit.append({"decision": "allow"})
    (audit,) = [c for c in check(scenario, obs) if c.name == "audit lines"]
    assert audit.ok


def test_percentiles_are_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99
    assert percentile([], 50) == 0.0 and percentile([7.0], 99) == 7.0


def test_summary_counts_successes_and_steps(tmp_path: Path):
    reports = tmp_path / "devices"
    reports.mkdir()
    for i, code in enumerate([0, 0, 4]):
        steps = [{"name": "atls", "ok": code == 0, "ms": 100.0 * (i + 1), "detail": ""}]
        data = {"exit_code": code, "steps": steps, "fleet": {"total_ms": 1000.0 * (i + 1)}}
        (reports / f"device-{i}.json").write_text(json.dumps(data))
    summary = summarize(tmp_path, 3, 2.0)
    assert summary["succeeded"] == 2 and summary["success_rate"] == round(2 / 3, 4)
    assert summary["steps"]["atls"]["n"] == 2 and summary["bootstrap_p99_ms"] == 3000.0
    assert json.loads((tmp_path / "fleet" / "summary.json").read_text()) == summary


def test_scenario_devices_engine_survives_with_devices():
    scenario = find_scenario("many-devices")
    assert replace(scenario.devices, count=1000) == scenario.with_devices(1000).devices


def test_replica_urls_name_every_address_once():
    from atls_scenarios.operator import replica_urls

    assert replica_urls("localhost") == ["https://127.0.0.1:8443"]
