"""Command-line options for TLS profiles, shared by atls-client, atls-device and atls-service.

``--profile constrained`` pins AES-128 suites and P-256 (``atls.config.PROFILES``);
``--groups``, ``--suites`` and ``--alpn`` override one setting each.
"""

from __future__ import annotations

import argparse
from typing import Any

from .config import PROFILES
from .dtls import DEFAULT_MTU

_SECLEVEL0 = "@SECLEVEL=0"


def add_profile_arguments(parser: argparse.ArgumentParser | Any) -> None:
    """Add --profile, --groups, --suites, --alpn to a parser or an argument group."""
    parser.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default="default",
        help="TLS settings by name: 'constrained' = AES-128 CCM/GCM/CCM_8 suites, P-256 only",
    )
    parser.add_argument(
        "--groups", help="key-exchange groups, colon-separated, e.g. P-256 or X25519:P-256"
    )
    parser.add_argument(
        "--suites",
        help="cipher suites, colon-separated: TLS 1.3 names (TLS_AES_128_CCM_8_SHA256) and "
        "OpenSSL TLS/DTLS 1.2 names (ECDHE-ECDSA-AES128-CCM8); CCM_8 implies @SECLEVEL=0",
    )
    parser.add_argument("--alpn", help="ALPN protocols, comma-separated, most preferred first")


def add_dtls_arguments(parser: argparse.ArgumentParser | Any) -> None:
    parser.add_argument(
        "--dtls",
        action="store_true",
        help="run the ATLS session as DTLS 1.2 (records in the HTTP bodies)",
    )
    parser.add_argument(
        "--mtu", type=int, default=DEFAULT_MTU, help=f"DTLS datagram size (default {DEFAULT_MTU})"
    )


def profile_settings(args: argparse.Namespace) -> dict[str, Any]:
    """TLSConfig fields from the parsed options (for ``dataclasses.replace``)."""
    settings = dict(PROFILES[args.profile])
    if args.groups:
        settings["groups"] = tuple(g for g in args.groups.split(":") if g)
    if args.suites:
        names = [s for s in args.suites.split(":") if s]
        tls13 = [s for s in names if s.startswith("TLS_")]
        tls12 = [s for s in names if not s.startswith("TLS_")]
        settings["tls13_ciphersuites"] = ":".join(tls13) or settings["tls13_ciphersuites"]
        if tls12:
            settings["tls12_cipher_list"] = ":".join(tls12)
        if any("CCM_8" in s or "CCM8" in s for s in names):
            current = settings["tls12_cipher_list"] or "DEFAULT"
            if _SECLEVEL0 not in current:
                settings["tls12_cipher_list"] = f"{current}:{_SECLEVEL0}"
    if args.alpn:
        settings["alpn"] = tuple(p.strip() for p in args.alpn.split(",") if p.strip())
    return settings
