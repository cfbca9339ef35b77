"""The example experiments users copy from (scenarios/examples/) run and hold."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from atls_scenarios.runner import run_scenario
from atls_scenarios.scenario import load_scenario

pytestmark = pytest.mark.integration

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "scenarios" / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_experiment_holds(path: Path, tmp_path: Path):
    lines: list[str] = []
    result = run_scenario(load_scenario(path), tmp_path, "local", say=lines.append)
    assert result.ok, "\n".join(lines[-40:])
    if path.stem == "slow-server-first-flight":  # the delay really forced a retry
        assert [d["handshake_attempts"] for d in result.observations.devices] == [2]
    if path.stem == "audit-and-mark":  # every flight audited, hellos marked
        audit = result.observations.audit
        assert all("watch-everything" in line["audit"] for line in audit)


def test_the_tls12_block_lets_devices_offering_13_through(tmp_path: Path):
    """Same policy as block-tls12-only, devices offering 1.3 and 1.2: they bootstrap."""
    blocked = load_scenario(EXAMPLES[0].with_name("block-tls12-only.yaml"))
    modern = replace(
        blocked,
        devices=replace(blocked.devices, tls_version=None),
        expect={"exit_code": 0, "result": "bootstrapped", "audit": {"decisions": ["allow"]}},
    )
    lines: list[str] = []
    result = run_scenario(modern, tmp_path, "local", say=lines.append)
    assert result.ok, "\n".join(lines[-40:])
    assert {a["rule"] for a in result.observations.audit} == {"modern-ok"}
