"""Turn a scenario's ``expect`` section and a run's observations into checks."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from .local_engine import Observations
from .scenario import Scenario


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    expected: str
    actual: str


def _state(step: dict[str, Any] | None) -> str:
    if step is None:
        return "not reached"
    return {True: "ok", False: "failed", None: "skipped"}[step.get("ok")]


def _summary(values: list[Any]) -> str:
    counts = Counter(str(v) for v in values)
    return ", ".join(f"{v} x{n}" if n > 1 else v for v, n in sorted(counts.items()))


def check(scenario: Scenario, obs: Observations) -> list[Check]:
    expect = scenario.expect
    devices = obs.devices
    checks: list[Check] = []

    def each(name: str, expected: Any, values: list[Any]) -> None:
        ok = len(values) == scenario.devices.count and all(v == expected for v in values)
        checks.append(
            Check(
                name,
                ok,
                f"{expected} on all {scenario.devices.count} devices",
                _summary(values) or "no devices reported",
            )
        )

    if "exit_code" in expect:
        each("device exit code", expect["exit_code"], [d.get("exit_code") for d in devices])
    if "result" in expect:
        each("device result", expect["result"], [d.get("result") for d in devices])
    if "installed" in expect:
        each("anchors installed", expect["installed"], [d.get("installed") for d in devices])
    if "handshake_attempts" in expect:
        each(
            "handshake attempts",
            expect["handshake_attempts"],
            [d.get("handshake_attempts") for d in devices],
        )
    for step, state in (expect.get("steps") or {}).items():
        each(
            f"step {step}",
            state,
            [
                _state(next((s for s in d.get("steps", []) if s["name"] == step), None))
                for d in devices
            ],
        )
    if "error_contains" in expect:
        needle = expect["error_contains"]
        each(
            f"error mentions {needle!r}", True, [needle in (d.get("error") or "") for d in devices]
        )
    audit = expect.get("audit") or {}
    if "min_flights" in audit:
        checks.append(
            Check(
                "audit lines",
                len(obs.audit) >= audit["min_flights"],
                f">= {audit['min_flights']}",
                str(len(obs.audit)),
            )
        )
    if "min_flights_per_device" in audit:  # scales with --devices
        want = audit["min_flights_per_device"] * scenario.devices.count
        checks.append(
            Check(
                "audit lines",
                len(obs.audit) >= want,
                f">= {want} ({audit['min_flights_per_device']} per device)",
                str(len(obs.audit)),
            )
        )
    for field, key in (("decision", "decisions"), ("variant", "variants")):
        seen = [a.get(field) for a in obs.audit]
        for wanted in audit.get(key, []):
            checks.append(
                Check(f"audit {field} {wanted}", wanted in seen, "present", _summary(seen))
            )
    for event, count in (expect.get("service_events") or {}).items():
        want = scenario.devices.count if count == "devices" else int(count)
        got = sum(1 for e in obs.events if e.get("event") == event)
        checks.append(Check(f"service event {event}", got == want, str(want), str(got)))
    if expect.get("service_healthy"):
        status = obs.health.get("status") if obs.health else "unreachable"
        checks.append(Check("service healthy", status == "ok", "ok", str(status)))
    return checks
