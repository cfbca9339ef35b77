"""Runtime identities: a certificate chain with its key, and what a peer's certificate says.

Apart from the test CA in ``atls.pki``: the service, the device and the
driver use these at run time, whatever issued the certificates.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


class PKIError(Exception):
    """The on-disk PKI is missing or inconsistent."""


@dataclass(frozen=True)
class Identity:
    """A certificate chain (leaf first) and its private key, as PEM."""

    chain_pem: bytes
    key_pem: bytes

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificates(self.chain_pem)[0]

    @property
    def chain(self) -> list[x509.Certificate]:
        return x509.load_pem_x509_certificates(self.chain_pem)

    @property
    def private_key(self) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self.key_pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key

    def write(self, cert_path: Path, key_path: Path) -> None:
        write_atomic(cert_path, self.chain_pem, 0o644)
        write_atomic(key_path, self.key_pem, 0o600)

    @classmethod
    def read(cls, cert_path: Path, key_path: Path) -> Identity:
        try:
            return cls(cert_path.read_bytes(), key_path.read_bytes())
        except FileNotFoundError as exc:
            raise PKIError(f"missing PKI file {exc.filename}") from exc


def device_serial(certificate: x509.Certificate) -> str | None:
    """The serial number a device certificate claims, or None."""
    attrs = certificate.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    if not attrs:
        return None
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode()


def peer_identity(certificate: x509.Certificate | None) -> str | None:
    """Who a peer is, for per-device accounting: its serial number, else its subject."""
    if certificate is None:
        return None
    try:
        return device_serial(certificate) or certificate.subject.rfc4514_string()
    except ValueError:  # a subject that does not decode: count it by fingerprint
        return certificate.fingerprint(hashes.SHA256()).hex()


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
