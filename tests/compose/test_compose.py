"""Scenarios under Docker Compose: the same expectations as the local engine.

Locally these skip, with the reason, when Docker (engine, compose CLI, image)
is not available. CI sets ATLS_REQUIRE_DOCKER=1: then a missing engine fails.
Build the image first: ./testbed images build --offline (or without --offline).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from atls_scenarios.compose_engine import (
    EngineUnavailable,
    compose_cli,
    default_image,
    docker_client,
    image_missing_message,
)
from atls_scenarios.images import repo_root
from atls_scenarios.runner import RunResult, run_scenario
from atls_scenarios.scenario import find_scenario

pytestmark = pytest.mark.compose
REQUIRED = os.environ.get("ATLS_REQUIRE_DOCKER") == "1"


@pytest.fixture(scope="module")
def docker_ready() -> None:
    try:
        client = docker_client()
        compose_cli()
    except EngineUnavailable as exc:
        if REQUIRED:
            pytest.fail(f"Docker is required here (ATLS_REQUIRE_DOCKER=1): {exc}")
        pytest.skip(f"Docker not available: {exc}")
    try:
        client.images.get(default_image())
    except Exception:  # noqa: BLE001 - docker.errors.ImageNotFound
        message = image_missing_message(default_image())
        if REQUIRED:
            pytest.fail(message)
        pytest.skip(message)


def _project(result: RunResult) -> str:
    note = next(n for n in result.observations.notes if n.startswith("compose project "))
    return note.split()[2].rstrip(",")


def _leftovers(project: str) -> list[str]:
    """Containers, networks and volumes of a compose project still present."""
    client = docker_client()
    label = {"label": f"com.docker.compose.project={project}"}
    return (
        [c.name for c in client.containers.list(all=True, filters=label)]
        + [n.name for n in client.networks.list(filters=label)]
        + [v.name for v in client.volumes.list(filters=label)]
    )


@pytest.mark.parametrize(
    ("name", "mode"),
    [
        ("bootstrap", "transparent"),
        ("tamper", "explicit"),
        ("middlebox-restart", "explicit"),
        ("middlebox-unreachable", "explicit"),
        ("constrained", "explicit"),
        ("constrained-coap-blocked", "explicit"),
        ("attack-downgrade", "transparent"),
        ("attack-swap-cookies", "explicit"),
        ("fault-service-restart", "explicit"),
        ("fault-network-cut", "explicit"),
    ],
    ids=[
        "bootstrap-transparent",
        "tamper",
        "middlebox-restart",
        "middlebox-unreachable",
        "constrained",
        "constrained-coap-blocked",
        "attack-downgrade-transparent",
        "attack-swap-cookies",
        "fault-service-restart",
        "fault-network-cut",
    ],
)
def test_scenario_under_compose(docker_ready, tmp_path, name, mode):
    lines: list[str] = []
    result = run_scenario(
        find_scenario(name), tmp_path, "compose", say=lines.append, middlebox_mode=mode
    )
    failed = [c for c in result.checks if not c.ok]
    assert result.ok, "\n".join(lines[-40:]) + f"\nfailed: {failed}"
    logs = {p.name for p in result.report_json.parent.joinpath("logs").iterdir()}
    assert any("device" in n for n in logs) and any("middlebox" in n for n in logs)
    if mode == "transparent":
        middlebox_log = next(
            p for p in result.report_json.parent.joinpath("logs").iterdir() if "middlebox" in p.name
        ).read_text()
        assert "Transparent Proxy listening" in middlebox_log


def test_client_hello_rules_act_the_same_under_compose(docker_ready, tmp_path):
    """The example that blocks on SNI and key shares holds under compose as it does locally."""
    from atls_scenarios.scenario import load_scenario

    example = Path(__file__).resolve().parents[2] / "scenarios/examples/block-by-client-hello.yaml"
    lines: list[str] = []
    result = run_scenario(load_scenario(example), tmp_path, "compose", say=lines.append)
    assert result.ok, "\n".join(lines[-40:])


def test_custom_scenario_file_runs_under_compose(docker_ready, tmp_path):
    """Scenario files are mounted, not baked in: a new file needs no image rebuild."""
    from atls_scenarios.scenario import load_scenario

    text = open(find_scenario("no-middlebox").source).read()
    custom = tmp_path / "scenarios" / "my-lab.yaml"
    custom.parent.mkdir()
    custom.write_text(text.replace("name: no-middlebox", "name: my-lab"))
    result = run_scenario(
        load_scenario(custom), tmp_path / "reports", "compose", say=lambda _: None
    )
    assert result.ok, [c for c in result.checks if not c.ok]


def test_two_runs_at_once_both_pass_with_atls_image(docker_ready, tmp_path, monkeypatch):
    """Two runs at the same time (bootstrap and atls-blocked), each on its own
    project and networks, each removing only its own; both use $ATLS_IMAGE."""
    client = docker_client()
    alias = f"atls-testbed:compose-test-{os.getpid()}"
    client.images.get(default_image()).tag(alias)
    monkeypatch.setenv("ATLS_IMAGE", alias)
    results: dict[str, RunResult] = {}
    errors: list[BaseException] = []
    lines: dict[str, list[str]] = {"bootstrap": [], "atls-blocked": []}

    def run(name: str) -> None:
        try:
            results[name] = run_scenario(
                find_scenario(name), tmp_path / name, "compose", say=lines[name].append
            )
        except BaseException as exc:  # noqa: BLE001 - re-raised below with the output
            errors.append(exc)

    started = time.monotonic()
    try:
        threads = [threading.Thread(target=run, args=(n,)) for n in lines]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    finally:
        client.images.remove(alias, noprune=True)
    elapsed = time.monotonic() - started
    output = "\n".join(f"{n}: {line}" for n, ls in lines.items() for line in ls[-30:])
    assert not errors, f"{errors}\n{output}"
    for name, result in results.items():
        assert result.ok, f"{name}: {[c for c in result.checks if not c.ok]}\n{output}"
        containers = json.loads(
            result.report_json.parent.joinpath("logs", "containers.json").read_text()
        )
        assert {c["image"] for c in containers} == {alias}, containers
        assert not _leftovers(_project(result)), _project(result)
    assert len({_project(r) for r in results.values()}) == 2
    progress = [line for line in lines["bootstrap"] if "waiting on" in line or "ready:" in line]
    assert progress, lines["bootstrap"]
    print(f"two concurrent compose runs: {elapsed:.1f}s")


def test_missing_image_names_the_build_command(docker_ready, tmp_path, monkeypatch, capsys):
    from atls_scenarios.cli import main

    monkeypatch.setenv("ATLS_IMAGE", "atls-testbed:no-such-tag")
    with pytest.raises(EngineUnavailable, match=r"\./testbed images build"):
        run_scenario(find_scenario("bootstrap"), tmp_path, "compose", say=lambda _: None)
    code = main(["run", "bootstrap", "--engine", "compose", "--report-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "atls-testbed:no-such-tag not found" in err
    assert "./testbed images build --tag atls-testbed:no-such-tag" in err


def test_plain_compose_up_with_scale_reports_every_device(docker_ready, tmp_path):
    """The README's plain path: `up --exit-code-from collector --scale device=3`
    waits for all three devices (not the first to exit) and reports each."""
    project = f"atlsplain{os.getpid()}"
    base = [*compose_cli(), "-f", "compose/docker-compose.yml", "-p", project]
    env = {**os.environ, "ATLS_DEVICES": "3", "ATLS_REPORTS": str(tmp_path)}
    started = time.monotonic()
    try:
        up = subprocess.run(
            [*base, "up", "--exit-code-from", "collector", "--scale", "device=3"],
            cwd=repo_root(),
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
    finally:
        subprocess.run(
            [*base, "down", "-v", "--timeout", "5"],
            cwd=repo_root(),
            env=env,
            capture_output=True,
            timeout=120,
        )
    elapsed = time.monotonic() - started
    output = up.stdout + up.stderr
    assert up.returncode == 0, output[-3000:]
    assert "collector: 3 device result(s), 3 exited 0" in output, output[-3000:]
    for serial in ("device-0001", "device-0002", "device-0003"):
        assert f"{serial}  bootstrapped" in output
    reports = sorted(p.name for p in Path(tmp_path, "devices").glob("*.json"))
    assert reports == ["device-0001.json", "device-0002.json", "device-0003.json"]
    assert all(
        json.loads(Path(tmp_path, "devices", r).read_text())["result"] == "bootstrapped"
        for r in reports
    )
    assert Path(tmp_path, "audit.jsonl").exists()
    assert not _leftovers(project)
    print(f"plain compose up, 3 devices: {elapsed:.1f}s")


def _image_has_locust(image: str) -> bool:
    done = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "locust", image, "--version"],
        capture_output=True,
        timeout=120,
    )
    return done.returncode == 0


def test_a_locust_fleet_under_compose_runs_with_workers(docker_ready, tmp_path, monkeypatch):
    """compose/fleet.yml: a Locust master and two workers instead of device containers;
    every device's report and Locust's statistics land in the run folder."""
    if not _image_has_locust(default_image()):
        message = f"{default_image()} predates the fleet extra: ./testbed images build --offline"
        if REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    monkeypatch.setenv("ATLS_FLEET_WORKERS", "2")
    scenario = find_scenario("many-devices").with_devices(60)
    lines: list[str] = []
    result = run_scenario(scenario, tmp_path, "compose", say=lines.append)
    failed = [c for c in result.checks if not c.ok]
    assert result.ok, "\n".join(lines[-40:]) + f"\nfailed: {failed}"
    run_dir = result.report_json.parent
    assert len(list((run_dir / "devices").glob("device-*.json"))) == 60
    assert (run_dir / "fleet" / "locust_stats.csv").exists()
    assert (run_dir / "fleet" / "locust-report.html").exists()
    workers = {r["fleet"]["worker"] for r in result.observations.devices}
    assert len(workers) == 2, f"both workers ran devices: {workers}"
    assert any("2 Locust workers" in n for n in result.observations.notes)
    assert not _leftovers(_project(result))
