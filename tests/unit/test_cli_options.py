"""Profile options shared by atls-client, atls-device and atls-service."""

from __future__ import annotations

import argparse

import pytest

from atls.cli_options import add_dtls_arguments, add_profile_arguments, profile_settings
from atls.config import PROFILES
from atls.dtls import DEFAULT_MTU


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_profile_arguments(parser)
    add_dtls_arguments(parser)
    return parser.parse_args(argv)


def test_defaults_change_nothing():
    args = _parse()
    assert profile_settings(args) == PROFILES["default"]
    assert not args.dtls and args.mtu == DEFAULT_MTU


def test_profile_and_overrides():
    settings = profile_settings(
        _parse("--profile", "constrained", "--groups", "X25519:P-256", "--alpn", "coap, h2")
    )
    assert settings["groups"] == ("X25519", "P-256")
    assert settings["alpn"] == ("coap", "h2")
    assert settings["tls13_ciphersuites"] == PROFILES["constrained"]["tls13_ciphersuites"]


@pytest.mark.parametrize(
    ("suites", "tls13", "tls12"),
    [
        ("TLS_AES_128_CCM_8_SHA256", "TLS_AES_128_CCM_8_SHA256", "DEFAULT:@SECLEVEL=0"),
        ("TLS_AES_128_GCM_SHA256", "TLS_AES_128_GCM_SHA256", None),
        ("ECDHE-ECDSA-AES128-CCM8", None, "ECDHE-ECDSA-AES128-CCM8:@SECLEVEL=0"),
        (
            "TLS_AES_128_CCM_SHA256:ECDHE-ECDSA-AES128-CCM",
            "TLS_AES_128_CCM_SHA256",
            "ECDHE-ECDSA-AES128-CCM",
        ),
    ],
)
def test_suites_split_by_version_and_ccm8_lowers_the_level(suites, tls13, tls12):
    settings = profile_settings(_parse("--suites", suites))
    assert settings["tls13_ciphersuites"] == tls13
    assert settings["tls12_cipher_list"] == tls12
