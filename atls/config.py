"""Configuration shared by every ATLS session: roles, versions, TLS settings.

``TLSVersion`` is the project's one parser of TLS version names (the
session's settings, the CLIs and the middlebox's policy files all use it).
"""

from __future__ import annotations

import dataclasses
import enum
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .pki import Identity

if TYPE_CHECKING:
    from .session import TLSContext, TLSSessionBase


class Role(enum.Enum):
    CLIENT = "client"
    SERVER = "server"


class Mode(enum.Enum):
    """How application data travels once the handshake is done (draft 6.1).

    Fixed when a session is established: the client states it with its
    first message, and a message coded for the other mode is refused.
    """

    RECORDS = "records"  # TLS application data records, through the TLS object
    EXPORT = "export"  # protected with keys from the TLS exporter; TLS is done


class TLSVersion(enum.IntEnum):
    """Protocol versions by their wire code (ProtocolVersion, RFC 8446 / RFC 6347)."""

    TLS1_0 = 0x0301
    TLS1_1 = 0x0302
    TLS1_2 = 0x0303
    TLS1_3 = 0x0304
    DTLS1_2 = 0xFEFD
    DTLS1_3 = 0xFEFC

    @classmethod
    def parse(cls, text: str | float) -> TLSVersion:
        """'1.2', 1.3, 'TLSv1.2', 'tls1.3', 'dtls1.2' to a version."""
        key = str(text).strip().lower().replace("v", "")
        dtls = key.startswith("dtls")
        key = key.removeprefix("dtls").removeprefix("tls")
        found = _BY_LABEL.get(("dtls" if dtls else "") + key)
        if found is None:
            raise ValueError(f"unsupported TLS version {text!r}: use 1.2 or 1.3")
        return found

    @property
    def label(self) -> str:
        """'1.2', '1.3', or 'DTLS 1.2': how the project prints versions."""
        return _LABELS[self]

    @classmethod
    def label_of(cls, code: int) -> str:
        """The label of a wire code, or its hex for codes no version has."""
        try:
            return cls(code).label
        except ValueError:
            return f"0x{code:04x}"


_LABELS = {
    TLSVersion.TLS1_0: "1.0",
    TLSVersion.TLS1_1: "1.1",
    TLSVersion.TLS1_2: "1.2",
    TLSVersion.TLS1_3: "1.3",
    TLSVersion.DTLS1_2: "DTLS 1.2",
    TLSVersion.DTLS1_3: "DTLS 1.3",
}
_BY_LABEL = {
    "1.0": TLSVersion.TLS1_0,
    "1.1": TLSVersion.TLS1_1,
    "1.2": TLSVersion.TLS1_2,
    "1.3": TLSVersion.TLS1_3,
    "dtls1.2": TLSVersion.DTLS1_2,
    "dtls1.3": TLSVersion.DTLS1_3,
}
# What ATLS sessions may be configured with (older versions are only observed).
SESSION_VERSIONS = (TLSVersion.TLS1_2, TLSVersion.TLS1_3)


@dataclass(frozen=True)
class TLSConfig:
    """Settings shared by many sessions of one role.

    ``trust_anchors`` (PEM) are the only roots used to check the peer: ATLS
    deliberately ignores the system store, because the point is to pin the
    service to the vendor's anchor (and devices to their manufacturer).
    A client with no anchors must say ``verify_peer=False`` explicitly.
    """

    role: Role
    identity: Identity | None = None
    trust_anchors: bytes | None = None
    server_name: str | None = None
    require_client_certificate: bool = False
    verify_peer: bool = True
    min_version: TLSVersion = TLSVersion.TLS1_2
    max_version: TLSVersion = TLSVersion.TLS1_3
    tls13_ciphersuites: str | None = None
    tls12_cipher_list: str | None = None  # TLS 1.2 and DTLS 1.2 suites (OpenSSL cipher list)
    groups: tuple[str, ...] | None = None  # key-exchange groups, e.g. ("P-256",)
    alpn: tuple[str, ...] | None = None  # client: offered; server: accepted, best first
    # Where to append the session secrets, SSLKEYLOGFILE format (a path, or a
    # callable taking one line): lets a researcher decrypt captured ATLS records.
    keylog: str | os.PathLike[str] | Callable[[bytes], None] | None = None
    # An observer for tests and interop runs: told of each session once its
    # handshake has completed (both peers authenticated). Never needed in production.
    on_established: Callable[[TLSSessionBase], None] | None = None

    def __post_init__(self) -> None:
        for version in (self.min_version, self.max_version):
            if version not in SESSION_VERSIONS:
                raise ValueError(f"ATLS sessions use TLS 1.2 or 1.3, not {version.label}")
        if self.min_version > self.max_version:
            raise ValueError("min_version is above max_version")
        if self.role is Role.SERVER and self.identity is None:
            raise ValueError("a server needs an identity (certificate and key)")
        if self.role is Role.CLIENT and self.verify_peer and not self.trust_anchors:
            raise ValueError("a verifying client needs trust_anchors (or verify_peer=False)")
        if self.require_client_certificate and not self.trust_anchors:
            raise ValueError("requiring client certificates needs trust_anchors")
        if self.groups is not None and not self.groups:
            raise ValueError("groups: name at least one group, or leave it unset")

    def with_profile(self, name: str) -> TLSConfig:
        """These settings with a named profile's suites and groups (see ``PROFILES``)."""
        try:
            profile = PROFILES[name]
        except KeyError:
            raise ValueError(f"unknown profile {name!r}: one of {', '.join(PROFILES)}") from None
        return dataclasses.replace(self, **profile)

    def build(self) -> TLSContext:
        from .session import TLSContext  # noqa: PLC0415 - the context needs the session's callbacks

        return TLSContext(self)


# Named settings for TLSConfig.with_profile. ``constrained``: AES-128 suites
# only (CCM, CCM_8 and GCM: CCM_8 is OSCORE's default AEAD, AES-CCM-16-64-128,
# and needs @SECLEVEL=0 in OpenSSL 4.0), and P-256 as the only key-share group:
# the default hybrid post-quantum share (X25519MLKEM768) alone makes a
# ClientHello of about 1.5 KB, P-256 about 240 B (measured in the tests).
PROFILES: dict[str, dict[str, Any]] = {
    "default": {"tls13_ciphersuites": None, "tls12_cipher_list": None, "groups": None},
    "constrained": {
        "tls13_ciphersuites": "TLS_AES_128_CCM_SHA256:TLS_AES_128_GCM_SHA256:"
        "TLS_AES_128_CCM_8_SHA256",
        "tls12_cipher_list": "ECDHE-ECDSA-AES128-CCM:ECDHE-ECDSA-AES128-GCM-SHA256:"
        "ECDHE-ECDSA-AES128-CCM8:@SECLEVEL=0",
        "groups": ("P-256",),
    },
}
