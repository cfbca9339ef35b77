"""Interop adapter for the project's own implementation (interop/CONTRACT.md).

server: execs the real ``atls-service --plain-http`` with a PKI directory laid
out from ``$CERTS``; client: the project's ``ATLSClient`` (httpx carrier,
pyOpenSSL memory BIOs). Exit 0 / 1 / 127 as the contract says.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from atls.http_binding import Mode, Variant
from atls.keys import DEFAULT_EXPORTER_LABEL
from atls.pki import CertificateAuthority, Identity
from atls.session import Role, TLSConfig, TLSVersion

CHACHA = "TLS_CHACHA20_POLY1305_SHA256"
UNSUPPORTED: dict[str, str] = {}
KNOWN = {
    "handshake-tls13", "handshake-tls12", "records", "exporter", "exporter-empty-context",
    "mutual-auth-missing", "wrong-anchor", "draft00", "proxy", "flight-loss", "corruption",
    "chacha20", "dtls12",
}  # fmt: skip


def versions(testcase: str) -> tuple[TLSVersion, TLSVersion]:
    """(min, max) TLS version the test case allows."""
    if testcase in ("handshake-tls13", "exporter", "chacha20"):
        return TLSVersion.TLS1_3, TLSVersion.TLS1_3
    if testcase in ("handshake-tls12", "exporter-empty-context", "dtls12"):
        return TLSVersion.TLS1_2, TLSVersion.TLS1_2
    return TLSVersion.TLS1_2, TLSVersion.TLS1_3


def _text(version: TLSVersion) -> str:
    return "1.3" if version is TLSVersion.TLS1_3 else "1.2"


def _service_pki(certs: Path) -> Path:
    """A PKI directory for ``atls-service`` built from the contract's CERTS.

    The service only needs the CA certificate (to check clients) and its own
    pair; ``init_pki`` insists on a CA key beside the certificate, so an
    unrelated key stands in for it (anything init_pki then issues is unused).
    """
    root = Path(tempfile.mkdtemp(prefix="atls-ours-pki-"))
    shutil.copy(certs / "ca.pem", root / "vendor-ca.pem")
    (root / "vendor-ca.key").write_bytes(CertificateAuthority.create("unused").identity.key_pem)
    shutil.copy(certs / "cert.pem", root / "service.pem")
    shutil.copy(certs / "key.pem", root / "service.key")
    os.chmod(root / "service.key", 0o600)
    return root


def server(testcase: str) -> int:
    low, high = versions(testcase)
    argv = [
        shutil.which("atls-service") or str(Path(sys.executable).with_name("atls-service")),
        "--pki", str(_service_pki(Path(os.environ["CERTS"]))),
        "--host", os.environ.get("HOST", "127.0.0.1"),
        "--port", os.environ["PORT"],
        "--plain-http",
        "--tls-min", _text(low), "--tls-max", _text(high),
        "--export-file", os.environ["EXPORT_FILE"],
    ]  # fmt: skip
    if os.environ.get("KEYLOG_FILE"):
        argv += ["--keylog", os.environ["KEYLOG_FILE"]]
    if testcase == "exporter-empty-context":
        argv += ["--exporter-context", "empty"]
    if testcase == "chacha20":
        argv += ["--suites", CHACHA]
    os.execv(argv[0], argv)  # SIGTERM from the runner reaches the service itself


def client(testcase: str) -> int:
    from atls_client.client import ATLSClient, CarrierSettings

    certs = Path(os.environ["CERTS"])
    low, high = versions(testcase)
    keylog_path = os.environ.get("KEYLOG_FILE")

    def keylog(line: bytes) -> None:
        if keylog_path:
            with open(keylog_path, "ab") as handle:
                handle.write(line + b"\n")

    identity = None
    if (certs / "cert.pem").exists():
        identity = Identity.read(certs / "cert.pem", certs / "key.pem")
    config = TLSConfig(
        Role.CLIENT,
        identity=identity,
        trust_anchors=(certs / "ca.pem").read_bytes(),
        server_name=(certs / "server-name").read_text().strip(),
        min_version=low,
        max_version=high,
        tls13_ciphersuites=CHACHA if testcase == "chacha20" else None,
        keylog=keylog if keylog_path else None,
    )
    atls = ATLSClient(
        os.environ["SERVER_URL"],
        config,
        mode=Mode.RECORDS,
        variant=Variant.DRAFT00 if testcase == "draft00" else Variant.CURRENT,
        carrier=CarrierSettings(proxy=os.environ.get("PROXY") or None, timeout=5.0),
        retries=2,
        dtls=testcase == "dtls12",  # DTLS 1.2 records in the bodies; the service follows
    )
    with atls:
        info = atls.handshake()
        print(f"ours client: {info.version} {info.cipher} with {info.peer_subject}, "
              f"{atls.handshake_attempts} attempt(s)")  # fmt: skip
        context = b"" if testcase == "exporter-empty-context" else None
        assert atls.binding is not None
        material = atls.binding.session.export_keying_material(DEFAULT_EXPORTER_LABEL, 32, context)
        Path(os.environ["EXPORT_FILE"]).write_text(material.hex() + "\n")
        if testcase in ("records", "dtls12"):
            answer = atls.http.get("/api/hello")
            print(f"ours client: inner GET /api/hello -> {answer.status_code} {answer.text!r}")
            if answer.status_code != 200:
                print(f"inner request answered {answer.status_code}", file=sys.stderr)
                return 1
    return 0


def main() -> int:
    role, testcase = os.environ.get("ROLE", ""), os.environ.get("TESTCASE", "")
    if testcase not in KNOWN:
        print(f"unknown test case {testcase!r}")
        return 127
    if testcase in UNSUPPORTED:
        print(UNSUPPORTED[testcase])
        return 127
    if role == "server":
        return server(testcase)
    if role != "client":
        print(f"ROLE must be client or server, got {role!r}", file=sys.stderr)
        return 1
    try:
        return client(testcase)
    except Exception as exc:  # noqa: BLE001 - the contract wants exit 1 with the reason
        print(f"ours client failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
