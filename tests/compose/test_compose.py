"""Scenarios under Docker Compose: the same expectations as the local engine.

Locally these skip, with the reason, when Docker (engine, compose CLI, image)
is not available. CI sets ATLS_REQUIRE_DOCKER=1: then a missing engine fails.
Build the image first: ./testbed images build --offline (or without --offline).
"""

from __future__ import annotations

import os

import pytest

from atls_scenarios.compose_engine import EngineUnavailable, compose_cli, docker_client
from atls_scenarios.images import DEFAULT_TAG
from atls_scenarios.runner import run_scenario
from atls_scenarios.scenario import find_scenario

pytestmark = pytest.mark.compose
REQUIRED = os.environ.get("ATLS_REQUIRE_DOCKER") == "1"


@pytest.fixture(scope="module")
def docker_ready() -> None:
    try:
        client = docker_client()
        compose_cli()
        client.images.get(DEFAULT_TAG)
    except EngineUnavailable as exc:
        if REQUIRED:
            pytest.fail(f"Docker is required here (ATLS_REQUIRE_DOCKER=1): {exc}")
        pytest.skip(f"Docker not available: {exc}")
    except Exception as exc:  # noqa: BLE001 - docker.errors.ImageNotFound
        message = f"image {DEFAULT_TAG} missing ({type(exc).__name__}); run ./testbed images build"
        if REQUIRED:
            pytest.fail(message)
        pytest.skip(message)


@pytest.mark.parametrize(
    ("name", "mode"),
    [
        ("bootstrap", "explicit"),
        ("atls-blocked", "explicit"),
        ("bootstrap", "transparent"),
        ("tamper", "explicit"),
        ("middlebox-restart", "explicit"),
        ("middlebox-unreachable", "explicit"),
        ("attack-downgrade", "transparent"),
        ("attack-swap-cookies", "explicit"),
        ("fault-service-restart", "explicit"),
        ("fault-network-cut", "explicit"),
    ],
    ids=[
        "bootstrap",
        "atls-blocked",
        "bootstrap-transparent",
        "tamper",
        "middlebox-restart",
        "middlebox-unreachable",
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
