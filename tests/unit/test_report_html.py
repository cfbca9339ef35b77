"""report.html and its picture, from synthetic observations (no processes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from atls_scenarios.expect import Check
from atls_scenarios.local_engine import Observations
from atls_scenarios.report_html import TIMELINE_MAX_DEVICES, write_html_report
from atls_scenarios.scenario import find_scenario

PNG = b"\x89PNG\r\n\x1a\n"


def device(serial: str, *, atls_ok: bool = True, ms: float = 20.0) -> dict:
    steps = [
        {"name": "probe", "ok": False, "ms": 50.0, "detail": "does not validate"},
        {
            "name": "atls",
            "ok": atls_ok,
            "ms": ms,
            "detail": "bad_record_mac" if not atls_ok else "",
        },
    ]
    if atls_ok:
        steps += [{"name": n, "ok": True, "ms": 5.0, "detail": ""} for n in ("voucher", "install")]
    else:
        steps.append({"name": "voucher", "ok": None, "ms": 0.0, "detail": "skipped"})
    return {
        "device": serial,
        "result": "bootstrapped" if atls_ok else "failed",
        "exit_code": 0 if atls_ok else 4,
        "handshake_attempts": 1 if atls_ok else 3,
        "steps": steps,
        "error": None if atls_ok else "TLS alert bad_record_mac <from the service>",
    }


AUDIT = [
    {
        "client": "127.0.0.1:1",
        "direction": "request",
        "flight": 1,
        "variant": "labelled",
        "rule": "flip",
        "decision": "fault",
        "fault": "bitflip",
        "summary": {"bytes": 1530, "handshake": ["client_hello"]},
    },
    {
        "client": "127.0.0.1:1",
        "direction": "response",
        "flight": 1,
        "variant": "labelled",
        "rule": "default",
        "decision": "allow",
        "fault": None,
        "summary": {"bytes": 2400},
    },
]


def write(tmp_path: Path, devices: list[dict], checks: list[Check]) -> str:
    obs = Observations(devices=devices, audit=AUDIT, notes=["a note"])
    page = write_html_report(tmp_path, find_scenario("tamper"), "local", obs, checks, 2.5)
    assert page == tmp_path / "report.html"
    assert (tmp_path / "timeline.png").read_bytes().startswith(PNG)
    return page.read_text()


def test_a_failed_run_shows_checks_decisions_devices_and_a_timeline(tmp_path):
    checks = [
        Check("device exit code", False, "0 on all 2 devices", "0, 4"),
        Check("service healthy", True, "ok", "ok"),
    ]
    text = write(tmp_path, [device("device-0001"), device("device-<2>", atls_ok=False)], checks)
    assert "FAILED: 1 of 2 checks" in text
    assert '<tr class="fail"><td>device exit code</td><td>FAIL</td>' in text
    assert "<td>fault</td><td>flip</td><td>labelled</td><td>request</td><td>1</td>" in text
    assert "1530 B, client_hello" in text
    assert "device-&lt;2&gt;" in text and "&lt;from the service&gt;" in text  # escaped
    assert "<td>probe, atls</td>" in text  # the failed steps per device
    assert "timeline of every device" in text
    assert "a note" in text


def test_many_devices_get_histograms(tmp_path):
    devices = [device(f"d{i}", atls_ok=i % 7 != 0, ms=10.0 + i) for i in range(40)]
    assert len(devices) > TIMELINE_MAX_DEVICES
    text = write(tmp_path, devices, [Check("x", True, "1", "1")])
    assert "latency histograms of all devices" in text
    assert "PASSED: 1 of 1 checks" in text


@pytest.mark.parametrize("count", [0, 1])
def test_degenerate_runs_still_get_a_page(tmp_path, count):
    text = write(tmp_path, [device("d")] * count, [])
    assert "<h2>Timeline</h2>" in text
