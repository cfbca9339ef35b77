"""Interop peer on tlslite-ng: pure-Python TLS, no OpenSSL (interop/CONTRACT.md).

tlslite-ng drives a blocking socket; here the "socket" is the HTTP binding.
Client: what TLS writes is buffered, and when TLS wants to read, the buffer
becomes the next POST body and the answer is what it reads. Server: each
session runs TLS in a thread whose socket is fed by the POSTs of that session;
an answer goes back once TLS waits for more input. tlslite-ng does not check
certificate chains, so both roles check the peer's chain with ``cryptography``
(the contract's ``ca.pem``; the server name from ``server-name``).
Carrier: the standard library (http.client, http.server), not the project's code.
"""

from __future__ import annotations

import datetime
import http.client
import json
import os
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from tlslite import HandshakeSettings, TLSConnection, X509CertChain, parsePEMKey
from tlslite.errors import TLSAuthenticationError

LABEL = b"application-layer-tls"
COOKIE = "atls_session"
PATHS = {"/.well-known/atls": "application/atls", "/atls": "application/atls+octet-stream"}
VERSION = {"1.2": (3, 3), "1.3": (3, 4)}
UNSUPPORTED = {
    "exporter-empty-context": "tlslite-ng's keyingMaterialExporter takes no context "
    "(absent only); an empty TLS 1.2 context cannot be expressed",
    "dtls12": "tlslite-ng has no DTLS",
}
KNOWN = {
    "handshake-tls13", "handshake-tls12", "records", "exporter", "exporter-empty-context",
    "mutual-auth-missing", "wrong-anchor", "draft00", "proxy", "flight-loss", "corruption",
    "chacha20", "dtls12",
}  # fmt: skip
INNER_REQUEST = b"GET /api/hello HTTP/1.1\r\nHost: atls\r\nContent-Length: 0\r\n\r\n"
SESSION_TIMEOUT = 30.0


class CarrierError(Exception):
    """The HTTP carrier failed (retried with a fresh handshake)."""


class Refused(Exception):
    """The peer answered with a non-200 (never retried)."""


def describe(exc: BaseException) -> str:
    """An exception as one line; some tlslite-ng alerts cannot format themselves."""
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - TLSLocalAlert with a non-str message
        text = f"{getattr(exc, 'description', '')} {getattr(exc, 'message', '')!s}".strip()
    return f"{type(exc).__name__}: {text}"


def log(text: str) -> None:
    print(f"tlslite-ng {os.environ.get('ROLE', '?')}: {text}", file=sys.stderr, flush=True)


def settings_for(testcase: str) -> HandshakeSettings:
    settings = HandshakeSettings()
    low, high = "1.2", "1.3"
    if testcase in ("handshake-tls13", "exporter", "chacha20"):
        low = "1.3"
    if testcase == "handshake-tls12":
        high = "1.2"
    settings.minVersion, settings.maxVersion = VERSION[low], VERSION[high]
    if testcase == "chacha20":
        settings.cipherNames = ["chacha20-poly1305"]
    # tlslite-ng 0.8.2's compressed client Certificate (RFC 8879) is refused by
    # OpenSSL (unexpected_message): send certificates uncompressed.
    settings.certificate_compression_send = []
    return settings.validate()


class Credentials:
    """The contract's CERTS directory, read for tlslite-ng and for chain checks."""

    def __init__(self, certs: Path) -> None:
        self.anchors = x509.load_pem_x509_certificates((certs / "ca.pem").read_bytes())
        self.server_name = (certs / "server-name").read_text().strip()
        self.chain: X509CertChain | None = None
        self.key = None
        if (certs / "cert.pem").exists():
            self.chain = X509CertChain()
            self.chain.parsePemList((certs / "cert.pem").read_text())
            self.key = parsePEMKey((certs / "key.pem").read_text(), private=True)

    def _verify(self, chain: X509CertChain | None, server: bool) -> str:
        if chain is None or not chain.getNumCerts():
            raise TLSAuthenticationError("the peer sent no certificate")
        certs = [x509.load_der_x509_certificate(bytes(c.bytes)) for c in chain.x509List]
        builder = PolicyBuilder().store(Store(self.anchors))
        try:
            if server:
                name = x509.DNSName(self.server_name)
                builder.build_server_verifier(name).verify(certs[0], certs[1:])
            else:
                self._verify_client(certs)
        except (VerificationError, ValueError, TypeError, InvalidSignature) as exc:
            raise TLSAuthenticationError(f"peer certificate rejected: {exc}") from None
        return certs[0].subject.rfc4514_string()

    def _verify_client(self, certs: list[x509.Certificate]) -> None:
        """Issued by an anchor (directly or via the chain sent), within validity.

        cryptography's client verifier insists on a subjectAltName, which
        device certificates (IDevID-like: the serial in the subject) lack.
        """
        now = datetime.datetime.now(datetime.UTC)
        for cert in certs:
            if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
                raise VerificationError(f"{cert.subject.rfc4514_string()} is not valid now")
        for issued, issuer in zip(certs, certs[1:], strict=False):
            issued.verify_directly_issued_by(issuer)
        top = certs[-1]
        for anchor in self.anchors:
            try:
                top.verify_directly_issued_by(anchor)
                return
            except (ValueError, TypeError, InvalidSignature):
                continue
        raise VerificationError("the client certificate is not issued by a trusted CA")

    def check_server(self, conn: TLSConnection) -> None:
        log(f"server certificate {self._verify(conn.session.serverCertChain, True)} verified")

    def check_client(self, conn: TLSConnection) -> None:
        log(f"client certificate {self._verify(conn.session.clientCertChain, False)} verified")


