"""Run one cell: a server, the middlebox with the policy addon, a client.

Everything a failure needs for diagnosis stays in the cell's folder: both
ends' output, the middlebox's log, audit lines and saved flows, and the key
logs. Every wait is bounded, so a peer that hangs costs a bounded time.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from ..processes import ManagedProcess, MitmdumpProcess, ProcessError, free_port, wait_port
from .certs import RunCerts
from .registry import Implementation
from .testcases import TestCase

CLIENT_TIMEOUT = 20.0
SERVER_START_TIMEOUT = 15.0
EXPORT_HEX_LENGTH = 64
PASS, FAIL, UNSUPPORTED = "pass", "fail", "unsupported"
UNSUPPORTED_EXIT = 127


@dataclass
class Cell:
    """One cell of the matrix, as written to matrix.json."""

    client: str
    server: str
    testcase: str
    result: str
    reason: str
    duration: float
    path: str = ""

    def to_json(self) -> dict[str, object]:
        return asdict(self)


class Engine(Protocol):
    """How an implementation's role is started (local command or container)."""

    name: str

    def argv(
        self, impl: Implementation, role: str, cell_dir: Path, env: dict[str, str]
    ) -> list[str]: ...

    def available(self, impl: Implementation) -> str | None:
        """None when the engine can run ``impl``, else why not."""
        ...


