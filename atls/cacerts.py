"""The CA bundle as EST serves it (RFC 7030 section 4.1.3, RFC 8951).

``/cacerts`` answers ``application/pkcs7-mime; smime-type=certs-only``: a
degenerate PKCS#7 SignedData holding only certificates, base64 encoded.
Built and read with ``cryptography``'s pkcs7 module.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

CACERTS_MEDIA_TYPE = "application/pkcs7-mime; smime-type=certs-only"


class BundleError(ValueError):
    """The CA bundle is malformed or holds certificates nobody vouched for."""


def encode_cacerts(certificates: Sequence[x509.Certificate]) -> bytes:
    der = pkcs7.serialize_certificates(list(certificates), serialization.Encoding.DER)
    return base64.encodebytes(der)


def decode_cacerts(body: bytes) -> list[x509.Certificate]:
    try:
        der = base64.b64decode(b"".join(body.split()), validate=True)
    except (binascii.Error, ValueError):
        raise BundleError("the CA bundle is not base64") from None
    try:
        certificates = pkcs7.load_der_pkcs7_certificates(der)
    except ValueError as exc:
        raise BundleError(f"the CA bundle is not a PKCS#7 certs-only structure: {exc}") from None
    if not certificates:
        raise BundleError("the CA bundle holds no certificates")
    return certificates


def vouched_anchors(
    bundle: Sequence[x509.Certificate], pinned: x509.Certificate
) -> list[x509.Certificate]:
    """The bundle's certificates, if each is the pinned domain cert or issued by it.

    A bundle must contain the pinned certificate itself; anything that neither
    is it nor was issued by it was not vouched for and fails the whole bundle.
    """
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
