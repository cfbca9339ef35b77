"""The interop runner's compose engine: ours and tlslite-ng as images.

Skips, with the reason, without Docker or without an image that carries the
interop extra (./testbed images build --offline); ATLS_REQUIRE_DOCKER=1 fails instead.
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
