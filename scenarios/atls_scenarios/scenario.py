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
devices: {count: 1, variant: current, mode: export, retries: 2, parallel: 8,
          engine: auto, spawn_rate: 0}   # engine: auto | process | locust
expect:
  exit_code: 0             # every device's exit code
  result: bootstrapped     # bootstrapped | not-needed | failed
  installed: true          # anchors installed (or not)
  steps: {probe: failed, atls: ok, voucher: ok}    # ok | failed | skipped
  handshake_attempts: 1
  error_contains: "..."
  audit: {min_flights: 6, decisions: [allow], variants: [current]}
  # or per device, so it scales with --devices: audit: {min_flights_per_device: 10}
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

from atls.config import PROFILES
from atls_client.bootstrap import STEPS
from atls_policy.policy import VARIANTS, PolicyError, parse_policy

STEP_STATES = ("ok", "failed", "skipped")
# Applied after the operator step, before any device starts (both engines).
FAULTS = ("restart-middlebox", "middlebox-unreachable")
# Applied while the devices run (local engine): ``{type, after: s, for: s}``.
LOAD_FAULTS = ("restart-service", "cut-service")
SERVICE_OPTIONS = {"handshake_ttl", "idle_ttl", "max_handshakes_per_client", "max_handshakes"}
RESULTS = ("bootstrapped", "not-needed", "failed", "readings-sent", "established")


class ScenarioError(ValueError):
    """A scenario file is invalid or cannot be found."""


@dataclass(frozen=True)
class Topology:
    middlebox: bool = True
    forward_proxy: bool = False
    register_domain: bool = True
    claim_devices: bool = True
    # constrained: devices speak CoAP to atls-gateway, which forwards over HTTP
    gateway: bool = False
    udp_middlebox: bool = False  # mitmdump UDP mode + the CoAP addon in front of the gateway


@dataclass(frozen=True)
class Devices:
    count: int = 1
    variant: str = "current"
    mode: str = "export"
    retries: int = 2
    parallel: int = 8
    timeout: float = 10.0
    tls_version: str | None = None  # "1.2" or "1.3": offer only that; default both
    dtls: bool = False  # the ATLS session runs DTLS 1.2 (records in the HTTP bodies)
    profile: str = "default"  # TLS profile (atls.config.PROFILES), e.g. constrained
    readings: int = 3  # CoAP devices: OSCORE readings after the handshake
    # process: one atls-device process each; locust: in-process under Locust (atls_scenarios.fleet);
    # auto: locust above fleet.PROCESS_LIMIT devices (so --devices 1000 scales the same file).
    engine: str = "auto"
    spawn_rate: float = 0.0  # Locust devices started per second; 0: min(count, 50)


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


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_devices(source: str, devices: Devices) -> None:
    """Types the YAML could get wrong (``retries: two``), named by place."""
    if not _whole(devices.retries) or devices.retries < 0:
        raise ScenarioError(f"{source}: devices.retries must be a whole number >= 0")
    if not _whole(devices.parallel) or devices.parallel < 1:
        raise ScenarioError(f"{source}: devices.parallel must be a positive whole number")
    if devices.tls_version not in (None, "1.2", "1.3"):
        raise ScenarioError(f"{source}: devices.tls_version is 1.2 or 1.3")
    if devices.engine not in ("auto", "process", "locust"):
        raise ScenarioError(f"{source}: devices.engine is auto, process or locust")
    rate = devices.spawn_rate
    if isinstance(rate, bool) or not isinstance(rate, int | float) or rate < 0:
        raise ScenarioError(f"{source}: devices.spawn_rate must be a number >= 0")
    timeout = devices.timeout
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ScenarioError(f"{source}: devices.timeout must be a number of seconds > 0")


# What the expectations can name (see expect.py); checked so a typo fails at load.
COAP_STEPS = ("handshake", "oscore", "readings", "replay")  # atls-device coap's report
AUDIT_DECISIONS = ("allow", "block", "fault")
AUDIT_VARIANTS = VARIANTS  # the audit lines use the policy's names


