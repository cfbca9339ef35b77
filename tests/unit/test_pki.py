"""The test PKI: idempotent, complete, and usable by TLS."""

from __future__ import annotations

import stat

import pytest

from atls.pki import PKIError, device_serial, init_pki


def test_init_is_idempotent_and_adds_only_what_is_missing(tmp_path):
    first = init_pki(tmp_path, device_serials=["a-1"])
    assert first.created == ["vendor-ca", "service", "voucher-signer", "device a-1"]
    before = first.vendor_ca_cert.read_bytes(), first.device_cert("a-1").read_bytes()
    again = init_pki(tmp_path, device_serials=["a-1", "b-2"])
    assert again.created == ["device b-2"]
    assert (again.vendor_ca_cert.read_bytes(), again.device_cert("a-1").read_bytes()) == before
    assert again.device_serials() == ["a-1", "b-2"]


def test_files_and_modes(tmp_path):
    pki = init_pki(tmp_path)
    assert stat.S_IMODE(pki.service_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(pki.device_key("device-0001").stat().st_mode) == 0o600
    assert device_serial(pki.device("device-0001").certificate) == "device-0001"
    assert device_serial(pki.service().certificate) is None
    ca = pki.vendor_ca().certificate
    assert pki.service().certificate.issuer == ca.subject


def test_bad_serial_and_half_ca_are_refused(tmp_path):
    with pytest.raises(PKIError, match="invalid device serial"):
        init_pki(tmp_path, device_serials=["../escape"])
    (tmp_path / "vendor-ca.key").unlink()
    with pytest.raises(PKIError, match="both exist"):
        init_pki(tmp_path)


def test_missing_files_say_which(tmp_path):
    pki = init_pki(tmp_path)
    with pytest.raises(PKIError, match="nobody.pem"):
        pki.device("nobody")