class LocalEngine:
    """Implementations as shell commands run from the repository root."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def available(self, impl: Implementation) -> str | None:
        return None if impl.command else "no command in the registry (image only)"

    def argv(
        self, impl: Implementation, role: str, cell_dir: Path, env: dict[str, str]
    ) -> list[str]:
        assert impl.command
        return ["bash", "-c", impl.expand(impl.command, self.root)]


class PeerProcess(ManagedProcess):
    """A peer in its own process group, so stopping it stops its children too."""

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                list(self.argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(self.env or {})},
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def _signal(self, signum: int) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signum)

    def stop(self, timeout: float = 5.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(5)
        else:  # the leader is gone; leftovers in its group must not outlive the cell
            self._signal(signal.SIGKILL)
        return self.proc.returncode

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None when it did not finish in time (then it is killed)."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.proc.wait(5)
            return None


def last_line(path: Path) -> str:
    """The last non-empty line of a log: what a peer says about a 127 or a failure."""
    with contextlib.suppress(OSError):
        for line in reversed(path.read_text(errors="replace").splitlines()):
            if line.strip():
                return line.strip()[:300]
    return ""


def not_started(code: int | None, said: str) -> bool:
    """127 from bash itself (command not found, not built) is a failure, not "unsupported"."""
    return code == UNSUPPORTED_EXIT and said.startswith("bash:")


def _export(path: Path) -> str | None:
    """The first exported value in an EXPORT_FILE (lowercase hex), or None."""
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            if line.strip():
                return line.strip().lower()
    return None


def _audit_lines(path: Path) -> list[dict[str, object]]:
    lines: list[dict[str, object]] = []
    with contextlib.suppress(OSError):
        for raw in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                lines.append(json.loads(raw))
    return lines


@dataclass
class CellContext:
    """What every cell of a run shares."""

    root: Path
    out: Path
    certs: RunCerts
    mitm_confdir: Path
    engine: Engine
    client_timeout: float = CLIENT_TIMEOUT


def _peer_env(
    tc: TestCase, role: str, certs: Path, cell_dir: Path, python_bin: str
) -> dict[str, str]:
    logs = cell_dir / f"{role}-logs"
    logs.mkdir(parents=True, exist_ok=True)
    return {
        "ROLE": role,
        "TESTCASE": tc.name,
        "CERTS": str(certs),
        "EXPORT_FILE": str(cell_dir / f"{role}-export.txt"),
        "KEYLOG_FILE": str(cell_dir / f"{role}-keylog.txt"),
        "LOG_DIR": str(logs),
        "PATH": f"{python_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
    }


def cell_dir_for(out: Path, client: Implementation, server: Implementation, tc: TestCase) -> Path:
    return out / "cells" / tc.name / f"{client.name}--{server.name}"


def run_cell(
    ctx: CellContext, client: Implementation, server: Implementation, tc: TestCase
) -> Cell:
    """Run one cell and judge it from exit codes, exports and the audit log."""
    cell_dir = cell_dir_for(ctx.out, client, server, tc)
    if cell_dir.exists():  # a rerun into the same report: no stale exports or logs
        shutil.rmtree(cell_dir)
    cell_dir.mkdir(parents=True)
    started = time.monotonic()
    rel = str(cell_dir.relative_to(ctx.out))

    def done(result: str, reason: str) -> Cell:
        cell = Cell(client.name, server.name, tc.name, result, reason,
                    round(time.monotonic() - started, 2), rel)  # fmt: skip
        (cell_dir / "cell.json").write_text(json.dumps(cell.to_json(), indent=2) + "\n")
        return cell

    for impl in (client, server):
        why = ctx.engine.available(impl)
        if why:
            return done(UNSUPPORTED, f"{impl.name}: {why} ({ctx.engine.name} engine)")
    python_bin = str(Path(sys.executable).parent)
    port = free_port()
    server_env = _peer_env(tc, "server", ctx.certs.server, cell_dir, python_bin)
    server_env.update({"PORT": str(port), "HOST": "127.0.0.1"})
    client_certs = ctx.certs.for_client(tc.client_has_cert, tc.wrong_anchor)
    client_env = _peer_env(tc, "client", client_certs, cell_dir, python_bin)
    policy = cell_dir / "policy.yaml"
    policy.write_text(yaml.safe_dump(tc.policy(), sort_keys=False))
    srv = PeerProcess(
        "server",
        ctx.engine.argv(server, "server", cell_dir, server_env),
        cell_dir / "server.log",
        server_env,
    )
    mode = [] if tc.forward_proxy else ["--mode", f"reverse:http://127.0.0.1:{port}"]
    mitm = MitmdumpProcess(
        confdir=ctx.mitm_confdir,
        log_dir=cell_dir,
        policy=policy,
        audit_log=cell_dir / "audit.jsonl",
        save_flows=cell_dir / "flows.mitm",
        with_addon=True,
        extra_args=mode,
    )
    cli: PeerProcess | None = None
    server_alive_at_end = False
    try:
        srv.start()
        try:
            mitm.start()
        except ProcessError as exc:
            return done(FAIL, f"middlebox did not start: {str(exc).splitlines()[0]}")
        try:
            wait_port("127.0.0.1", port, srv, SERVER_START_TIMEOUT)
        except ProcessError:
            code = srv.proc.poll() if srv.proc else None
            said = last_line(srv.log_path)
            if not_started(code, said):
                return done(FAIL, f"server {server.name} could not start: {said}")
            if code == UNSUPPORTED_EXIT:
                return done(UNSUPPORTED, f"server {server.name}: {said}")
            if code is None:
                return done(FAIL, f"server {server.name} not listening after "
                                  f"{SERVER_START_TIMEOUT:.0f}s")  # fmt: skip
            return done(FAIL, f"server {server.name} exited {code} at start: {said}")
        if tc.forward_proxy:
            client_env.update({"SERVER_URL": f"http://127.0.0.1:{port}", "PROXY": mitm.url})
        else:
            client_env["SERVER_URL"] = mitm.url
        cli = PeerProcess(
            "client",
            ctx.engine.argv(client, "client", cell_dir, client_env),
            cell_dir / "client.log",
            client_env,
        )
        cli.start()
        code = cli.wait(ctx.client_timeout)
        server_alive_at_end = srv.alive()
        return done(*judge(tc, client, server, code, cell_dir, server_alive_at_end,
                           ctx.client_timeout))  # fmt: skip
    finally:
        # Stopped side by side: each waits for its own graceful exit.
        stops: list[Callable[[], object]] = [srv.stop, mitm.stop]
        if cli is not None:
            stops.append(cli.stop)
        with ThreadPoolExecutor(len(stops)) as pool:
            list(pool.map(lambda stop: stop(), stops))


def _dtls_records(audit_line: dict[str, object]) -> bool:
    """The audited flight is DTLS records: each record has an epoch and a sequence number.

    An empty flight (an empty answer) has no record to judge and passes.
    """
    summary = audit_line.get("summary")
    records: Any = summary.get("records", []) if isinstance(summary, dict) else []
    return isinstance(records, list) and all(
        isinstance(r, dict) and "epoch" in r and "seq" in r for r in records
    )


def judge(
    tc: TestCase,
    client: Implementation,
    server: Implementation,
    code: int | None,
    cell_dir: Path,
    server_alive: bool,
    bound: float,
) -> tuple[str, str]:
    """The cell's result and reason, from what the peers and the middlebox left."""
    client_said = last_line(cell_dir / "client.log")
    if not_started(code, client_said):
        return FAIL, f"client {client.name} could not start: {client_said}"
    if code == UNSUPPORTED_EXIT:
        return UNSUPPORTED, f"client {client.name}: {client_said}"
    if code is None:
        return FAIL, f"client did not finish within {bound:.0f}s (killed)"
    if not server_alive:
        return FAIL, f"server {server.name} died: {last_line(cell_dir / 'server.log')}"
    audit = _audit_lines(cell_dir / "audit.jsonl")
    client_export = _export(cell_dir / "client-export.txt")
    server_export = _export(cell_dir / "server-export.txt")
    if not tc.client_succeeds:
        if code == 0:
            return FAIL, "client succeeded where it must fail"
        if tc.name == "mutual-auth-missing" and (client_export or server_export):
            side = "client" if client_export else "server"
            return FAIL, f"{side} exported keying material although authentication failed"
        if tc.policy_rules and not any(a.get("decision") == "fault" for a in audit):
            return FAIL, "the middlebox applied no fault (no ATLS flight matched)"
        return PASS, f"client refused (exit {code}): {client_said}"
    if code != 0:
        return FAIL, f"client exit {code}: {client_said}"
    if not audit:
        return FAIL, "the middlebox saw no ATLS flight (audit log empty)"
    variants = {str(a.get("variant")) for a in audit}
    if variants != {tc.audit_variant}:
        return FAIL, f"middlebox saw variant(s) {sorted(variants)}, expected {tc.audit_variant}"
    if tc.policy_rules and not any(a.get("decision") == "fault" for a in audit):
        return FAIL, "the middlebox applied no fault (no ATLS flight matched)"
    if tc.record_layer == "dtls" and not all(_dtls_records(a) for a in audit):
        return FAIL, "the middlebox saw a flight that is not DTLS records"
    notes = []
    for side, value in (("client", client_export), ("server", server_export)):
        if value is None:
            if tc.export_required:
                return FAIL, f"{side} wrote no export"
            notes.append(f"no export from {side}")
        elif len(value) != EXPORT_HEX_LENGTH or not all(c in "0123456789abcdef" for c in value):
            return FAIL, f"{side} export is not 32 bytes of hex: {value[:80]!r}"
    flights = sum(1 for a in audit if a.get("direction") == "request")
    summary = f"{flights} flights through the middlebox"
    if client_export and server_export and client_export != server_export:
        differ = f"exports differ: client {client_export[:16]}... server {server_export[:16]}..."
        if tc.compare_exports:
            return FAIL, differ
        notes.append(differ + " (not judged in this test case)")
    elif client_export and server_export:
        summary += f", exports equal ({client_export[:8]}...)"
    return PASS, "; ".join([summary, *notes])
