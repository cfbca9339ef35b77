"""``./testbed test`` ends by saying why tests were skipped, grouped by reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_skip_reasons_are_grouped_at_the_end(tmp_path: Path):
    (tmp_path / "test_some.py").write_text(
        "import pytest\n"
        "@pytest.mark.parametrize('n', range(3))\n"
        "def test_docker(n):\n"
        "    pytest.skip('no Docker engine; start dockerd or see README')\n"
        "@pytest.mark.skipif(True, reason='no chromium: apt-get install chromium')\n"
        "def test_browser():\n"
        "    pass\n"
        "def test_runs():\n"
        "    pass\n"
    )
    done = _pytest(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    tail = done.stdout[done.stdout.index("why tests were skipped") :]
    assert "3 skipped: no Docker engine; start dockerd or see README" in tail
    assert "1 skipped: no chromium: apt-get install chromium" in tail


def test_no_section_without_skips(tmp_path: Path):
    (tmp_path / "test_ok.py").write_text("def test_ok():\n    pass\n")
    done = _pytest(tmp_path)
    assert done.returncode == 0 and "why tests were skipped" not in done.stdout


def _pytest(folder: Path) -> subprocess.CompletedProcess[str]:
    """A real pytest run over ``folder`` with the project's conftest (and its summary hook)."""
    argv = ["-m", "pytest", "-p", "tests.conftest", "-q", "-p", "no:cacheprovider"]
    return subprocess.run(
        [sys.executable, *argv, "--rootdir", str(folder), str(folder)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