def _check_expect(source: str, expect: dict[str, Any]) -> None:
    where = f"{source}: expect"
    if "exit_code" in expect and not _whole(expect["exit_code"]):
        raise ScenarioError(f"{where}.exit_code must be a whole number (an atls-device exit code)")
    for key in ("installed", "service_healthy"):
        if key in expect and not isinstance(expect[key], bool):
            raise ScenarioError(f"{where}.{key} must be true or false")
    attempts = expect.get("handshake_attempts", 0)
    if not _whole(attempts) or attempts < 0:
        raise ScenarioError(f"{where}.handshake_attempts must be a whole number >= 0")
    if "error_contains" in expect and not isinstance(expect["error_contains"], str):
        raise ScenarioError(f"{where}.error_contains must be text")
    steps = _section(f"{where}.steps", expect.get("steps"), set(STEPS) | set(COAP_STEPS))
    for step, state in steps.items():
        if state not in STEP_STATES:
            raise ScenarioError(f"{where}.steps.{step} is one of {', '.join(STEP_STATES)}")
    audit = _section(
        f"{where}.audit",
        expect.get("audit"),
        {"min_flights", "min_flights_per_device", "decisions", "variants"},
    )
    for key in ("min_flights", "min_flights_per_device"):
        if key in audit and (not _whole(audit[key]) or audit[key] < 0):
            raise ScenarioError(f"{where}.audit.{key} must be a whole number >= 0")
    for key, allowed in (("decisions", AUDIT_DECISIONS), ("variants", AUDIT_VARIANTS)):
        values = audit.get(key, [])
        if not isinstance(values, list):
            raise ScenarioError(f"{where}.audit.{key} must be a list")
        for i, value in enumerate(values):
            if value not in allowed:
                raise ScenarioError(
                    f"{where}.audit.{key}[{i}]: {value!r} is not one of {', '.join(allowed)}"
                )
    events = expect.get("service_events") or {}
    if not isinstance(events, dict):
        raise ScenarioError(f"{where}.service_events must be a mapping of event to count")
    for event, count in events.items():
        if count != "devices" and (not _whole(count) or count < 0):
            raise ScenarioError(
                f'{where}.service_events.{event}: {count!r} is not a count or "devices"'
            )


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
    if isinstance(dev.get("tls_version"), float):  # YAML reads 1.2 as a number
        dev = {**dev, "tls_version": str(dev["tls_version"])}
    devices = Devices(**dev)
    if not isinstance(devices.count, int) or devices.count < 1:
        raise ScenarioError(f"{source}: devices.count must be a positive whole number")
    if devices.variant not in ("current", "draft-00"):
        raise ScenarioError(f"{source}: devices.variant is 'current' or 'draft-00'")
    if devices.mode not in ("export", "records"):
        raise ScenarioError(f"{source}: devices.mode is 'export' or 'records'")
    _check_devices(source, devices)
    if not isinstance(devices.dtls, bool):
        raise ScenarioError(f"{source}: devices.dtls must be true or false")
    if devices.profile not in PROFILES:
        raise ScenarioError(f"{source}: devices.profile is one of {', '.join(PROFILES)}")
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
            "canary_unseen",
            "canary_delivered",
            "replay_refused",
            "coap_audit",
            "exit_codes",
            "store_baseline",
            "memory_growth_mb",
        },
    )
    _check_expect(source, expect)
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
        if isinstance(fault, str):
            if fault not in FAULTS:
                raise ScenarioError(
                    f"{source}: faults is a list of {', '.join(FAULTS)} or mappings with "
                    f"type: {' or '.join(LOAD_FAULTS)}; faults[{n}] is {fault!r}"
                )
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
    if topology.udp_middlebox and not topology.gateway:
        raise ScenarioError(f"{source}: udp_middlebox sits in front of the gateway: set gateway")
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
