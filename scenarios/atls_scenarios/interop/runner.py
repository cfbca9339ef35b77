"""``atls-testbed interop``: build the peers, run the matrix, compare, report."""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from .cells import (
    FAIL,
    PASS,
    UNSUPPORTED,
    Cell,
    CellContext,
    Engine,
    LocalEngine,
    cell_dir_for,
    run_cell,
)
from .certs import make_run_certs
from .expected import ExpectationError, compare, load_expected, update_expected
from .output import summary_counts, text_tables, write_outputs
from .registry import Implementation, RegistryError, load_registry, select
from .testcases import DEFAULT_TESTCASES, TESTCASES

BUILD_TIMEOUT = 900.0
PROJECT_IMAGE = "atls-testbed:latest"


def repo_root() -> Path:
    """The checkout: where interop/implementations.yaml lives (cwd first, then this file's)."""
    for candidate in (Path.cwd(), *Path(__file__).resolve().parents):
        if (candidate / "interop" / "implementations.yaml").exists():
            return candidate
    return Path.cwd()


class DockerEngine:
    """Implementations as container images (``image`` in the registry).

    Each peer is one ``docker run`` on the host network, so the middlebox and
    the cell folder are the same as in the local engine; the checkout and the
    run folder are mounted at their own paths. Containers are removed after
    every cell, even when a peer had to be killed.
    """

    name = "compose"

    def __init__(self, root: Path, out: Path) -> None:
        self.root, self.out = root, out
        self.containers: dict[Path, list[str]] = {}
        self.images: dict[str, bool] = {}

    def available(self, impl: Implementation) -> str | None:
        if not impl.image:
            return "no image in the registry"
        image = self.image(impl)
        if image not in self.images:
            found = subprocess.run(
                ["docker", "image", "inspect", image], capture_output=True, timeout=30, check=False
            )
            self.images[image] = found.returncode == 0
        if not self.images[image]:
            how = "--interop-peers" if image.startswith("atls-interop-peers:") else "--offline"
            return f"image {image} not found (build it: ./testbed images build {how})"
        return None

    @staticmethod
    def image(impl: Implementation) -> str:
        """The registry's image; the project's own image follows ATLS_IMAGE, as compose does."""
        assert impl.image
        if impl.image == PROJECT_IMAGE:
            return os.environ.get("ATLS_IMAGE") or PROJECT_IMAGE
        return impl.image

    def argv(
        self, impl: Implementation, role: str, cell_dir: Path, env: dict[str, str]
    ) -> list[str]:
        assert impl.image
        name = f"atls-interop-{role}-{uuid.uuid4().hex[:10]}"
        self.containers.setdefault(cell_dir, []).append(name)
        command = impl.image_command if impl.image_command is not None else impl.command
        argv = [
            "docker", "run", "--rm", "--init", "--network", "host", "--name", name,
            "-v", f"{self.root}:{self.root}:ro", "-v", f"{self.out}:{self.out}",
            "-w", str(self.root),
        ]  # fmt: skip
        for key in env:
            if key != "PATH":
                argv += ["-e", key]  # the value comes from docker run's own environment
        argv.append(self.image(impl))
        if command:
            argv += ["bash", "-c", impl.expand(command, self.root)]
        return argv

    def after_cell(self, cell_dir: Path) -> None:
        names = self.containers.pop(cell_dir, [])
        if names:
            subprocess.run(
                ["docker", "rm", "-f", *names], capture_output=True, timeout=60, check=False
            )


class LocalFirstEngine:
    """The local engine: commands run on the host; image-only entries run in Docker.

    So a third party's implementation published only as an image joins a
    matrix whose other peers are built locally.
    """

    name = "local"

    def __init__(self, root: Path, out: Path) -> None:
        self.local, self.docker = LocalEngine(root), DockerEngine(root, out)

    def available(self, impl: Implementation) -> str | None:
        return None if impl.command else self.docker.available(impl)

    def argv(
        self, impl: Implementation, role: str, cell_dir: Path, env: dict[str, str]
    ) -> list[str]:
        engine: Engine = self.local if impl.command else self.docker
        return engine.argv(impl, role, cell_dir, env)

    def after_cell(self, cell_dir: Path) -> None:
        self.docker.after_cell(cell_dir)


