"""Scenario files: topology, middlebox policy, devices, and expected outcomes.

```yaml
name: bootstrap
description: one line for `atls-testbed list`
topology:
  middlebox: true          # mitmdump + the ATLS policy addon between devices and service
  forward_proxy: false     # a plain CONNECT proxy in front of the middlebox (draft 9.8)
  register_domain: true    # the operator registers the middlebox CA as the domain CA
  claim_devices: true      # ... and claims the device serials for that domain
policy: {default: allow}   # the addon's policy (see atls_policy.policy)
devices: {count: 1, variant: current, mode: export, retries: 2, parallel: 8}
expect:
  exit_code: 0             # every device's exit code
  result: bootstrapped     # bootstrapped | not-needed | failed
  installed: true          # anchors installed (or not)
  steps: {probe: failed, atls: ok, voucher: ok}    # ok | failed | skipped
  handshake_attempts: 1
  error_contains: "..."
  audit: {min_flights: 6, decisions: [allow], variants: [current]}
  service_events: {voucher-issued: devices}        # a count, or "devices"
  service_healthy: true
```
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from atls_policy.policy import PolicyError, parse_policy

STEP_STATES = ("ok", "failed", "skipped")
# Applied after the operator step, before any device starts (both engines).
FAULTS = ("restart-middlebox", "middlebox-unreachable")
# Applied while the devices run (local engine): ``{type, after: s, for: s}``.
LOAD_FAULTS = ("restart-service", "cut-service")
SERVICE_OPTIONS = {"handshake_ttl", "idle_ttl", "max_handshakes_per_client", "max_handshakes"}
RESULTS = ("bootstrapped", "not-needed", "failed")


class ScenarioError(ValueError):
    """A scenario file is invalid or cannot be found."""


@dataclass(frozen=True)
class Topology:
    middlebox: bool = True
    forward_proxy: bool = False
    register_domain: bool = True
    claim_devices: bool = True


@dataclass(frozen=True)
class Devices:
    count: int = 1
    variant: str = "current"
    mode: str = "export"
    retries: int = 2
    parallel: int = 8
    timeout: float = 10.0


@dataclass(frozen=True)
class LoadFault:
    """A fault while the devices run: ``after`` seconds in, lasting ``duration``."""

    type: str
    after: float = 1.0
    duration: float = 2.0


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    topology: Topology
    policy_text: str
    devices: Devices
    expect: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    faults: tuple[str, ...] = ()
    load_faults: tuple[LoadFault, ...] = ()
    service_args: tuple[str, ...] = ()

    def with_devices(self, count: int) -> Scenario:
        return replace(self, devices=replace(self.devices, count=count))


def definitions_dir() -> Path:
    return Path(str(resources.files("atls_scenarios") / "definitions"))


def available() -> list[Scenario]:
    return [load_scenario(p) for p in sorted(definitions_dir().glob("*.yaml"))]


def search_dirs() -> list[Path]:
    """``$ATLS_SCENARIO_DIR`` (compose mounts the run's scenarios there), then the shipped ones."""
    extra = os.environ.get("ATLS_SCENARIO_DIR")
    return ([Path(extra)] if extra else []) + [definitions_dir()]


def find_scenario(name_or_path: str) -> Scenario:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return load_scenario(path)
    for directory in search_dirs():
        candidate = directory / f"{name_or_path}.yaml"
        if candidate.exists():
            return load_scenario(candidate)
    names = ", ".join(s.name for s in available())
    raise ScenarioError(f"no scenario {name_or_path!r}; known: {names}")


def _section(where: str, raw: Any, allowed: set[str]) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: must be a mapping")
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ScenarioError(
            f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})"
        )
    return raw


def load_scenario(path: Path) -> Scenario:
    source = str(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ScenarioError(f"{source}: {exc}") from None
    data = _section(
        source,
        data,
        {"name", "description", "topology", "policy", "devices", "expect", "faults", "service"},
    )
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise ScenarioError(f"{source}: name is required")
    topo = _section(f"{source}: topology", data.get("topology"), set(Topology.__dataclass_fields__))
    for key, value in topo.items():
        if not isinstance(value, bool):
            raise ScenarioError(f"{source}: topology.{key} must be true or false")
    dev = _section(f"{source}: devices", data.get("devices"), set(Devices.__dataclass_fields__))
    devices = Devices(**dev)
    if not isinstance(devices.count, int) or devices.count < 1:
        raise ScenarioError(f"{source}: devices.count must be a positive whole number")
    if devices.variant not in ("current", "draft-00"):
        raise ScenarioError(f"{source}: devices.variant is 'current' or 'draft-00'")
    if devices.mode not in ("export", "records"):
        raise ScenarioError(f"{source}: devices.mode is 'export' or 'records'")
    policy_text = yaml.safe_dump(data.get("policy") or {"default": "allow"})
    try:
        parse_policy(policy_text, f"{source}: policy")
    except PolicyError as exc:
        raise ScenarioError(str(exc)) from None
    expect = _section(
        f"{source}: expect",
        data.get("expect"),
        {
            "exit_code",
            "result",
            "installed",
            "steps",
            "handshake_attempts",
            "error_contains",
            "audit",
            "service_events",
            "service_healthy",
            "exit_codes",
            "store_baseline",
            "memory_growth_mb",
        },
    )
    for step, state in (expect.get("steps") or {}).items():
        if state not in STEP_STATES:
            raise ScenarioError(f"{source}: expect.steps.{step} is one of {STEP_STATES}")
    if "result" in expect and expect["result"] not in RESULTS:
        raise ScenarioError(f"{source}: expect.result is one of {RESULTS}")
    raw_faults = data.get("faults") or []
    if not isinstance(raw_faults, list):
        raise ScenarioError(f"{source}: faults is a list")
    faults, load_faults = [], []
    for n, fault in enumerate(raw_faults):
        if isinstance(fault, str) and fault in FAULTS:
            faults.append(fault)
            continue
        spec = _section(f"{source}: faults[{n}]", fault, {"type", "after", "for"})
        if spec.get("type") not in LOAD_FAULTS:
            raise ScenarioError(
                f"{source}: faults[{n}] is one of {', '.join(FAULTS)} or a mapping with "
                f"type: {' or '.join(LOAD_FAULTS)}"
            )
        for key in ("after", "for"):
            value = spec.get(key, 1.0)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0 <= value <= 60
            ):
                raise ScenarioError(f"{source}: faults[{n}].{key} is seconds (0 to 60)")
        load_faults.append(
            LoadFault(spec["type"], float(spec.get("after", 1.0)), float(spec.get("for", 2.0)))
        )
    service = _section(f"{source}: service", data.get("service"), SERVICE_OPTIONS)
    service_args: list[str] = []
    for key, value in service.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ScenarioError(f"{source}: service.{key} must be a positive number")
        service_args += [f"--{key.replace('_', '-')}", str(value)]
    codes = expect.get("exit_codes")
    if codes is not None and (
        not isinstance(codes, list) or not all(isinstance(c, int) for c in codes)
    ):
        raise ScenarioError(f"{source}: expect.exit_codes is a list of exit codes")
    topology = Topology(**topo)
    if faults and not topology.middlebox:
        raise ScenarioError(f"{source}: faults act on the middlebox; this topology has none")
    return Scenario(
        name,
        str(data.get("description", "")),
        topology,
        policy_text,
        devices,
        expect,
        source,
        tuple(faults),
        tuple(load_faults),
        tuple(service_args),
    )
