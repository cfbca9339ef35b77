"""``./testbed``: a bad command lists the wrapper's own commands and atls-testbed's."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def wrapper(*args: str) -> subprocess.CompletedProcess[str]:
    # Only in a venv ./testbed made and considers current: otherwise it would install.
    stamp = Path(sys.prefix) / ".atls-installed"
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    if not stamp.exists() or stamp.read_text().strip() != want:
        pytest.skip("not running in an up-to-date ./testbed venv (it would reinstall)")
    env = {**os.environ, "ATLS_VENV": sys.prefix}  # the venv running these tests
    return subprocess.run(
        [str(ROOT / "testbed"), *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_a_bad_command_lists_every_command():
    done = wrapper("frobnicate")
    assert done.returncode == 2
    assert "unknown command 'frobnicate'" in done.stderr
    for own in ("test [PYTEST ARGS]", "bench [--quick]", "shell"):
        assert own in done.stderr
    for cli in ("pki", "list", "run", "demo"):
        assert cli in done.stderr.split("atls-testbed command:")[1]


def test_help_is_not_an_error():
    done = wrapper("help")
    assert done.returncode == 0 and "usage: ./testbed COMMAND" in done.stderr


def test_known_commands_still_pass_through():
    done = wrapper("list")
    assert done.returncode == 0 and "bootstrap" in done.stdout
