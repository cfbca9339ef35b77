"""Run a scenario on an engine, check its expectations, and report."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .expect import Check, check
from .local_engine import LocalEngine, Observations
from .report import summary_table, write_reports
from .report_html import write_html_report
from .scenario import Scenario

ENGINES = ("local", "compose")


@dataclass
class RunResult:
    scenario: Scenario
    checks: list[Check]
    observations: Observations
    report_json: Path
    junit_xml: Path
    report_html: Path | None = None

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)


def run_scenario(
    scenario: Scenario,
    report_root: Path,
    engine: str = "local",
    say: Callable[[str], None] = print,
    middlebox_mode: str = "explicit",
) -> RunResult:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    label = engine if middlebox_mode == "explicit" else f"{engine}-{middlebox_mode}"
    run_dir = report_root / f"{scenario.name}-{label}-{stamp}"
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = report_root / f"{scenario.name}-{label}-{stamp}-{suffix}"
    run_dir.mkdir(parents=True)
    say(
        f"[runner] scenario {scenario.name} ({scenario.devices.count} devices, engine {engine}): "
        f"{scenario.description}"
    )
    started = time.monotonic()
    if engine == "local":
        if middlebox_mode != "explicit":
            raise ValueError(
                "the local engine runs the middlebox in explicit proxy mode only; "
                "transparent interception needs --engine compose"
            )
        observations = LocalEngine(scenario, run_dir, say).run()
    elif engine == "compose":
        from .compose_engine import ComposeEngine

        observations = ComposeEngine(scenario, run_dir, say, middlebox_mode).run()
    else:
        raise ValueError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
    checks = check(scenario, observations)
    seconds = time.monotonic() - started
    json_path, junit_path = write_reports(run_dir, scenario, engine, observations, checks, seconds)
    html_path = write_html_report(run_dir, scenario, engine, observations, checks, seconds)
    say(summary_table(scenario, checks))
    say(f"[runner] report {json_path}, JUnit {junit_path}")
    say(f"[runner] open {html_path} (checks, middlebox decisions, timeline picture)")
    return RunResult(scenario, checks, observations, json_path, junit_path, html_path)