def export(conn: TLSConnection) -> None:
    material = bytes(conn.keyingMaterialExporter(LABEL, 32))
    Path(os.environ["EXPORT_FILE"]).write_text(material.hex() + "\n")
    log(f"{conn.getVersionName()} {conn.getCipherName()}; exported {material.hex()[:16]}...")


def keylog(conn: TLSConnection) -> None:
    """Best effort: TLS 1.2 master secret; TLS 1.3 application and exporter secrets."""
    path = os.environ.get("KEYLOG_FILE")
    if not path:
        return
    random = bytes(conn._clientRandom).hex()
    session = conn.session
    if conn.version == (3, 4):
        lines = [
            f"CLIENT_TRAFFIC_SECRET_0 {random} {bytes(session.cl_app_secret).hex()}",
            f"SERVER_TRAFFIC_SECRET_0 {random} {bytes(session.sr_app_secret).hex()}",
            f"EXPORTER_SECRET {random} {bytes(session.exporterMasterSecret).hex()}",
        ]
    else:
        lines = [f"CLIENT_RANDOM {random} {bytes(session.masterSecret).hex()}"]
    with open(path, "a") as handle:
        handle.write("\n".join(lines) + "\n")


# -- client ---------------------------------------------------------------------


class PostSocket:
    """What tlslite-ng takes for a socket: writes buffer up, a read POSTs them."""

    def __init__(self, base_url: str, path: str, proxy: str | None) -> None:
        self.url = urlsplit(base_url)
        self.path, self.proxy = path, urlsplit(proxy) if proxy else None
        self.out, self.incoming = bytearray(), bytearray()
        self.cookie: str | None = None

    def send(self, data: bytes) -> int:
        self.out += data
        return len(data)

    sendall = send

    def close(self) -> None:
        """Nothing to close: every POST has its own connection."""

    def recv(self, size: int) -> bytes:
        if not self.incoming:
            self.incoming += self.flush()
            if not self.incoming:
                raise CarrierError("the peer answered with an empty body while TLS expects data")
        chunk = bytes(self.incoming[:size])
        del self.incoming[:size]
        return chunk

    def flush(self) -> bytes:
        """POST what TLS wrote; the answer's body is what it reads next."""
        if not self.out:
            raise CarrierError("TLS waits for data but has nothing to send")
        body, target = bytes(self.out), self.url._replace(path=self.path).geturl()
        self.out.clear()
        hop = self.proxy or self.url
        conn = http.client.HTTPConnection(hop.hostname or "", hop.port or 80, timeout=5)
        headers = {"Content-Type": PATHS[self.path]}
        if self.cookie:
            headers["Cookie"] = f"{COOKIE}={self.cookie}"
        try:
            conn.request("POST", target if self.proxy else self.path, body, headers)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise CarrierError(f"POST {target}: {type(exc).__name__}: {exc}") from None
        finally:
            conn.close()
        if response.status in (502, 503, 504):
            raise CarrierError(f"POST {target}: HTTP {response.status}")
        if response.status != 200:
            raise Refused(f"POST {target}: HTTP {response.status}: {data[:300]!r}")
        for name, value in response.getheaders():
            if name.lower() == "set-cookie" and value.startswith(COOKIE + "="):
                self.cookie = value.split(";", 1)[0].split("=", 1)[1]
        return data


def client_once(testcase: str, creds: Credentials) -> int:
    path = "/atls" if testcase == "draft00" else "/.well-known/atls"
    sock = PostSocket(os.environ["SERVER_URL"], path, os.environ.get("PROXY") or None)
    conn = TLSConnection(sock)
    conn.handshakeClientCert(
        creds.chain,
        creds.key,
        serverName=creds.server_name,
        settings=settings_for(testcase),
        checker=creds.check_server,
    )
    if sock.out:  # the last flight (Finished): the server's verdict comes back now
        sock.incoming += sock.flush()
    keylog(conn)
    export(conn)
    if testcase == "records":
        conn.write(INNER_REQUEST)
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += bytes(conn.read())
        status_line = answer.split(b"\r\n", 1)[0].decode("latin-1")
        log(f"inner GET /api/hello -> {status_line}")
        if status_line.split(" ")[1:2] != ["200"]:
            return 1
    return 0


def client(testcase: str) -> int:
    creds = Credentials(Path(os.environ["CERTS"]))
    for attempt in range(3):
        try:
            return client_once(testcase, creds)
        except CarrierError as exc:
            log(f"attempt {attempt + 1}: carrier failure: {describe(exc)}")
            time.sleep(0.2 * 2**attempt)
    log("giving up after 3 attempts")
    return 1


