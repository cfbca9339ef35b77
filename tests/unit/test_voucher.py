"""Vouchers and CA bundles: every way they can be wrong is refused with a precise reason."""

from __future__ import annotations

import base64
import copy
import datetime
import json
import os

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from atls.cacerts import BundleError, decode_cacerts, encode_cacerts, vouched_anchors
from atls.pki import CertificateAuthority
from atls.voucher import Voucher, VoucherError, check_nonce, sign_voucher, verify_voucher

# Vouchers are made and verified at this one instant: the module is imported at collection,
# which in a whole-suite run can be many minutes before a test runs (CI saw "expired").
NOW = datetime.datetime.now(datetime.UTC)


@pytest.fixture(scope="module")
def domain_ca() -> CertificateAuthority:
    return CertificateAuthority.create("Domain CA (middlebox)")


@pytest.fixture
def nonce() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def _voucher(
    domain_ca, nonce, serial="device-0001", created=NOW, lifetime=datetime.timedelta(minutes=10)
) -> Voucher:
    return Voucher("logged", serial, nonce, created, created + lifetime, domain_ca.certificate)


def _verify(pki, signed, nonce, serial="device-0001", now=None):
    return verify_voucher(
        signed,
        vendor_anchor=pki.vendor_ca().certificate,
        serial_number=serial,
        nonce=nonce,
        now=now or NOW,
    )


def test_a_good_voucher_verifies(pki, domain_ca, nonce):
    signed = sign_voucher(_voucher(domain_ca, nonce), pki.voucher_signer())
    header = json.loads(base64.urlsafe_b64decode(signed["signatures"][0]["protected"] + "=="))
    assert header["typ"] == "voucher-jws+json" and header["alg"] == "ES256"
    accepted = _verify(pki, signed, nonce)
    assert accepted.pinned_domain_cert == domain_ca.certificate
    assert accepted.serial_number == "device-0001"


def test_expired(pki, domain_ca, nonce):
    signed = sign_voucher(_voucher(domain_ca, nonce), pki.voucher_signer())
    with pytest.raises(VoucherError, match="voucher expired at"):
        _verify(pki, signed, nonce, now=NOW + datetime.timedelta(minutes=11))


def test_created_in_the_future(pki, domain_ca, nonce):
    later = NOW + datetime.timedelta(hours=1)
    signed = sign_voucher(_voucher(domain_ca, nonce, created=later), pki.voucher_signer())
    with pytest.raises(VoucherError, match="created in the future"):
        _verify(pki, signed, nonce)


def test_wrong_serial(pki, domain_ca, nonce):
    signed = sign_voucher(_voucher(domain_ca, nonce, serial="device-0002"), pki.voucher_signer())
    with pytest.raises(VoucherError, match="voucher is for serial 'device-0002'"):
        _verify(pki, signed, nonce)


def test_wrong_nonce(pki, domain_ca, nonce):
    signed = sign_voucher(_voucher(domain_ca, nonce), pki.voucher_signer())
    other = base64.b64encode(os.urandom(32)).decode()
    with pytest.raises(VoucherError, match="nonce does not match"):
        _verify(pki, signed, other)


def test_bad_signature(pki, domain_ca, nonce):
    signed = sign_voucher(_voucher(domain_ca, nonce), pki.voucher_signer())
    forged = copy.deepcopy(signed)
    payload = json.loads(base64.urlsafe_b64decode(forged["payload"] + "=="))
    payload["ietf-voucher:voucher"]["serial-number"] = "device-0001 "
    forged["payload"] = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    with pytest.raises(VoucherError, match="bad voucher signature"):
        _verify(pki, forged, nonce)


def test_signed_by_an_unknown_key(pki, domain_ca, nonce, rogue_ca):
    impostor = rogue_ca.issue_signer("Rogue Voucher Signer")
    signed = sign_voucher(_voucher(domain_ca, nonce), impostor)
    with pytest.raises(VoucherError, match="signed by an unknown key"):
        _verify(pki, signed, nonce)


def test_a_valid_signer_cannot_sign_with_another_key(pki, domain_ca, nonce, rogue_ca):
    """x5c names the genuine signer, but the signature is by another key."""
    from atls.pki import Identity

    genuine = pki.voucher_signer()
    other_key = rogue_ca.issue_signer("Other").key_pem
    mixed = Identity(genuine.chain_pem, other_key)
    signed = sign_voucher(_voucher(domain_ca, nonce), mixed)
    with pytest.raises(VoucherError, match="bad voucher signature"):
        _verify(pki, signed, nonce)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: "not a dict", "not a JWS General JSON Serialization"),
        (lambda s: {**s, "signatures": []}, "not a JWS General JSON Serialization"),
        (
            lambda s: {**s, "signatures": [{"protected": "!!", "signature": "x"}]},
            "protected header does not decode",
        ),
    ],
)
def test_malformed_documents(pki, domain_ca, nonce, mutate, message):
    signed = sign_voucher(_voucher(domain_ca, nonce), pki.voucher_signer())
    with pytest.raises(VoucherError, match=message):
        _verify(pki, mutate(signed), nonce)


def test_nonce_rules():
    with pytest.raises(VoucherError, match="not base64"):
        check_nonce("***")
    with pytest.raises(VoucherError, match="16 to 64"):
        check_nonce(base64.b64encode(b"short").decode())
    assert len(check_nonce(base64.b64encode(os.urandom(16)).decode())) == 16


