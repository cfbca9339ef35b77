"""Exporter and key schedule: both ends derive equal bytes for every suite."""

from __future__ import annotations

import pytest

from atls.keys import (
    AES_128_CCM,
    AES_128_CCM_8,
    AES_128_GCM,
    AES_256_GCM,
    CHACHA20_POLY1305,
    DEFAULT_EXPORTER_LABEL,
    DRAFT05_OSCORE_LABEL,
    ExporterSettings,
    UnsupportedSuiteError,
    aead_for_suite,
    export_keys,
)
from atls.loopback import run_handshake
from atls.session import ATLSSession, Role, TLSConfig, TLSVersion

# (suite, version, AEAD): every suite this project supports.
SUITES = [
    ("TLS_AES_128_GCM_SHA256", TLSVersion.TLS1_3, AES_128_GCM),
    ("TLS_AES_256_GCM_SHA384", TLSVersion.TLS1_3, AES_256_GCM),
    ("TLS_CHACHA20_POLY1305_SHA256", TLSVersion.TLS1_3, CHACHA20_POLY1305),
    ("TLS_AES_128_CCM_SHA256", TLSVersion.TLS1_3, AES_128_CCM),
    ("TLS_AES_128_CCM_8_SHA256", TLSVersion.TLS1_3, AES_128_CCM_8),
    ("ECDHE-ECDSA-AES128-GCM-SHA256", TLSVersion.TLS1_2, AES_128_GCM),
    ("ECDHE-ECDSA-AES256-GCM-SHA384", TLSVersion.TLS1_2, AES_256_GCM),
    ("ECDHE-ECDSA-CHACHA20-POLY1305", TLSVersion.TLS1_2, CHACHA20_POLY1305),
    ("ECDHE-ECDSA-AES128-CCM", TLSVersion.TLS1_2, AES_128_CCM),
    ("ECDHE-ECDSA-AES128-CCM8", TLSVersion.TLS1_2, AES_128_CCM_8),
]


def _suite_pair(pki, suite: str, version: TLSVersion) -> tuple[ATLSSession, ATLSSession]:
    # CCM_8 is below OpenSSL's default security level: enable it explicitly.
    kw: dict[str, object] = {"min_version": version, "max_version": version}
    if version is TLSVersion.TLS1_3:
        kw.update(tls13_ciphersuites=suite, tls12_cipher_list="DEFAULT:@SECLEVEL=0")
    else:
        kw.update(tls12_cipher_list=f"{suite}:@SECLEVEL=0")
    server = TLSConfig(Role.SERVER, identity=pki.service(), **kw)  # type: ignore[arg-type]
    client = TLSConfig(
        Role.CLIENT, trust_anchors=pki.vendor_ca().cert_pem, server_name="atls-service", **kw
    )  # type: ignore[arg-type]
    c, s = ATLSSession(client.build()), ATLSSession(server.build())
    run_handshake(c, s)
    return c, s


@pytest.mark.parametrize(("suite", "version", "aead"), SUITES, ids=[s[0] for s in SUITES])
def test_both_ends_export_equal_keys_for_every_suite(pki, suite, version, aead):
    client, server = _suite_pair(pki, suite, version)
    assert client.info.cipher == suite
    for settings in (
        ExporterSettings(),
        ExporterSettings(context=b""),
        ExporterSettings(label=DRAFT05_OSCORE_LABEL),
    ):
        kc, ks = export_keys(client, settings), export_keys(server, settings)
        assert kc.aead is ks.aead is aead
        assert len(kc.master_secret) == len(kc.master_salt) == aead.key_length
        assert (kc.master_secret, kc.master_salt) == (ks.master_secret, ks.master_salt)
        assert kc.fingerprint == ks.fingerprint
    # The split is the exporter output itself, first half secret, second half salt.
    raw = client.export_keying_material(DEFAULT_EXPORTER_LABEL, 2 * aead.key_length)
    keys = export_keys(client)
    assert raw == keys.master_secret + keys.master_salt


@pytest.mark.parametrize(
    ("version", "differ"), [(TLSVersion.TLS1_2, True), (TLSVersion.TLS1_3, False)]
)
def test_absent_and_empty_context_differ_only_in_tls12(pki, version, differ):
    client, server = _suite_pair(
        pki,
        *{
            TLSVersion.TLS1_2: ("ECDHE-ECDSA-AES128-GCM-SHA256", version),
            TLSVersion.TLS1_3: ("TLS_AES_128_GCM_SHA256", version),
        }[version],
    )
    absent = export_keys(client, ExporterSettings(context=None))
    empty = export_keys(client, ExporterSettings(context=b""))
    assert (absent.master_secret != empty.master_secret) is differ
    assert export_keys(server, ExporterSettings(context=b"")).master_secret == empty.master_secret


def test_labels_give_independent_keys(pki):
    client, _ = _suite_pair(pki, "TLS_AES_128_GCM_SHA256", TLSVersion.TLS1_3)
    a = export_keys(client, ExporterSettings(label=DEFAULT_EXPORTER_LABEL))
    b = export_keys(client, ExporterSettings(label=DRAFT05_OSCORE_LABEL))
    assert a.master_secret != b.master_secret


@pytest.mark.parametrize(
    ("name", "cose"),
    [
        ("TLS_AES_128_GCM_SHA256", 1),
        ("TLS_AES_256_GCM_SHA384", 3),
        ("TLS_CHACHA20_POLY1305_SHA256", 24),
        ("TLS_AES_128_CCM_SHA256", 30),
        ("TLS_AES_128_CCM_8_SHA256", 10),
        ("ECDHE-RSA-AES128-GCM-SHA256", 1),
        ("ecdhe-ecdsa-aes128-ccm8", 10),
    ],
)
def test_suite_to_cose_mapping(name, cose):
    assert aead_for_suite(name).cose_algorithm == cose


@pytest.mark.parametrize("name", ["ECDHE-RSA-AES128-SHA", "TLS_NULL_WITH_NULL_NULL", ""])
def test_suites_without_aead_are_refused(name):
    with pytest.raises(UnsupportedSuiteError, match="no AEAD"):
        aead_for_suite(name)
