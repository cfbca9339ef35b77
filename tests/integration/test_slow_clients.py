"""Slow and oversized clients against the running service (issue #12, items 1, 2, 5).

Raw sockets on a plain-HTTP service (the limits sit below network TLS, so
they hold with it too; one test checks through TLS). Every wait is bounded:
a test waits for an answer within a deadline, it never measures time.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from atls.pki import PKIDirectory
from atls_scenarios.processes import ServiceProcess

pytestmark = pytest.mark.integration

TIMEOUTS = ["--header-timeout", "1", "--body-timeout", "1"]
DEADLINE = 8.0  # far beyond the 1 s timeouts: a hang fails, a slow machine does not


def _parsers() -> list[str]:
    try:
        import httptools  # noqa: F401
    except ImportError:
        return ["h11"]  # httptools is optional: the h11 run is the one that always happens
    return ["h11", "httptools"]


@pytest.fixture(scope="module", params=_parsers())
def plain(pki: PKIDirectory, logs: Path, request) -> Iterator[ServiceProcess]:
    """The service with small limits, once per HTTP parser that is installed."""
    args = [*TIMEOUTS, "--max-connections", "400", "--http", request.param]
    folder = logs / f"slow-{request.param}"
    with ServiceProcess(pki.root, folder, plain_http=True, extra_args=args) as svc:
        yield svc


@pytest.fixture(scope="module")
def capped(pki: PKIDirectory, logs: Path) -> Iterator[ServiceProcess]:
    args = ["--header-timeout", "6", "--body-timeout", "6", "--max-connections", "4"]
    with ServiceProcess(pki.root, logs / "capped", plain_http=True, extra_args=args) as svc:
        yield svc


def _connect(svc: ServiceProcess) -> socket.socket:
    sock = socket.create_connection((svc.host, svc.port), timeout=DEADLINE)
    return sock


def _read_answer(sock: socket.socket, deadline: float = DEADLINE) -> tuple[int, dict, bytes]:
    """Read until the server closes (or the deadline): status, headers, body."""
    sock.settimeout(0.2)
    data = b""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            break
        if not chunk:
            break
        data += chunk
    else:
        raise AssertionError(f"still open after {deadline} s; got {data[:200]!r}")
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines and lines[0].startswith("HTTP/1.1 "), data[:200]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def _problem(answer: tuple[int, dict, bytes], status: int, slug: str) -> dict:
    got, headers, body = answer
    assert got == status, (got, body)
    assert headers.get("content-type") == "application/problem+json", headers
    doc = json.loads(body)
    assert doc["type"] == f"urn:atls-testbed:problem:{slug}", doc
    assert doc["status"] == status and doc["detail"]
    return doc


def _rss_kb(svc: ServiceProcess) -> int:
    assert svc.process and svc.process.proc
    status = Path(f"/proc/{svc.process.proc.pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1])


def _request_head(path: str, **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: service"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# -- item 1: slow clients ---------------------------------------------------------------


def test_slow_chunked_body_gets_408(plain):
    sock = _connect(plain)
    sock.sendall(_request_head("/api/echo", transfer_encoding="chunked"))
    end = time.monotonic() + DEADLINE
    answer = None
    # one byte every 0.3 s: each gap is short, the whole body never ends
    while time.monotonic() < end:
        try:
            sock.sendall(b"1\r\nx\r\n")
        except OSError:
            break
        sock.settimeout(0.3)
        try:
            if sock.recv(1, socket.MSG_PEEK):
                break
        except TimeoutError:
            continue
        except OSError:
            break
    answer = _read_answer(sock)
    doc = _problem(answer, 408, "request-timeout")
    assert answer[1].get("connection") == "close"
    assert "1" in doc["detail"]


def test_short_body_gets_408(plain):
    for path, ctype in [("/api/echo", "text/plain"), ("/.well-known/atls", "application/atls")]:
        sock = _connect(plain)
        sock.sendall(_request_head(path, content_length="1000", content_type=ctype) + b"x" * 10)
        _problem(_read_answer(sock), 408, "request-timeout")


def test_slow_headers_get_408(plain):
    sock = _connect(plain)
    sock.sendall(b"POST /api/echo HTTP/1.1\r\nHost: service\r\n")
    _problem(_read_answer(sock), 408, "request-timeout")
    # and a connection that says nothing at all is closed too
    sock = _connect(plain)
    _problem(_read_answer(sock), 408, "request-timeout")


def test_slow_headers_after_a_keep_alive_request(plain):
    sock = _connect(plain)
    sock.sendall(_request_head("/api/echo", content_length="2") + b"hi")
    sock.settimeout(DEADLINE)
    first = b""
    while not first.endswith(b"\r\n\r\nhi"):  # the whole echo answer
        chunk = sock.recv(65536)
        assert chunk, first
        first += chunk
    assert first.startswith(b"HTTP/1.1 200"), first
    sock.sendall(b"GET /healthz HTTP/1.1\r\n")
    _problem(_read_answer(sock), 408, "request-timeout")


def test_connection_cap_answers_503(capped):
    held = [_connect(capped) for _ in range(4)]
    for sock in held:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # a head that never ends
    time.sleep(0.3)  # let the service accept them (a bounded settle, not a measurement)
    extra = _connect(capped)
    extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    doc = _problem(_read_answer(extra), 503, "too-many-connections")
    assert "4" in doc["detail"]
    for sock in held:
        sock.close()
    end = time.monotonic() + DEADLINE
    while True:  # the slots come back once the holders are gone
        sock = _connect(capped)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status, _, _ = _read_answer(sock)
        if status == 200 or time.monotonic() > end:
            break
        time.sleep(0.2)
    assert status == 200


def test_many_slow_clients_are_released(plain):
    """200 slow bodies: all answered 408 and closed; memory back near its baseline."""
    baseline = _rss_kb(plain)
    socks = []
    for _ in range(200):
        sock = _connect(plain)
        sock.sendall(_request_head("/api/echo", transfer_encoding="chunked") + b"4\r\nabcd\r\n")
        socks.append(sock)
    closed = 0
    for sock in socks:
        status, _, _ = _read_answer(sock)
        assert status == 408
        sock.close()
        closed += 1
    assert closed == 200
    assert _rss_kb(plain) - baseline < 20_000, "memory not released after the slow clients"


# -- item 2: bodies are streamed against their limit -------------------------------------


@pytest.mark.parametrize(
    "path", ["/api/echo", "/operator/domains/d1", "/bootstrap/voucher", "/.well-known/atls"]
)
def test_declared_oversize_refused_before_reading(plain, path, pki):
    """Refused (and the connection closed) with not one body byte sent."""
    sock = _connect(plain)
    method = "PUT" if path.startswith("/operator") else "POST"
    token = (pki.root / "operator-token").read_text().strip()
    head = _request_head(
        path,
        content_length=str(256 << 20),
        content_type="application/atls",
        authorization=f"Bearer {token}",
    )
    sock.sendall(head.replace(b"POST", method.encode(), 1))
    status, headers, body = _read_answer(sock)
    # the voucher route refuses a request from outside ATLS before anything else
    assert status == (403 if path == "/bootstrap/voucher" else 413), body
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close"
    assert body.count(b"urn:atls-testbed:problem") == 1  # one answer, nothing after it


def test_streamed_oversize_is_not_buffered(plain):
    baseline = _rss_kb(plain)
    sock = _connect(plain)
    sock.sendall(_request_head("/api/echo", transfer_encoding="chunked"))
    chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
    sent = 0
    try:
        for _ in range(1024):  # at most 64 MiB
            sock.sendall(chunk)
            sent += 1
    except OSError:
        pass
    assert sent < 1024, "the service read a 64 MiB body it refuses"
    status, _, body = _read_answer(sock)
    assert status == 413, body
    assert _rss_kb(plain) - baseline < 16_000


# -- item 5: every refusal the service controls is a problem document -----------------------


def test_trailing_slash_is_a_problem_not_a_redirect(plain):
    sock = _connect(plain)
    sock.sendall(b"GET /healthz/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    _problem(_read_answer(sock), 404, "not-found")


def test_oversized_headers_are_a_problem(plain):
    sock = _connect(plain)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n")
    _problem(_read_answer(sock), 431, "request-header-too-large")


def test_negative_content_length_is_a_problem(plain):
    sock = _connect(plain)
    sock.sendall(_request_head("/api/echo", content_length="-5"))
    _problem(_read_answer(sock), 400, "malformed-request")


def test_timeouts_hold_through_network_tls(pki, logs):
    with ServiceProcess(pki.root, logs / "slow-tls", extra_args=TIMEOUTS) as svc:
        context = ssl.create_default_context(cafile=str(pki.vendor_ca_cert))
        raw = socket.create_connection((svc.host, svc.port), timeout=DEADLINE)
        sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
        sock.sendall(_request_head("/api/echo", content_length="1000") + b"x" * 10)
        _problem(_read_answer(sock), 408, "request-timeout")