def _sub_ca(parent: CertificateAuthority, name: str) -> x509.Certificate:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(parent.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(hours=1))
        .not_valid_after(NOW + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(parent.identity.private_key, hashes.SHA256())
    )


def test_bundle_round_trip_and_vouching(domain_ca):
    # a sub-CA (basic constraints CA:TRUE) issued by the pinned domain CA
    sub = _sub_ca(domain_ca, "Sub CA of the domain")
    bundle = decode_cacerts(encode_cacerts([domain_ca.certificate, sub]))
    anchors = vouched_anchors(bundle, domain_ca.certificate)
    assert set(anchors) == {domain_ca.certificate, sub}  # PKCS#7 keeps a set, not an order


def test_bundle_without_the_pinned_cert_is_refused(domain_ca, rogue_ca):
    bundle = decode_cacerts(encode_cacerts([rogue_ca.certificate]))
    with pytest.raises(BundleError, match="does not contain the voucher's pinned"):
        vouched_anchors(bundle, domain_ca.certificate)


def test_bundle_with_an_unvouched_extra_is_refused(domain_ca, rogue_ca):
    bundle = decode_cacerts(encode_cacerts([domain_ca.certificate, rogue_ca.certificate]))
    with pytest.raises(BundleError, match="did not issue"):
        vouched_anchors(bundle, domain_ca.certificate)


@pytest.mark.parametrize(
    ("body", "message"), [(b"***", "not base64"), (base64.b64encode(b"junk"), "not a PKCS#7")]
)
def test_malformed_bundles(body, message):
    with pytest.raises(BundleError, match=message):
        decode_cacerts(body)


# -- issue #12 item 3: only the designated signer may sign vouchers ------------------------


def test_a_sibling_device_cannot_sign_a_voucher(pki, domain_ca, nonce):
    """Device B's own TLS client identity (issued by the same vendor CA) signs a voucher
    for device A pinning an attacker's CA: refused, it is no voucher signer."""
    sibling = pki.device("device-0002")
    signed = sign_voucher(_voucher(domain_ca, nonce, serial="device-0001"), sibling)
    with pytest.raises(VoucherError, match="not a voucher signer"):
        _verify(pki, signed, nonce, serial="device-0001")


def test_a_service_certificate_cannot_sign_a_voucher(pki, domain_ca, nonce):
    signed = sign_voucher(_voucher(domain_ca, nonce), pki.service())
    with pytest.raises(VoucherError, match="not a voucher signer"):
        _verify(pki, signed, nonce)


def test_a_code_signing_certificate_is_no_voucher_signer(pki, domain_ca, nonce):
    from cryptography.x509.oid import ExtendedKeyUsageOID

    ca = pki.vendor_ca()
    other = ca._issue(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ATLS Voucher Signer")]),
        sans=[],
        usage=ExtendedKeyUsageOID.CODE_SIGNING,
    )
    signed = sign_voucher(_voucher(domain_ca, nonce), other)
    with pytest.raises(VoucherError, match="not a voucher signer"):
        _verify(pki, signed, nonce)


def test_a_pinned_signer_refuses_every_other_signer(pki, domain_ca, nonce):
    good = pki.voucher_signer()
    second = pki.vendor_ca().issue_signer("Another Voucher Signer")
    signed = sign_voucher(_voucher(domain_ca, nonce), second)
    assert _verify(pki, signed, nonce)  # vendor-issued with the right usage
    with pytest.raises(VoucherError, match="not the pinned voucher signer"):
        verify_voucher(
            signed,
            vendor_anchor=pki.vendor_ca().certificate,
            serial_number="device-0001",
            nonce=nonce,
            now=NOW,
            signer_pin=good.certificate,
        )
    pinned_ok = sign_voucher(_voucher(domain_ca, nonce), good)
    assert verify_voucher(
        pinned_ok,
        vendor_anchor=pki.vendor_ca().certificate,
        serial_number="device-0001",
        nonce=nonce,
        now=NOW,
        signer_pin=good.certificate,
    )


# -- issue #12 item 5: only CA certificates, valid now, become anchors ---------------------


def test_a_leaf_certificate_is_never_an_anchor(pki):
    leaf = pki.service().certificate
    with pytest.raises(BundleError, match="not a CA"):
        vouched_anchors([leaf], leaf)


def test_an_expired_domain_ca_is_never_an_anchor():
    old = CertificateAuthority.create("Old domain CA")
    cert = old.certificate
    later = cert.not_valid_after_utc + datetime.timedelta(days=1)
    with pytest.raises(BundleError, match="not valid now"):
        vouched_anchors([cert], cert, now=later)
    assert vouched_anchors([cert], cert) == [cert]


def test_a_non_ca_issued_by_the_domain_ca_is_refused(domain_ca):
    leaf = domain_ca.issue_server(["somewhere"]).certificate
    with pytest.raises(BundleError, match="not a CA"):
        vouched_anchors([domain_ca.certificate, leaf], domain_ca.certificate)


def test_decode_refuses_an_oversized_bundle(domain_ca):
    body = encode_cacerts([domain_ca.certificate])
    with pytest.raises(BundleError, match="larger than"):
        decode_cacerts(body + b"A" * (2 << 20))