def _peers_digest(root: Path, impl: Implementation) -> str:
    """What a build depends on: its command and the files under interop/peers/."""
    digest = hashlib.sha256((impl.build or "").encode())
    peers = root / "interop" / "peers"
    for path in sorted(peers.rglob("*")) if peers.exists() else []:
        if path.is_file() and ".build" not in path.parts:
            digest.update(str(path.relative_to(peers)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def build(
    root: Path, impls: Sequence[Implementation], force: bool, say: Callable[[str], None]
) -> int:
    """Run each registry build command (cached: skipped when nothing it uses changed)."""
    failed = 0
    for impl in impls:
        if not impl.build:
            continue
        out = root / "interop" / ".build" / impl.name
        out.mkdir(parents=True, exist_ok=True)
        stamp = out / ".built"
        digest = _peers_digest(root, impl)
        if not force and stamp.exists() and stamp.read_text() == digest:
            say(f"[build] {impl.name}: up to date")
            continue
        missing = [r for r in impl.requires if shutil.which(r) is None]
        if missing:
            say(f"[build] {impl.name}: skipped (missing {', '.join(missing)})")
            continue
        log = root / "interop" / ".build" / f"{impl.name}.build.log"
        started = time.monotonic()
        env = {**os.environ, "BUILD_DIR": str(out), "PATH": _path_with_python()}
        try:
            with log.open("wb") as handle:
                code = subprocess.run(
                    ["bash", "-c", impl.expand(impl.build, root)],
                    cwd=root,
                    env=env,
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    timeout=BUILD_TIMEOUT,
                    check=False,
                ).returncode
        except subprocess.TimeoutExpired:
            code = -1
        seconds = time.monotonic() - started
        if code == 0:
            stamp.write_text(digest)
            say(f"[build] {impl.name}: built in {seconds:.1f}s")
        else:
            failed += 1
            tail = log.read_text(errors="replace").splitlines()[-5:]
            say(f"[build] {impl.name}: FAILED (exit {code}, {seconds:.0f}s), see {log}")
            for line in tail:
                say(f"[build]   {line}")
    return 1 if failed else 0


def _path_with_python() -> str:
    return f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


def run_matrix(
    root: Path,
    out: Path,
    clients: Sequence[Implementation],
    servers: Sequence[Implementation],
    testcases: Sequence[str],
    engine: Engine,
    say: Callable[[str], None],
    jobs: int = 1,
    budget: float | None = None,
) -> list[Cell]:
    """Every (test case, server, client) cell; ``jobs`` at a time (default one).

    With a ``budget`` (seconds), no cell starts after it is spent: the cells run
    are returned, the rest are reported as not run (a bounded CI run stays within
    its time limit instead of failing it). Cells with our own implementation on
    either side go first, so a cut leaves every peer checked against ours.
    """
    deadline = time.monotonic() + budget if budget else None
    certs = make_run_certs(out / "certs")
    ctx = CellContext(root, out, certs, out / "mitmproxy", engine)
    if jobs > 1:  # the middlebox CA, made once before cells start side by side
        from mitmproxy.certs import CertStore

        CertStore.from_store(ctx.mitm_confdir, "mitmproxy", 2048)
    plan = [(t, s, c) for t in testcases for s in servers for c in clients]
    plan.sort(key=lambda item: OURS not in (item[1].name, item[2].name))  # stable: ours first
    lock = threading.Lock()
    finished = 0

    def one(item: tuple[str, Implementation, Implementation]) -> Cell | None:
        nonlocal finished
        testcase, server, client = item
        if deadline is not None and time.monotonic() > deadline:
            return None
        tc = TESTCASES[testcase]
        try:
            cell = run_cell(ctx, client, server, tc)
        finally:
            after = getattr(engine, "after_cell", None)
            if after:
                after(cell_dir_for(out, client, server, tc))
        with lock:
            finished += 1
            say(
                f"[interop] {finished}/{len(plan)} {testcase} {client.name} -> {server.name}: "
                f"{cell.result} ({cell.duration:.1f}s) "
                f"{cell.reason if cell.result != PASS else ''}"
            )
        return cell

    if jobs <= 1:
        done = [one(item) for item in plan]
    else:
        with ThreadPoolExecutor(jobs) as pool:
            done = list(pool.map(one, plan))
    cells = [c for c in done if c is not None]
    if len(cells) < len(plan):
        say(f"[interop] budget spent: {len(plan) - len(cells)} of {len(plan)} cells not run")
    return cells


OURS = "ours"  # the project's own implementation in the registry


def _names(text: str | None) -> list[str] | None:
    return [n.strip() for n in text.split(",") if n.strip()] if text else None


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``interop`` (and ``interop build``) on the atls-testbed CLI."""
    p = sub.add_parser(
        "interop",
        help="run the interop matrix (implementations x test cases, through the middlebox)",
        description="Run every selected client against every selected server for each test "
        "case, with mitmdump + the ATLS policy addon between them. Exit 0 when every cell "
        "in the expectation file holds. 'interop build' builds the peers.",
    )
    p.add_argument("action", nargs="?", choices=["run", "build"], default="run")
    p.add_argument("--clients", help="comma-separated implementation names (default: all)")
    p.add_argument("--servers", help="comma-separated implementation names (default: all)")
    p.add_argument(
        "--tests", help=f"comma-separated test cases (default: {','.join(DEFAULT_TESTCASES)})"
    )
    p.add_argument("--engine", choices=["local", "compose"], default="local")
    p.add_argument("--registry", type=Path, help="default: interop/implementations.yaml")
    p.add_argument("--expected", type=Path, help="default: interop/expected.yaml")
    p.add_argument("--update-expected", action="store_true", help="record this run's results")
    p.add_argument("--report-dir", type=Path, help="default: reports/interop/<time>")
    p.add_argument("--force", action="store_true", help="build: rebuild even if up to date")
    p.add_argument("--no-build", action="store_true", help="run: do not build first")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="cells run side by side (default 1: one at a time; each cell is 3-4 processes)",
    )
    p.add_argument(
        "--budget",
        type=float,
        help="seconds: start no cell after this (cells with ours first); the rest are "
        "reported as not run, never as failures",
    )
    p.add_argument(
        "--update-readme", action="store_true", help="put this run's matrix into README.md"
    )
    p.add_argument(
        "--fail-on-new-failures",
        action="store_true",
        help="cells not in the expectation file must not fail (for a newly added implementation)",
    )
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    root = repo_root()
    say = _say
    registry_path = args.registry or root / "interop" / "implementations.yaml"
    expected_path = args.expected or root / "interop" / "expected.yaml"
    try:
        impls = load_registry(registry_path)
        # Under compose, "all" means all that have an image.
        pool = [i for i in impls if i.image] if args.engine == "compose" else impls
        clients = select(pool if args.clients is None else impls, _names(args.clients), "client")
        servers = select(pool if args.servers is None else impls, _names(args.servers), "server")
        testcases = _names(args.tests) or DEFAULT_TESTCASES
        unknown = [t for t in testcases if t not in TESTCASES]
        if unknown:
            raise RegistryError(
                f"unknown test case(s) {', '.join(unknown)}; known: {', '.join(TESTCASES)}"
            )
        expected = load_expected(expected_path)
    except (RegistryError, ExpectationError) as exc:
        print(f"atls-testbed interop: {exc}", file=sys.stderr)
        return 2
    if args.action == "build":
        return build(root, impls, args.force, say)
    if args.engine == "local" and not args.no_build:
        wanted = {i.name: i for i in [*clients, *servers]}
        if build(root, list(wanted.values()), False, say):
            say("[interop] some builds failed; their cells will fail")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = (args.report_dir or root / "reports" / "interop" / f"{stamp}-{args.engine}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    engine: Engine = (
        DockerEngine(root, out) if args.engine == "compose" else LocalFirstEngine(root, out)
    )
    total = len(clients) * len(servers) * len(testcases)
    say(f"[interop] {total} cells ({len(clients)} clients x {len(servers)} servers x "
        f"{len(testcases)} test cases), {args.engine} engine, report {out}")  # fmt: skip
    started = time.monotonic()
    cells = run_matrix(root, out, clients, servers, testcases, engine, say, args.jobs, args.budget)
    elapsed = time.monotonic() - started
    write_outputs(out, cells, impls, f"ATLS interop matrix ({stamp}, {args.engine})")
    print(text_tables(cells, impls))
    counts = summary_counts(cells)
    say(f"[interop] {len(cells)} cells in {elapsed:.0f}s: {counts[PASS]} pass, "
        f"{counts[UNSUPPORTED]} unsupported, {counts[FAIL]} fail")  # fmt: skip
    say(f"[interop] report {out}/index.html, matrix.json, matrix.md")
    if args.update_readme:
        header = (
            f"Run {stamp} ({args.engine} engine, {len(clients)} clients x {len(servers)} "
            f"servers x {len(testcases)} test cases, {elapsed / 60:.0f} min on this machine).\n\n"
        )
        try:
            update_readme(root / "README.md", header + (out / "matrix.md").read_text())
            say("[interop] README.md matrix updated")
        except (RegistryError, OSError) as exc:
            say(f"[interop] README.md not updated: {exc}")
    result = compare(expected, cells)
    for cell, want in result.improvements:
        say(f"[interop] newly passing: {cell.testcase} {cell.client} -> {cell.server} "
            f"(expected {want})")  # fmt: skip
    for cell, want in result.changed:
        say(f"[interop] changed: {cell.testcase} {cell.client} -> {cell.server}: "
            f"{want} -> {cell.result}: {cell.reason}")  # fmt: skip
    if result.new:
        say(f"[interop] {len(result.new)} cell(s) not in {expected_path.name} yet: "
            + ", ".join(f"{c.testcase} {c.client}->{c.server}={c.result}" for c in result.new[:20])
            + (" ..." if len(result.new) > 20 else ""))  # fmt: skip
    for cell, want in result.regressions:
        say(f"[interop] REGRESSION: {cell.testcase} {cell.client} -> {cell.server}: expected "
            f"{want}, got {cell.result}: {cell.reason}")  # fmt: skip
    new_failures = [c for c in result.new if c.result == FAIL]
    if args.fail_on_new_failures and new_failures:
        for cell in new_failures:
            say(f"[interop] NEW FAILURE: {cell.testcase} {cell.client} -> {cell.server}: "
                f"{cell.reason}")  # fmt: skip
    if args.update_expected:
        update_expected(expected_path, cells)
        say(f"[interop] recorded {len(cells)} cells in {expected_path}")
        return 0
    if args.fail_on_new_failures and new_failures:
        return 1
    return 0 if result.ok else 1


README_START, README_END = "<!-- interop-matrix:start -->", "<!-- interop-matrix:end -->"


def update_readme(readme: Path, matrix_md: str) -> None:
    """Replace the text between the README's interop markers."""
    text = readme.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise RegistryError(f"{readme}: no {README_START} ... {README_END} markers")
    readme.write_text(text[: start + len(README_START)] + "\n" + matrix_md.rstrip() + "\n"
                      + text[end:])  # fmt: skip


def _say(text: str) -> None:
    print(text, flush=True)