# -- server ---------------------------------------------------------------------


class Pipe:
    """The server session's socket: POST bodies in, TLS output back out."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.inbox, self.outbox = bytearray(), bytearray()
        self.waiting = self.finished = False
        self.error: str | None = None

    def recv(self, size: int) -> bytes:
        with self.cond:
            while not self.inbox:
                self.waiting = True
                self.cond.notify_all()
                if not self.cond.wait(SESSION_TIMEOUT):
                    return b""  # idle too long: TLS sees the connection closed
            self.waiting = False
            chunk = bytes(self.inbox[:size])
            del self.inbox[:size]
            return chunk

    def send(self, data: bytes) -> int:
        with self.cond:
            self.outbox += data
        return len(data)

    sendall = send

    def close(self) -> None:
        """TLS closed the session; the HTTP side answers with what is left."""

    def exchange(self, body: bytes) -> bytes:
        """Feed one flight, wait until TLS wants more (or ends), return its output."""
        with self.cond:
            self.inbox += body
            self.waiting = False
            self.cond.notify_all()
            deadline = time.monotonic() + 10
            while not self.finished and not (self.waiting and not self.inbox):
                if not self.cond.wait(max(0.0, deadline - time.monotonic())):
                    break
            out = bytes(self.outbox)
            self.outbox.clear()
            return out


def serve_session(pipe: Pipe, testcase: str, creds: Credentials) -> None:
    conn = TLSConnection(pipe)
    try:
        conn.handshakeServer(
            certChain=creds.chain,
            privateKey=creds.key,
            reqCert=True,
            settings=settings_for(testcase),
            checker=creds.check_client,
        )
        keylog(conn)
        export(conn)
        while True:
            request = b""
            while b"\r\n\r\n" not in request:
                data = conn.read()
                if not data:
                    return
                request += bytes(data)
            log(f"inner request {request.split(b' ', 2)[:2]}")
            body = b"hello from tlslite-ng\n"
            conn.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
                + str(len(body)).encode() + b"\r\n\r\n" + body
            )  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - the session ends; the POST says why
        pipe.error = describe(exc)
        log(f"session failed: {pipe.error}")
    finally:
        with pipe.cond:
            pipe.finished = True
            pipe.cond.notify_all()


def make_handler(testcase: str, creds: Credentials) -> type[BaseHTTPRequestHandler]:
    sessions: dict[str, Pipe] = {}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            log("http " + format % args)

        def reply(self, status: int, body: bytes, ctype: str, cookie: str | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            if cookie:
                self.send_header("Set-Cookie", f"{COOKIE}={cookie}; Path=/")
            self.end_headers()
            self.wfile.write(body)

        def problem(self, status: int, detail: str) -> None:
            doc = {"type": "urn:atls-testbed:problem:tls-alert", "title": "ATLS failure",
                   "status": status, "detail": detail}  # fmt: skip
            self.reply(status, json.dumps(doc).encode(), "application/problem+json")

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            path = self.path.split("?", 1)[0]
            if path.startswith("http"):
                path = urlsplit(path).path
            if path not in PATHS:
                return self.problem(404, f"no ATLS endpoint at {path}")
            token = None
            for part in (self.headers.get("Cookie") or "").split(";"):
                name, _, value = part.strip().partition("=")
                if name == COOKIE:
                    token = value
            new = token is None
            pipe: Pipe | None
            with lock:
                if new:
                    token = secrets.token_urlsafe(16)
                    pipe = sessions[token] = Pipe()
                    threading.Thread(
                        target=serve_session, args=(pipe, testcase, creds), daemon=True
                    ).start()
                else:
                    pipe = sessions.get(token or "")
            if pipe is None:
                return self.problem(410, "unknown or expired ATLS session")
            out = pipe.exchange(body)
            if pipe.error:
                with lock:
                    sessions.pop(token or "", None)
                return self.problem(400, f"TLS failed: {pipe.error}")
            self.reply(200, out, PATHS[path], token if new else None)

    return Handler


def server(testcase: str) -> int:
    creds = Credentials(Path(os.environ["CERTS"]))
    address = (os.environ.get("HOST", "127.0.0.1"), int(os.environ["PORT"]))
    httpd = ThreadingHTTPServer(address, make_handler(testcase, creds))
    httpd.daemon_threads = True
    import signal

    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=httpd.shutdown).start())
    log(f"listening on {address[0]}:{address[1]}")
    httpd.serve_forever()
    return 0


def main() -> int:
    role, testcase = os.environ.get("ROLE", ""), os.environ.get("TESTCASE", "")
    if testcase not in KNOWN:
        print(f"unknown test case {testcase!r}")
        return 127
    if testcase in UNSUPPORTED:
        print(UNSUPPORTED[testcase])
        return 127
    try:
        if role == "server":
            return server(testcase)
        if role == "client":
            return client(testcase)
        log(f"ROLE must be client or server, got {role!r}")
        return 1
    except Exception as exc:  # noqa: BLE001 - the contract wants exit 1 with the reason
        log(f"failed: {describe(exc)}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
