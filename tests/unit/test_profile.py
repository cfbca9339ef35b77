"""The constrained profile: pinned AES-128 suites, P-256 key shares, ALPN."""

from __future__ import annotations

import dataclasses

import pytest

from atls.config import Role, TLSConfig, TLSVersion
from atls.dtls import DTLSContext, DTLSSession
from atls.keys import aead_for_suite
from atls.loopback import run_datagram_handshake, run_handshake
from atls.session import ATLSSession, TLSAlertError
from tests.conftest import client_config


@pytest.fixture(scope="module")
def server_config(pki) -> TLSConfig:
    return TLSConfig(
        Role.SERVER,
        identity=pki.service(),
        trust_anchors=pki.vendor_ca().cert_pem,
        require_client_certificate=True,
    ).with_profile("constrained")


def client_hello_size(config: TLSConfig) -> int:
    return len(ATLSSession(config.build()).initiate())


def test_p256_only_makes_a_small_client_hello(pki):
    default = client_hello_size(client_config(pki))
    constrained = client_hello_size(client_config(pki).with_profile("constrained"))
    p256 = client_hello_size(client_config(pki, groups=("P-256",)))
    # measured here: 1551 B, 344 B (P-256, every default suite), 302 B (TLS 1.2 and 1.3)
    assert default > 1400  # the hybrid post-quantum key share (X25519MLKEM768)
    assert p256 < 400 and constrained < 320
    tls13_only = client_config(pki, TLSVersion.TLS1_3).with_profile("constrained")
    assert client_hello_size(tls13_only) < 280  # 265 B: no TLS 1.2 suites and extensions


@pytest.mark.parametrize(
    ("version", "suites", "expected", "aead"),
    [
        (TLSVersion.TLS1_3, "TLS_AES_128_CCM_SHA256", "TLS_AES_128_CCM_SHA256", "AES-128-CCM"),
        (
            TLSVersion.TLS1_3,
            "TLS_AES_128_CCM_8_SHA256",
            "TLS_AES_128_CCM_8_SHA256",
            "AES-128-CCM-8",
        ),
        (TLSVersion.TLS1_2, "ECDHE-ECDSA-AES128-CCM8:@SECLEVEL=0", "ECDHE-ECDSA-AES128-CCM8", None),
        (TLSVersion.TLS1_2, "ECDHE-ECDSA-AES128-CCM", "ECDHE-ECDSA-AES128-CCM", None),
    ],
)
def test_ccm_suites_negotiated(pki, server_config, version, suites, expected, aead):
    key = "tls13_ciphersuites" if version is TLSVersion.TLS1_3 else "tls12_cipher_list"
    config = client_config(pki, version).with_profile("constrained")
    config = dataclasses.replace(config, **{key: suites})
    client, server = ATLSSession(config.build()), ATLSSession(server_config.build())
    run_handshake(client, server)
    assert client.info.cipher == server.info.cipher == expected
    assert client.info.group == "secp256r1"
    if aead:
        assert aead_for_suite(expected).name == aead


def test_constrained_profile_prefers_ccm(pki, server_config):
    client = ATLSSession(client_config(pki).with_profile("constrained").build())
    server = ATLSSession(server_config.build())
    run_handshake(client, server)
    assert server.info.cipher == "TLS_AES_128_CCM_SHA256"


def test_dtls_with_the_constrained_profile_and_ccm8(pki, server_config):
    config = dataclasses.replace(
        client_config(pki).with_profile("constrained"),
        tls12_cipher_list="ECDHE-ECDSA-AES128-CCM8:@SECLEVEL=0",
    )
    client = DTLSSession(DTLSContext(config))
    server = DTLSSession(DTLSContext(server_config))
    run_datagram_handshake(client, server)
    assert server.info.cipher == "ECDHE-ECDSA-AES128-CCM8"
    assert server.info.group == "secp256r1"


def test_alpn_settable_on_both_ends(pki, server_config):
    server_ctx = dataclasses.replace(server_config, alpn=("coap", "http/1.1")).build()
    client = ATLSSession(client_config(pki, alpn=("http/1.1", "coap")).build())
    server = ATLSSession(server_ctx)
    run_handshake(client, server)
    assert client.info.alpn == server.info.alpn == "coap"  # the server's preference
    other = ATLSSession(client_config(pki, alpn=("h2",)).build())
    run_handshake(other, ATLSSession(server_ctx))
    assert other.info.alpn is None  # no overlap: no ALPN, the handshake goes on


def test_group_mismatch_fails_and_unknown_groups_are_refused(pki, server_config):
    client = ATLSSession(client_config(pki, groups=("X25519",)).build())
    with pytest.raises(TLSAlertError):
        run_handshake(client, ATLSSession(server_config.build()))
    with pytest.raises(ValueError, match="groups"):
        client_config(pki, groups=("no-such-group",)).build()
    with pytest.raises(ValueError, match="unknown profile"):
        client_config(pki).with_profile("tiny")
