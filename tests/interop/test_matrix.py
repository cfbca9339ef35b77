"""Real interop cells: real peers, the real mitmdump with the policy addon between them.

Each test runs ``atls-testbed interop`` as a user does and checks what it
leaves: exit code, matrix.json, the per-cell folders. ours x ours is the
diagonal; every other cell pairs ours with an independent stack.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.interop]

ROOT = Path(__file__).resolve().parents[2]
STDLIB_PEER = Path(__file__).with_name("stdlib_peer.py")


def interop(tmp_path: Path, *args: str, timeout: float = 170) -> tuple[int, str, list[dict]]:
    report = tmp_path / "report"
    argv = [sys.executable, "-m", "atls_scenarios.cli", "interop", "--report-dir", str(report),
            "--no-build", *args]  # fmt: skip
    if "--expected" not in args:
        argv += ["--expected", str(tmp_path / "expected.yaml")]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    output = done.stdout + done.stderr
    matrix = report / "matrix.json"
    cells = json.loads(matrix.read_text()) if matrix.exists() else []
    return done.returncode, output, cells


def by_key(cells: list[dict]) -> dict[tuple[str, str, str], dict]:
    return {(c["testcase"], c["client"], c["server"]): c for c in cells}


@pytest.fixture(scope="module")
def ours_and_tlslite(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str, dict]:
    """One small matrix shared by the checks below: ours and tlslite-ng, both roles."""
    tmp = tmp_path_factory.mktemp("interop")
    code, output, cells = interop(
        tmp,
        "--clients", "ours,tlslite-ng", "--servers", "ours,tlslite-ng",
        "--tests", "handshake-tls12,wrong-anchor,corruption,exporter-empty-context",
    )  # fmt: skip
    return tmp / "report", code, output, by_key(cells)


def test_small_matrix_runs_every_cell(ours_and_tlslite: tuple[Path, int, str, dict]) -> None:
    report, code, output, cells = ours_and_tlslite
    assert code == 0, output  # no expectations yet: new cells are reported, never fatal
    assert len(cells) == 16
    assert "not in expected.yaml yet" in output
    for client in ("ours", "tlslite-ng"):
        for server in ("ours", "tlslite-ng"):
            assert cells[("handshake-tls12", client, server)]["result"] == "pass", cells
            # a client pinning another CA fails; the server survives
            assert cells[("wrong-anchor", client, server)]["result"] == "pass", cells
            # a bit flipped in the server's first flight: clean failure, within the bound
            corrupted = cells[("corruption", client, server)]
            assert corrupted["result"] == "pass" and corrupted["duration"] < 30, corrupted
    assert "exports equal" in cells[("handshake-tls12", "ours", "tlslite-ng")]["reason"]
    skipped = cells[("exporter-empty-context", "tlslite-ng", "ours")]
    assert skipped["result"] == "unsupported"
    assert "absent only" in skipped["reason"]  # the stack's limitation, in the cell
    assert cells[("exporter-empty-context", "ours", "ours")]["result"] == "pass"
    for name in ("matrix.json", "matrix.md", "index.html"):
        assert (report / name).exists()
    assert "tlslite-ng" in (report / "index.html").read_text()


def test_cell_folder_keeps_what_a_diagnosis_needs(
    ours_and_tlslite: tuple[Path, int, str, dict],
) -> None:
    report, _, _, cells = ours_and_tlslite
    cell = report / cells[("handshake-tls12", "tlslite-ng", "ours")]["path"]
    for name in ("client.log", "server.log", "audit.jsonl", "flows.mitm", "policy.yaml",
                 "client-keylog.txt", "server-keylog.txt", "cell.json"):  # fmt: skip
        assert (cell / name).exists() and (cell / name).stat().st_size > 0, name
    audit = [json.loads(line) for line in (cell / "audit.jsonl").read_text().splitlines()]
    assert {a["variant"] for a in audit} == {"current"}
    assert (cell / "client-keylog.txt").read_text().startswith("CLIENT_RANDOM ")
    flipped = report / cells[("corruption", "ours", "tlslite-ng")]["path"]
    decisions = [
        json.loads(x)["decision"] for x in (flipped / "audit.jsonl").read_text().splitlines()
    ]
    assert "fault" in decisions


def test_regressions_fail_the_run_and_improvements_are_reported(tmp_path: Path) -> None:
    expected = tmp_path / "expected.yaml"
    expected.write_text(yaml.safe_dump({"version": 1, "cells": {
        "exporter-empty-context": {"ours": {"tlslite-ng": "pass"}},  # really unsupported
        "handshake-tls13": {"ours": {"ours": "fail"}},  # really passes
    }}))  # fmt: skip
    code, output, cells = interop(
        tmp_path, "--clients", "ours", "--servers", "ours,tlslite-ng",
        "--tests", "exporter-empty-context,handshake-tls13", "--expected", str(expected),
    )  # fmt: skip
    assert code == 1, output
    assert "REGRESSION: exporter-empty-context ours -> tlslite-ng: expected pass" in output
    assert "newly passing: handshake-tls13 ours -> ours" in output
    code, output, _ = interop(
        tmp_path, "--clients", "ours", "--servers", "ours,tlslite-ng",
        "--tests", "exporter-empty-context,handshake-tls13", "--expected", str(expected),
        "--update-expected",
    )  # fmt: skip
    assert code == 0, output
    recorded = yaml.safe_load(expected.read_text())["cells"]
    assert recorded["exporter-empty-context"]["ours"]["tlslite-ng"] == "unsupported"
    assert recorded["handshake-tls13"]["ours"]["ours"] == "pass"


@pytest.mark.parametrize("testcase", ["records", "flight-loss", "draft00", "proxy"])
def test_ours_with_tlslite_through_the_middlebox(tmp_path: Path, testcase: str) -> None:
    code, output, cells = interop(
        tmp_path, "--clients", "tlslite-ng", "--servers", "ours", "--tests", testcase
    )
    assert code == 0, output
    (cell,) = cells
    assert cell["result"] == "pass", cell
    if testcase == "flight-loss":
        folder = tmp_path / "report" / cell["path"]
        assert "carrier failure" in (folder / "client.log").read_text()


def test_new_implementation_by_registry_entry_alone(tmp_path: Path) -> None:
    """A third party's peer runs with an entry in a registry and no code change."""
    registry = tmp_path / "implementations.yaml"
    ours = next(
        e for e in yaml.safe_load((ROOT / "interop" / "implementations.yaml").read_text())[
            "implementations"] if e["name"] == "ours"
    )  # fmt: skip
    registry.write_text(yaml.safe_dump({"version": 1, "implementations": [
        ours,
        {"name": "stdlib-ssl", "roles": ["client"], "command": f"python {STDLIB_PEER}",
         "stack": f"Python {sys.version_info.major}.{sys.version_info.minor} ssl",
         "openssl_based": True, "notes": "MemoryBIO + SSLObject; no exporter API"},
    ]}))  # fmt: skip
    code, output, cells = interop(
        tmp_path, "--registry", str(registry), "--clients", "stdlib-ssl", "--servers", "ours",
        "--tests", "handshake-tls13,handshake-tls12,wrong-anchor,mutual-auth-missing,exporter",
    )  # fmt: skip
    assert code == 0, output
    results = {c["testcase"]: c for c in cells}
    for name in ("handshake-tls13", "handshake-tls12", "wrong-anchor", "mutual-auth-missing"):
        assert results[name]["result"] == "pass", results[name]
    assert results["handshake-tls13"]["reason"].endswith("no export from client")
    assert results["exporter"]["result"] == "unsupported"
    assert "no exporter API" in results["exporter"]["reason"]
    assert "stdlib-ssl*" in output  # OpenSSL underneath, marked as such


def test_bad_arguments_are_clear_errors(tmp_path: Path) -> None:
    code, output, _ = interop(tmp_path, "--clients", "nobody")
    assert code == 2 and "unknown implementation(s) nobody" in output
    code, output, _ = interop(tmp_path, "--tests", "handshake-tls99")
    assert code == 2 and "unknown test case(s) handshake-tls99" in output
