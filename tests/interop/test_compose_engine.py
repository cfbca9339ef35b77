"""The interop runner's compose engine: ours and tlslite-ng as images, and a foreign peer.

Skips, with the reason, without Docker or without an image that carries the
interop extra (./testbed images build --offline); ATLS_REQUIRE_DOCKER=1 fails instead.

The foreign-peer test needs the host-built peers (./testbed interop build) and the
bookworm peers image (./testbed images build --interop-peers). It skips without them
even under ATLS_REQUIRE_DOCKER=1: .ci/run builds both after the test suite (the peers'
toolchains are installed there), then reruns this file with ATLS_REQUIRE_PEERS_IMAGE=1,
which turns that skip into a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.compose, pytest.mark.interop]
ROOT = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("ATLS_IMAGE") or "atls-testbed:latest"
PEERS_IMAGE = "atls-interop-peers:latest"


@pytest.fixture(scope="module")
def image_with_tlslite() -> None:
    try:
        probe = subprocess.run(
            ["docker", "run", "--rm", IMAGE, "python", "-c", "import tlslite, atls_service"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        problem = None if probe.returncode == 0 else probe.stderr.strip().splitlines()[-1:]
    except (OSError, subprocess.TimeoutExpired) as exc:
        problem = [str(exc)]
    if problem:
        message = f"no Docker image {IMAGE} with the interop extra: {problem}"
        if os.environ.get("ATLS_REQUIRE_DOCKER") == "1":
            pytest.fail(message)
        pytest.skip(message)


def test_ours_and_tlslite_as_images(image_with_tlslite: None, tmp_path: Path) -> None:
    report = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, "-m", "atls_scenarios.cli", "interop", "--engine", "compose",
         "--clients", "ours,tlslite-ng", "--servers", "ours,tlslite-ng",
         "--tests", "handshake-tls12,corruption", "--report-dir", str(report),
         "--expected", str(tmp_path / "expected.yaml")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    cells = json.loads((report / "matrix.json").read_text())
    assert len(cells) == 8
    assert all(c["result"] == "pass" for c in cells), cells
    leftovers = subprocess.run(
        ["docker", "ps", "-q", "--filter", "name=atls-interop-"],
        capture_output=True, text=True, timeout=30,
    ).stdout.split()  # fmt: skip
    assert leftovers == []


@pytest.fixture(scope="module")
def peers_image() -> None:
    problem = None
    missing = [
        str(p.relative_to(ROOT))
        for p in (
            ROOT / "interop/.build/openssl/atls-peer-openssl",
            ROOT / "interop/.build/go/atls-go",
        )
        if not p.exists()
    ]
    if missing:
        problem = f"foreign peers not built ({', '.join(missing)}): ./testbed interop build"
    else:
        try:
            probe = subprocess.run(
                ["docker", "image", "inspect", PEERS_IMAGE],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            if probe.returncode != 0:
                problem = f"no Docker image {PEERS_IMAGE}: ./testbed images build --interop-peers"
        except (OSError, subprocess.TimeoutExpired) as exc:
            problem = f"no Docker: {exc}"
    if problem:
        if os.environ.get("ATLS_REQUIRE_PEERS_IMAGE") == "1":
            pytest.fail(problem)
        pytest.skip(problem)


def test_foreign_peers_in_the_peers_image(peers_image: None, tmp_path: Path) -> None:
    """openssl (C, host-built) against go (static) in atls-interop-peers, one cell."""
    report = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, "-m", "atls_scenarios.cli", "interop", "--engine", "compose",
         "--no-build", "--clients", "openssl", "--servers", "go",
         "--tests", "handshake-tls13", "--report-dir", str(report),
         "--expected", str(tmp_path / "expected.yaml")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    cells = json.loads((report / "matrix.json").read_text())
    assert [(c["client"], c["server"], c["result"]) for c in cells] == [
        ("openssl", "go", "pass")
    ], cells
