"""Coverage-guided fuzzing (atheris), bounded: ``ATLS_FUZZ_SECONDS`` per target.

Skipped unless ``ATLS_FUZZ_SECONDS`` is set (``.ci/run`` sets 20: about 2.5 min
for all targets); the corpus replay and hypothesis run in every test run.

Each target runs in its own process with an RSS limit (unbounded memory fails)
and a per-input timeout (a hang fails). New coverage goes to a scratch corpus;
a crashing input is written to ``corpus/<target>/crash-*`` and kept: commit it,
fix the defect, and the replay test runs it from then on.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .targets import CORPUS, TARGETS

pytestmark = pytest.mark.fuzz

SECONDS = int(os.environ.get("ATLS_FUZZ_SECONDS", "0"))
ROOT = Path(__file__).resolve().parents[2]

atheris = pytest.importorskip("atheris", reason="atheris has no wheel for this Python")


@pytest.mark.skipif(SECONDS <= 0, reason="set ATLS_FUZZ_SECONDS to run atheris (.ci/run does)")
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_atheris_finds_nothing(target, tmp_path):
    scratch = tmp_path / "corpus"
    seeds = CORPUS / target
    shutil.copytree(seeds, scratch) if seeds.is_dir() else scratch.mkdir()
    seeds.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        "tests.fuzz.run_atheris",
        target,
        f"-max_total_time={SECONDS}",
        "-rss_limit_mb=1536",
        "-timeout=10",
        "-max_len=8192",
        f"-artifact_prefix={seeds}/",  # libFuzzer names them crash-<sha1>
        "-print_final_stats=1",
        str(scratch),
    ]
    run = subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, timeout=SECONDS + 120, check=False
    )
    stats = [line for line in run.stderr.splitlines() if line.startswith("stat::")]
    print(f"{target}: {' '.join(stats)}")
    assert run.returncode == 0, (
        f"atheris found a failing input for {target} (kept in {seeds}):\n{run.stderr[-4000:]}"
    )
