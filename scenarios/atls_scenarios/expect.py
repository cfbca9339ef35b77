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
    if expect.get("canary_unseen"):
        hits = obs.canary_hits
        checks.append(
            Check(
                "gateway and middleboxes saw no plaintext",
                bool(obs.canary) and not hits and bool(obs.canary_searched),
                f"canary in none of {len(obs.canary_searched)} logged/stored files",
                ", ".join(hits) if hits else f"absent ({obs.canary or 'no canary'})",
            )
        )
    if "canary_delivered" in expect:
        want = expect["canary_delivered"]
        want = scenario.devices.count * scenario.devices.readings if want == "readings" else want
        got = sum(
            1
            for e in obs.events
            if e.get("event") == "oscore-reading" and e.get("canary") == obs.canary
        )
        checks.append(
            Check("readings with the canary reached the service", got == want, str(want), str(got))
        )
    if expect.get("replay_refused"):
        each(
            "replayed reading refused",
            True,
            [str(d.get("replay_code", "")).startswith("4.") for d in devices],
        )
    coap = expect.get("coap_audit") or {}
    if "min_lines" in coap:
        checks.append(
            Check(
                "CoAP middlebox audit lines",
                len(obs.coap_audit) >= coap["min_lines"],
                f">= {coap['min_lines']}",
                str(len(obs.coap_audit)),
            )
        )
    for key, field_name in (("decisions", "decision"), ("kinds", "kind")):
        seen = [a.get(field_name) for a in obs.coap_audit]
        for wanted in coap.get(key, []):
            checks.append(
                Check(
                    f"CoAP audit {field_name} {wanted}", wanted in seen, "present", _summary(seen)
                )
            )
    if "exit_codes" in expect:
        allowed = set(expect["exit_codes"])
        codes = [d.get("exit_code") for d in devices]
        checks.append(
            Check(
                "device exit codes documented",
                len(codes) == scenario.devices.count and all(c in allowed for c in codes),
                f"each of {sorted(allowed)}",
                _summary(codes) or "no devices reported",
            )
        )
    if expect.get("store_baseline"):
        store = obs.store_after or {}
        empty = store.get("handshakes") == 0 and store.get("sessions") == 0
        checks.append(
            Check(
                "session store back to empty after the TTLs",
                empty,
                "0 handshakes, 0 sessions",
                f"{store.get('handshakes')} handshakes, {store.get('sessions')} sessions",
            )
        )
    if "memory_growth_mb" in expect:
        limit = float(expect["memory_growth_mb"])
        before, after = obs.rss_baseline_kb, obs.rss_after_kb
        grown = (after - before) / 1024 if before is not None and after is not None else None
        checks.append(
            Check(
                "service memory back near its baseline",
                grown is not None and grown <= limit,
                f"<= {limit:g} MB over {before and before // 1024} MB",
                "unmeasured" if grown is None else f"{grown:+.1f} MB",
            )
        )
    if expect.get("service_healthy"):
        status = obs.health.get("status") if obs.health else "unreachable"
        checks.append(Check("service healthy", status == "ok", "ok", str(status)))
    return checks
