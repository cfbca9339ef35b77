"""Per-run certificates, laid out per role exactly as interop/CONTRACT.md says.

One CA issues the server's and the client's certificates (ECDSA P-256, from
``atls.pki``); an unrelated CA is the wrong anchor. Every format a stack may
want is there: PEM, DER, PKCS#12 (password ``atls``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from atls.pki import CertificateAuthority, Identity

SERVER_NAME = "atls-service"
SERVER_NAMES = (SERVER_NAME, "127.0.0.1", "localhost")
P12_PASSWORD = b"atls"


@dataclass(frozen=True)
class RunCerts:
    """The CERTS directories of one run, by purpose."""

    server: Path
    client: Path
    client_without_cert: Path
    client_wrong_anchor: Path

    def for_client(self, has_cert: bool, wrong_anchor: bool) -> Path:
        if wrong_anchor:
            return self.client_wrong_anchor
        return self.client if has_cert else self.client_without_cert


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.write_bytes(data)
    path.chmod(mode)


def _layout(root: Path, anchor: x509.Certificate, identity: Identity | None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    pem, der = serialization.Encoding.PEM, serialization.Encoding.DER
    _write(root / "ca.pem", anchor.public_bytes(pem))
    _write(root / "ca.der", anchor.public_bytes(der))
    _write(root / "server-name", (SERVER_NAME + "\n").encode())
    if identity is not None:
        cert, key = identity.certificate, identity.private_key
        _write(root / "cert.pem", identity.chain_pem)
        _write(root / "cert.der", cert.public_bytes(der))
        _write(root / "key.pem", identity.key_pem, 0o600)
        pkcs8 = serialization.PrivateFormat.PKCS8
        _write(
            root / "key.der",
            key.private_bytes(der, pkcs8, serialization.NoEncryption()),
            0o600,
        )
        _write(
            root / "identity.p12",
            pkcs12.serialize_key_and_certificates(
                b"atls",
                key,
                cert,
                [anchor],
                serialization.BestAvailableEncryption(P12_PASSWORD),
            ),
            0o600,
        )
    return root


def make_run_certs(root: Path) -> RunCerts:
    """Create a fresh CA, server and client identities and the role directories."""
    ca = CertificateAuthority.create("ATLS Interop CA")
    other = CertificateAuthority.create("Unrelated CA", organization="Somebody else")
    server = ca.issue_server(SERVER_NAMES)
    client = ca.issue_device("interop-client")
    return RunCerts(
        server=_layout(root / "server", ca.certificate, server),
        client=_layout(root / "client", ca.certificate, client),
        client_without_cert=_layout(root / "client-nocert", ca.certificate, None),
        client_wrong_anchor=_layout(root / "client-wrong-anchor", other.certificate, client),
    )
