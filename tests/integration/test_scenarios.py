"""Every scenario's expectations, on the local engine (real processes on loopback)."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from atls_scenarios.runner import run_scenario
from atls_scenarios.scenario import ScenarioError, available, find_scenario, load_scenario

pytestmark = pytest.mark.integration

NAMES = [s.name for s in available()]
REQUIRED = {
    "bootstrap",
    "atls-blocked",
    "tamper",
    "no-middlebox",
    "legacy-draft00",
    "http-proxy",
    "many-devices",
}


def test_the_required_scenarios_exist():
    assert REQUIRED <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_scenario_expectations_hold(name, tmp_path):
    lines: list[str] = []
    result = run_scenario(find_scenario(name), tmp_path, "local", say=lines.append)
    failed = [c for c in result.checks if not c.ok]
    assert result.ok, "\n".join(lines[-40:]) + f"\nfailed: {failed}"
    report = json.loads(result.report_json.read_text())
    assert report["ok"] is True and report["scenario"] == name
    assert len(report["devices"]) == result.scenario.devices.count
    suite = ET.parse(result.junit_xml).getroot()
    assert suite.get("failures") == "0"
    assert len(suite.findall("testcase")) == len(result.checks) > 0
    assert any("[runner] devices" in line for line in lines), "progress is shown"
    assert result.report_html and result.report_html.name == "report.html"
    page = result.report_html.read_text()
    assert "PASSED" in page and "Middlebox decisions" in page
    assert 'src="data:image/png;base64,' in page
    many = result.scenario.devices.count > 12
    assert ("latency histograms" if many else "timeline of every device") in page
    assert (result.report_html.parent / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any(str(result.report_html) in line for line in lines), "the runner prints the path"


def test_a_failed_expectation_fails_the_run(tmp_path):
    source = find_scenario("no-middlebox").source
    text = open(source).read().replace("exit_code: 0", "exit_code: 3")
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(text)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "atls_scenarios.cli",
            "run",
            str(wrong),
            "--report-dir",
            str(tmp_path / "reports"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL  3 on all 1 devices" in done.stdout
    junit = next((tmp_path / "reports").glob("*/junit.xml"))
    assert ET.parse(junit).getroot().get("failures") == "1"
    page = (junit.parent / "report.html").read_text()
    assert "FAILED" in page and '<tr class="fail"><td>device exit code</td>' in page
    assert "report.html" in done.stdout


def test_invalid_scenario_files_are_refused_clearly(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndevices: {count: 0}\n")
    with pytest.raises(ScenarioError, match="devices.count must be a positive"):
        load_scenario(bad)
    bad.write_text("name: x\npolicy: {rules: [{id: a, action: nope}]}\n")
    with pytest.raises(ScenarioError, match="rules\\[0\\].action"):
        load_scenario(bad)
    done = subprocess.run(
        [sys.executable, "-m", "atls_scenarios.cli", "run", "no-such"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "known: " in done.stderr


def test_list_shows_every_scenario():
    done = subprocess.run(
        [sys.executable, "-m", "atls_scenarios.cli", "list"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    for name in NAMES:
        assert name in done.stdout
