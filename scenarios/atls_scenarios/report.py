"""Scenario reports: a summary table, a JSON report and JUnit XML."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .expect import Check
from .local_engine import Observations
from .scenario import Scenario


def summary_table(scenario: Scenario, checks: list[Check]) -> str:
    width = max([len(c.name) for c in checks] + [10])
    lines = [
        f"{'check':<{width}}  {'':4}  {'expected':<36}  actual",
        f"{'-' * width}  ----  {'-' * 36}  {'-' * 30}",
    ]
    for c in checks:
        lines.append(
            f"{c.name:<{width}}  {'PASS' if c.ok else 'FAIL'}  {c.expected:<36}  {c.actual}"
        )
    passed = sum(c.ok for c in checks)
    lines.append(f"{scenario.name}: {passed} passed, {len(checks) - passed} failed")
    return "\n".join(lines)


def write_reports(
    run_dir: Path,
    scenario: Scenario,
    engine: str,
    obs: Observations,
    checks: list[Check],
    seconds: float,
) -> tuple[Path, Path]:
    report: dict[str, Any] = {
        "scenario": scenario.name,
        "description": scenario.description,
        "engine": engine,
        "seconds": round(seconds, 2),
        "ok": all(c.ok for c in checks),
        "checks": [asdict(c) for c in checks],
        "devices": obs.devices,
        "service_events": obs.events,
        "service_health": obs.health,
        "audit_lines": len(obs.audit),
        "notes": obs.notes,
    }
    json_path = run_dir / "report.json"
    json_path.write_text(json.dumps(report, indent=2, default=str))
    suite = ET.Element(
        "testsuite",
        name=f"atls-scenario.{scenario.name}",
        tests=str(len(checks)),
        failures=str(sum(not c.ok for c in checks)),
        time=f"{seconds:.2f}",
    )
    for c in checks:
        case = ET.SubElement(suite, "testcase", classname=f"{scenario.name}.{engine}", name=c.name)
        if not c.ok:
            failure = ET.SubElement(
                case, "failure", message=f"expected {c.expected}, got {c.actual}"
            )
            failure.text = f"expected: {c.expected}\nactual: {c.actual}"
    junit_path = run_dir / "junit.xml"
    ET.ElementTree(suite).write(junit_path, encoding="utf-8", xml_declaration=True)
    return json_path, junit_path
