"""Start and stop the testbed's real processes on loopback.

Used by the demo, the tests and (later) the local scenario engine, so every
one of them exercises the same command lines users run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

# Ports handed out lately, by this process: the probe socket is closed before the
# caller's process binds the port, so two picks in a row (a server and its
# middlebox, or cells side by side) could otherwise get the same number.
_HANDED_OUT: dict[int, float] = {}
_HANDED_OUT_LOCK = threading.Lock()
_HOLD_SECONDS = 120.0


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now that this process has not handed out in the last two minutes."""
    with _HANDED_OUT_LOCK:
        now = time.monotonic()
        for port, at in list(_HANDED_OUT.items()):
            if now - at > _HOLD_SECONDS:
                del _HANDED_OUT[port]
        for _ in range(64):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                port = int(s.getsockname()[1])
            if port not in _HANDED_OUT:
                _HANDED_OUT[port] = now
                return port
    raise ProcessError(f"no free port on {host} that was not just handed out")


class ProcessError(RuntimeError):
    """A testbed process failed to start or died."""


@dataclass
class ManagedProcess:
    """A child process whose output goes to a log file, stopped with SIGTERM."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")  # a restarted process appends
        env = {**os.environ, **(self.env or {})}
        self.proc = subprocess.Popen(
            list(self.argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            stdin=subprocess.DEVNULL,
        )
        log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def wait_http_ok(
    url: str, proc: ManagedProcess, timeout: float = 30.0, cafile: str | None = None
) -> None:
    """Poll ``url`` until it answers 200, the process dies, or time runs out."""
    context = ssl.create_default_context(cafile=cafile) if url.startswith("https") else None
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not proc.alive():
            raise ProcessError(f"{proc.name} exited early:\n{proc.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.1)
    raise ProcessError(
        f"{proc.name} not healthy at {url} after {timeout:.0f}s ({last}):\n{proc.log_tail()}"
    )


def _bin(name: str) -> str:
    """The console script next to this interpreter (works in any venv)."""
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


class _Supervised:
    """Start, stop and context management shared by the testbed's processes."""

    process: ManagedProcess | None

    def start(self, timeout: float = 30.0) -> Self:
        raise NotImplementedError

    def _await_ready(self, ready: Callable[[], None]) -> Self:
        """Run the readiness check; stop the process if it never gets ready."""
        try:
            ready()
        except ProcessError:
            if self.process:
                self.process.stop()
            raise
        return self

    def stop(self) -> int | None:
        return self.process.stop() if self.process else None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()


@dataclass
class ServiceProcess(_Supervised):
    """``atls-service`` on a loopback port."""

    pki: Path
    log_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    plain_http: bool = False
    extra_args: Sequence[str] = ()
    process: ManagedProcess | None = None
    env: dict[str, str] | None = None

    @property
    def url(self) -> str:
        scheme = "http" if self.plain_http else "https"
        return f"{scheme}://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> ServiceProcess:
        self.port = self.port or free_port(self.host)
        argv = [
            _bin("atls-service"),
            "--pki",
            str(self.pki),
            "--host",
            self.host,
            "--port",
            str(self.port),
            *self.extra_args,
        ]
        if self.plain_http:
            argv.append("--plain-http")
        self.process = ManagedProcess(
            "atls-service", argv, self.log_dir / "service.log", env=self.env
        )
        self.process.start()
        cafile = None if self.plain_http else str(self.pki / "vendor-ca.pem")
        process = self.process
        return self._await_ready(
            lambda: wait_http_ok(self.url + "/healthz", process, timeout, cafile)
        )


