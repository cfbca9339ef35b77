"""The CA bundle as EST serves it (RFC 7030 section 4.1.3, RFC 8951).

``/cacerts`` answers ``application/pkcs7-mime; smime-type=certs-only``: a
degenerate PKCS#7 SignedData holding only certificates, base64 encoded.
Built and read with ``cryptography``'s pkcs7 module.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import warnings
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from .pki import CERT_PARSE_ERRORS

CACERTS_MEDIA_TYPE = "application/pkcs7-mime; smime-type=certs-only"
# A domain's CA bundle is a handful of certificates; far more is an attack on memory.
MAX_BUNDLE_BYTES = 256 * 1024
MAX_BUNDLE_CERTS = 64


class BundleError(ValueError):
    """The CA bundle is malformed or holds certificates nobody vouched for."""


def encode_cacerts(certificates: Sequence[x509.Certificate]) -> bytes:
    der = pkcs7.serialize_certificates(list(certificates), serialization.Encoding.DER)
    return base64.encodebytes(der)


def decode_cacerts(body: bytes) -> list[x509.Certificate]:
    if len(body) > MAX_BUNDLE_BYTES:
        raise BundleError(f"the CA bundle is larger than {MAX_BUNDLE_BYTES} bytes")
    try:
        der = base64.b64decode(b"".join(body.split()), validate=True)
    except (binascii.Error, ValueError):
        raise BundleError("the CA bundle is not base64") from None
    try:
        with warnings.catch_warnings():
            # cryptography falls back to BER with a warning (one per hostile input);
            # EST serves DER: anything else is refused
            warnings.simplefilter("error", UserWarning)
            certificates = pkcs7.load_der_pkcs7_certificates(der)
    except UserWarning:
        raise BundleError("the CA bundle is not DER (a BER encoding is refused)") from None
    except CERT_PARSE_ERRORS as exc:  # beyond ValueError: found by fuzzing
        raise BundleError(f"the CA bundle is not a PKCS#7 certs-only structure: {exc}") from None
    if not certificates:
        raise BundleError("the CA bundle holds no certificates")
    if len(certificates) > MAX_BUNDLE_CERTS:
        raise BundleError(f"the CA bundle holds more than {MAX_BUNDLE_CERTS} certificates")
    return certificates


def anchor_problem(cert: x509.Certificate, now: datetime.datetime | None = None) -> str | None:
    """Why ``cert`` cannot be a trust anchor (not a CA, not valid now), or None.

    Shared by the service (registering a domain CA) and the device (before installing).
    """
    try:
        return _anchor_problem(cert, now or datetime.datetime.now(datetime.UTC))
    except CERT_PARSE_ERRORS as exc:  # lazily parsed fields
        return f"a malformed certificate ({exc})"


def _anchor_problem(cert: x509.Certificate, now: datetime.datetime) -> str | None:
    name = cert.subject.rfc4514_string()
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return f"{name} is not a CA (no basic constraints)"
    if not constraints.ca:
        return f"{name} is not a CA (basic constraints CA:FALSE)"
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and not usage.key_cert_sign:
        return f"{name} is not a CA (key usage without keyCertSign)"
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        return (
            f"{name} is not valid now (valid {cert.not_valid_before_utc:%Y-%m-%d} to "
            f"{cert.not_valid_after_utc:%Y-%m-%d})"
        )
    return None


def vouched_anchors(
    bundle: Sequence[x509.Certificate],
    pinned: x509.Certificate,
    now: datetime.datetime | None = None,
) -> list[x509.Certificate]:
    """The bundle's certificates, if each is the pinned domain cert or issued by it.

    A bundle must contain the pinned certificate itself; anything that neither
    is it nor was issued by it was not vouched for and fails the whole bundle.
    Every anchor must be a CA (basic constraints) valid ``now``.
    """
    try:
        return _vouched(bundle, pinned, now)
    except BundleError:
        raise
    except CERT_PARSE_ERRORS as exc:  # lazily parsed fields
        raise BundleError(f"the CA bundle holds a malformed certificate: {exc}") from None


def _vouched(
    bundle: Sequence[x509.Certificate],
    pinned: x509.Certificate,
    now: datetime.datetime | None,
) -> list[x509.Certificate]:
    for cert in bundle:
        problem = anchor_problem(cert, now)
        if problem:
            raise BundleError(
                f"the CA bundle holds a certificate that cannot be an anchor: {problem}"
            )
    if pinned not in bundle:
        raise BundleError("the CA bundle does not contain the voucher's pinned domain certificate")
    for cert in bundle:
        if cert == pinned:
            continue
        try:
            cert.verify_directly_issued_by(pinned)
        except (InvalidSignature, ValueError, TypeError):
            raise BundleError(
                f"the CA bundle holds {cert.subject.rfc4514_string()}, which the voucher's pinned "
                "domain certificate did not issue"
            ) from None
    return list(bundle)
