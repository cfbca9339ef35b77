"""Key export from an ATLS session (draft-00 section 7, -04 section 9).

Both ends call the TLS exporter with the ATLS label and a length of twice the
negotiated AEAD's key size; the first half is the master secret, the second
the master salt (the OSCORE split of -04). The AEAD comes from the negotiated
cipher suite, mapped to its COSE algorithm (RFC 9053) so OSCORE/COSE users get
the same algorithm TLS agreed on.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from .session import SessionStateError, TLSSessionBase

# The label in every draft's IANA section. Draft -05's source uses
# "atls-oscore"/"atls-cose" for the OSCORE/COSE exports while its IANA section
# still registers this one; we default to the registered name.
DEFAULT_EXPORTER_LABEL = "application-layer-tls"
DRAFT05_OSCORE_LABEL = "atls-oscore"
DRAFT05_COSE_LABEL = "atls-cose"


@dataclass(frozen=True)
class AEADAlgorithm:
    name: str
    key_length: int
    nonce_length: int
    tag_length: int
    cose_algorithm: int
    cose_name: str


# COSE algorithm numbers from RFC 9053 / the IANA COSE registry.
AES_128_GCM = AEADAlgorithm("AES-128-GCM", 16, 12, 16, 1, "A128GCM")
AES_256_GCM = AEADAlgorithm("AES-256-GCM", 32, 12, 16, 3, "A256GCM")
CHACHA20_POLY1305 = AEADAlgorithm("ChaCha20-Poly1305", 32, 12, 16, 24, "ChaCha20/Poly1305")
AES_128_CCM = AEADAlgorithm("AES-128-CCM", 16, 13, 16, 30, "AES-CCM-16-128-128")
AES_128_CCM_8 = AEADAlgorithm("AES-128-CCM-8", 16, 13, 8, 10, "AES-CCM-16-64-128")

# Matched against both IANA names (TLS_AES_128_GCM_SHA256) and OpenSSL's
# TLS 1.2 names (ECDHE-ECDSA-AES128-GCM-SHA256); order matters (CCM_8 first).
_SUITE_PATTERNS: tuple[tuple[re.Pattern[str], AEADAlgorithm], ...] = (
    (re.compile(r"AES_?128_?CCM_?8"), AES_128_CCM_8),
    (re.compile(r"AES_?128_?CCM"), AES_128_CCM),
    (re.compile(r"AES_?128_?GCM"), AES_128_GCM),
    (re.compile(r"AES_?256_?GCM"), AES_256_GCM),
    (re.compile(r"CHACHA20_?POLY1305"), CHACHA20_POLY1305),
)


class UnsupportedSuiteError(SessionStateError):
    """The negotiated suite has no AEAD mapping for key export."""


def aead_for_suite(cipher_suite: str) -> AEADAlgorithm:
    """The AEAD a TLS cipher suite uses, by IANA or OpenSSL name."""
    key = cipher_suite.upper().replace("-", "_")
    for pattern, aead in _SUITE_PATTERNS:
        if pattern.search(key):
            return aead
    raise UnsupportedSuiteError(f"no AEAD mapping for cipher suite {cipher_suite!r}")


@dataclass(frozen=True)
class ExporterSettings:
    """Label and context for the export.

    ``context=None`` means *absent* (portable: every checked stack supports
    it); ``b""`` means *empty*, as the drafts literally say. They differ in
    TLS 1.2 and DTLS 1.2, so both ends must agree.
    """

    label: str = DEFAULT_EXPORTER_LABEL
    context: bytes | None = None


@dataclass(frozen=True, slots=True)
class ExportedKeys:
    cipher_suite: str
    aead: AEADAlgorithm
    master_secret: bytes
    master_salt: bytes
    settings: ExporterSettings

    @property
    def fingerprint(self) -> str:
        """A short public digest both ends can print and compare."""
        digest = hashlib.sha256(b"atls-fingerprint" + self.master_secret + self.master_salt)
        return digest.hexdigest()[:16]


def export_keys(session: TLSSessionBase, settings: ExporterSettings | None = None) -> ExportedKeys:
    """Export master secret and salt sized for the negotiated suite's AEAD."""
    settings = settings or ExporterSettings()
    cipher = session.info.cipher
    aead = aead_for_suite(cipher)
    material = session.export_keying_material(settings.label, 2 * aead.key_length, settings.context)
    return ExportedKeys(
        cipher_suite=cipher,
        aead=aead,
        master_secret=material[: aead.key_length],
        master_salt=material[aead.key_length :],
        settings=settings,
    )