def wait_port(host: str, port: int, proc: ManagedProcess, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise ProcessError(f"{proc.name} exited early:\n{proc.log_tail()}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return
        time.sleep(0.1)
    raise ProcessError(
        f"{proc.name} not listening on {host}:{port} after {timeout:.0f}s:\n{proc.log_tail()}"
    )


@dataclass
class MitmdumpProcess(_Supervised):
    """A real mitmdump in explicit proxy mode on loopback.

    ``intercept=False`` makes it a plain CONNECT forward proxy (it ignores
    every host); otherwise it intercepts network TLS with its own CA, trusting
    ``upstream_ca`` for the connection onward to the service.
    """

    confdir: Path
    log_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    intercept: bool = True
    upstream_ca: Path | None = None
    policy: Path | None = None
    audit_log: Path | None = None
    metrics_file: Path | None = None
    save_flows: Path | None = None
    with_addon: bool = False
    log_level: str = "info"
    extra_args: Sequence[str] = ()
    process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ca_cert(self) -> Path:
        return self.confdir / "mitmproxy-ca-cert.pem"

    def start(self, timeout: float = 30.0) -> MitmdumpProcess:
        self.port = self.port or free_port(self.host)
        argv = [
            _bin("mitmdump"),
            "--listen-host",
            self.host,
            "--listen-port",
            str(self.port),
            "--set",
            f"confdir={self.confdir}",
            "--set",
            f"termlog_verbosity={self.log_level}",
        ]
        if not self.intercept:
            argv += ["--ignore-hosts", ".*"]
        if self.upstream_ca:
            argv += ["--set", f"ssl_verify_upstream_trusted_ca={self.upstream_ca}"]
        if self.with_addon or self.policy or self.audit_log or self.metrics_file:
            from atls_policy import SCRIPT

            argv += ["-s", str(SCRIPT)]
            for option, value in (
                ("atls_policy", self.policy),
                ("atls_audit_log", self.audit_log),
                ("atls_metrics_file", self.metrics_file),
            ):
                if value is not None:
                    argv += ["--set", f"{option}={value}"]
        if self.save_flows:
            argv += ["--save-stream-file", str(self.save_flows)]
        argv += list(self.extra_args)
        name = "mitmdump" if self.intercept else "mitmdump-tunnel"
        self.process = ManagedProcess(name, argv, self.log_dir / f"{name}-{self.port}.log")
        self.process.start()
        process = self.process
        return self._await_ready(lambda: wait_port(self.host, self.port, process, timeout))


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_log(proc: ManagedProcess, marker: str, timeout: float = 30.0) -> None:
    """Wait until ``marker`` shows up in the process's log (UDP servers have no port to poll)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise ProcessError(f"{proc.name} exited early:\n{proc.log_tail()}")
        with contextlib.suppress(OSError):
            if marker in proc.log_path.read_text(errors="replace"):
                return
        time.sleep(0.1)
    raise ProcessError(f"{proc.name} not ready after {timeout:.0f}s:\n{proc.log_tail()}")


def _with_fresh_udp_ports(proc: Any, start: Callable[[float], Any], timeout: float) -> Any:
    """Start; if the UDP port found free was taken before the bind, try another (3 times)."""
    chosen = proc.port
    for attempt in range(3):
        try:
            return start(timeout)
        except ProcessError as exc:
            if chosen or attempt == 2 or "already in use" not in str(exc):
                raise
            proc.port = 0
    raise AssertionError("unreachable")


@dataclass
class GatewayProcess(_Supervised):
    """``atls-gateway``: CoAP on a loopback UDP port, forwarding to the service."""

    service_url: str
    log_dir: Path
    proxy: str | None = None
    network_ca: Path | None = None
    host: str = "127.0.0.1"
    port: int = 0
    extra_args: Sequence[str] = ()
    process: ManagedProcess | None = None

    @property
    def uri(self) -> str:
        return f"coap://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> GatewayProcess:
        return _with_fresh_udp_ports(self, self._start, timeout)

    def _start(self, timeout: float) -> GatewayProcess:
        self.port = self.port or free_udp_port(self.host)
        argv = [
            _bin("atls-gateway"),
            "--service",
            self.service_url,
            "--host",
            self.host,
            "--port",
            str(self.port),
            *self.extra_args,
        ]
        if self.proxy:
            argv += ["--proxy", self.proxy]
        argv += ["--network-ca", str(self.network_ca)] if self.network_ca else []
        self.process = ManagedProcess("atls-gateway", argv, self.log_dir / "gateway.log")
        self.process.start()
        process = self.process
        return self._await_ready(lambda: wait_log(process, "gateway.started", timeout))


@dataclass
class UdpMitmdumpProcess(_Supervised):
    """mitmdump in UDP reverse mode in front of the gateway, with the CoAP policy addon."""

    target: str  # host:port of the gateway
    confdir: Path
    log_dir: Path
    policy: Path | None = None
    audit_log: Path | None = None
    host: str = "127.0.0.1"
    port: int = 0
    process: ManagedProcess | None = None

    @property
    def uri(self) -> str:
        return f"coap://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> UdpMitmdumpProcess:
        return _with_fresh_udp_ports(self, self._start, timeout)

    def _start(self, timeout: float) -> UdpMitmdumpProcess:
        from atls_policy import SCRIPT

        self.port = self.port or free_udp_port(self.host)
        argv = [
            _bin("mitmdump"),
            "--mode",
            f"reverse:udp://{self.target}@{self.host}:{self.port}",
            "--set",
            f"confdir={self.confdir}",
            "--set",
            "termlog_verbosity=info",
            "-s",
            str(SCRIPT.with_name("coap_script.py")),
        ]
        for option, value in (("atls_policy", self.policy), ("atls_audit_log", self.audit_log)):
            if value is not None:
                argv += ["--set", f"{option}={value}"]
        self.process = ManagedProcess("mitmdump-udp", argv, self.log_dir / "mitmdump-udp.log")
        self.process.start()
        process = self.process
        return self._await_ready(lambda: wait_log(process, "listening", timeout))
