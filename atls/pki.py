"""Test PKI: a vendor CA, a service certificate and device identities.

Modelled on trustme: a tiny API that hands out PEM bytes, plus an idempotent
on-disk layout (``atls-testbed pki init DIR``) that the service, the client and
the scenarios share. Device certificates carry the serial number in the subject
(X.520 serialNumber), as a BRSKI IDevID does (RFC 8995 section 2.3.1).
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# The runtime identity lives in atls.identity; these names stay importable from here.
from .identity import Identity, PKIError
from .identity import device_serial as device_serial  # re-exported: its old home

DEFAULT_SERVICE_NAMES: tuple[str, ...] = ("atls-service", "localhost", "127.0.0.1", "::1")
DEFAULT_DEVICE_SERIALS: tuple[str, ...] = ("device-0001",)
_VALIDITY = datetime.timedelta(days=3650)
_BACKDATE = datetime.timedelta(hours=1)


# The extended key usage that makes a vendor-issued certificate a voucher signer
# (a MASA's signing key in BRSKI terms). A UUID-based OID (X.667, arc 2.25): the
# testbed's own, needing no registration. Devices accept vouchers only from a
# certificate that carries it, never from a device or service identity.
VOUCHER_SIGNING_EKU = x509.ObjectIdentifier("2.25.98837935688670589794229610327471572786")


# What parsing a hostile certificate (or a field of one: they are parsed lazily)
# can raise in cryptography; InvalidVersion and DuplicateExtension are no
# ValueError. Both found by fuzzing (the inputs are in tests/fuzz/corpus).
CERT_PARSE_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)


def has_usage(cert: x509.Certificate, usage: x509.ObjectIdentifier) -> bool:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return usage in eku


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


@dataclass(frozen=True)
class CertificateAuthority:
    """A self-signed root that issues server and device certificates."""

    identity: Identity

    @classmethod
    def create(cls, common_name: str, organization: str = "ATLS testbed") -> CertificateAuthority:
        key = _new_key()
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ]
        )
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        return cls(Identity(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)))

    @property
    def certificate(self) -> x509.Certificate:
        return self.identity.certificate

    @property
    def cert_pem(self) -> bytes:
        return self.identity.chain_pem

    def _issue(
        self,
        subject: x509.Name,
        *,
        sans: Sequence[x509.GeneralName],
        usage: x509.ObjectIdentifier,
        not_after: datetime.datetime | None = None,
    ) -> Identity:
        key = _new_key()
        ca_key = self.identity.private_key
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(not_after or now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return Identity(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))

    def issue_server(
        self, names: Iterable[str], not_after: datetime.datetime | None = None
    ) -> Identity:
        """A TLS server certificate; the first name becomes the CN, all are SANs."""
        names = list(names)
        if not names:
            raise ValueError("a server certificate needs at least one name")
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
        return self._issue(
            subject,
            sans=[_general_name(n) for n in names],
            usage=ExtendedKeyUsageOID.SERVER_AUTH,
            not_after=not_after,
        )

    def issue_signer(
        self, common_name: str, not_after: datetime.datetime | None = None
    ) -> Identity:
        """A signing identity (e.g. the vendor's voucher signer, a MASA in BRSKI terms)."""
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ATLS testbed"),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ]
        )
        return self._issue(subject, sans=[], usage=VOUCHER_SIGNING_EKU, not_after=not_after)

    def issue_device(self, serial: str, not_after: datetime.datetime | None = None) -> Identity:
        """A device identity (IDevID-like): the serial is the subject serialNumber."""
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ATLS testbed devices"),
                x509.NameAttribute(NameOID.SERIAL_NUMBER, serial),
                x509.NameAttribute(NameOID.COMMON_NAME, serial),
            ]
        )
        return self._issue(
            subject, sans=[], usage=ExtendedKeyUsageOID.CLIENT_AUTH, not_after=not_after
        )


@dataclass
class PKIDirectory:
    """The on-disk test PKI: ``vendor-ca.*``, ``service.*``, ``devices/<serial>.*``."""

    root: Path
    created: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    @property
    def vendor_ca_cert(self) -> Path:
        return self.root / "vendor-ca.pem"

    @property
    def vendor_ca_key(self) -> Path:
        return self.root / "vendor-ca.key"

    @property
    def service_cert(self) -> Path:
        return self.root / "service.pem"

    @property
    def service_key(self) -> Path:
        return self.root / "service.key"

    @property
    def voucher_signer_cert(self) -> Path:
        return self.root / "voucher-signer.pem"

    @property
    def voucher_signer_key(self) -> Path:
        return self.root / "voucher-signer.key"

    def voucher_signer(self) -> Identity:
        return Identity.read(self.voucher_signer_cert, self.voucher_signer_key)

    def device_cert(self, serial: str) -> Path:
        return self.root / "devices" / f"{serial}.pem"

    def device_key(self, serial: str) -> Path:
        return self.root / "devices" / f"{serial}.key"

    def vendor_ca(self) -> CertificateAuthority:
        return CertificateAuthority(Identity.read(self.vendor_ca_cert, self.vendor_ca_key))

    def service(self) -> Identity:
        return Identity.read(self.service_cert, self.service_key)

    def device(self, serial: str) -> Identity:
        return Identity.read(self.device_cert(serial), self.device_key(serial))

    def device_serials(self) -> list[str]:
        return sorted(p.stem for p in (self.root / "devices").glob("*.pem"))


def _valid_serial(serial: str) -> str:
    if not serial or any(c in serial for c in "/\\\0") or serial.startswith("."):
        raise PKIError(f"invalid device serial {serial!r}: use letters, digits, '-', '_'")
    return serial


def init_pki(
    root: Path | str,
    *,
    service_names: Sequence[str] = DEFAULT_SERVICE_NAMES,
    device_serials: Iterable[str] = DEFAULT_DEVICE_SERIALS,
) -> PKIDirectory:
    """Create what is missing under ``root``; never rewrite what exists.

    Running it twice is a no-op; running it with more serials adds only those.
    """
    pki = PKIDirectory(Path(root))
    pki.root.mkdir(parents=True, exist_ok=True)
    (pki.root / "devices").mkdir(exist_ok=True)
    if pki.vendor_ca_cert.exists() != pki.vendor_ca_key.exists():
        raise PKIError(f"{pki.root}: vendor CA certificate and key must both exist or neither")
    if not pki.vendor_ca_cert.exists():
        CertificateAuthority.create("ATLS Vendor CA").identity.write(
            pki.vendor_ca_cert, pki.vendor_ca_key
        )
        pki.created.append("vendor-ca")
    ca = pki.vendor_ca()
    if not pki.service_cert.exists():
        ca.issue_server(service_names).write(pki.service_cert, pki.service_key)
        pki.created.append("service")
    if not pki.voucher_signer_cert.exists() or not has_usage(
        pki.voucher_signer().certificate, VOUCHER_SIGNING_EKU
    ):
        # also replaces a signer from before the voucher-signing usage existed:
        # devices would refuse its vouchers
        ca.issue_signer("ATLS Voucher Signer").write(
            pki.voucher_signer_cert, pki.voucher_signer_key
        )
        pki.created.append("voucher-signer")
    for serial in device_serials:
        _valid_serial(serial)
        if not pki.device_cert(serial).exists():
            ca.issue_device(serial).write(pki.device_cert(serial), pki.device_key(serial))
            pki.created.append(f"device {serial}")
    return pki
