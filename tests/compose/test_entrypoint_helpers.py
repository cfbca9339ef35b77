"""The compose entrypoints' helpers, without Docker: address discovery, the collector,
and the engine's start-up progress line."""

from __future__ import annotations

import importlib.util
import ipaddress
import json
from pathlib import Path
from types import ModuleType

import pytest

from atls_scenarios.compose_engine import image_missing_message, stack_state

ENTRYPOINTS = Path(__file__).resolve().parents[2] / "compose" / "entrypoints"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ENTRYPOINTS / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


netinfo = _load("netinfo")
collect = _load("collect")

IP_JSON = json.dumps(
    [
        {"ifname": "lo", "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8}]},
        {
            "ifname": "eth0",
            "addr_info": [{"family": "inet", "local": "172.22.0.3", "prefixlen": 16}],
        },
        {
            "ifname": "eth1",
            "addr_info": [{"family": "inet", "local": "192.168.16.2", "prefixlen": 20}],
        },
    ]
)


def test_netinfo_finds_the_lan_and_its_last_host_address():
    interfaces = netinfo.local_networks(IP_JSON)
    lan = netinfo.lan_for("192.168.16.5", interfaces)
    assert lan == ipaddress.IPv4Network("192.168.16.0/20")
    assert str(netinfo.service_vip(lan)) == "192.168.31.254"
    assert str(netinfo.service_vip(netinfo.lan_for("172.22.0.2", interfaces))) == "172.22.255.254"
    with pytest.raises(LookupError):
        netinfo.lan_for("10.0.0.1", interfaces)


def _result(results: Path, name: str, code: int, device: str, result: str) -> None:
    (results / f"{name}.json").write_text(json.dumps({"device": device, "result": result}))
    (results / f"{name}.rc").write_text(f"{code}\n")


def test_collector_waits_for_all_and_exits_with_the_worst(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(collect, "RESULTS", tmp_path)
    monkeypatch.setenv("ATLS_DEVICES", "2")
    _result(tmp_path, "c1", 0, "device-0001", "bootstrapped")
    _result(tmp_path, "c2", 5, "device-0002", "failed")
    assert collect.main() == 5
    out = capsys.readouterr().out
    assert "2 device result(s), 1 exited 0" in out
    assert "device-0001  bootstrapped  exit 0" in out and "device-0002  failed" in out


def test_collector_times_out_when_a_device_never_reports(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(collect, "RESULTS", tmp_path)
    monkeypatch.setenv("ATLS_DEVICES", "2")
    monkeypatch.setenv("ATLS_COLLECT_TIMEOUT", "0.2")
    _result(tmp_path, "c1", 0, "device-0001", "bootstrapped")
    assert collect.main() == collect.TIMEOUT_EXIT
    assert "only 1 of 2 devices reported" in capsys.readouterr().out


def test_stack_state_says_what_is_waited_on():
    def c(service: str, state: str, status: str) -> dict:
        return {"Labels": {"com.docker.compose.service": service}, "State": state, "Status": status}

    line = stack_state(
        [
            c("pki", "running", "Up 3 seconds (healthy)"),
            c("middlebox", "running", "Up 1 second (health: starting)"),
            c("device", "created", "Created"),
            c("device", "created", "Created"),
        ]
    )
    assert line == "waiting on device x2 (created), middlebox (starting); ready: pki"


def test_missing_image_message_names_the_command():
    assert "'./testbed images build'" in image_missing_message("atls-testbed:latest")
    assert "./testbed images build --tag lab:1" in image_missing_message("lab:1")
