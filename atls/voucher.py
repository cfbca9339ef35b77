"""Vouchers (RFC 8366 fields, BRSKI RFC 8995 flow) signed as JWS.

Format: JWS General JSON Serialization (RFC 7515 section 7.2.1), as in the
JWS-voucher work (draft-ietf-anima-jws-voucher): protected header
``{"alg": "ES256", "typ": "voucher-jws+json", "x5c": [signer cert]}``, payload
``{"ietf-voucher:voucher": {...}}``. Signed and verified with ``joserfc``.

Why JWS and not CMS (RFC 8366's original format): ``cryptography`` can build
a CMS SignedData but has no API to verify one, and hand-written CMS
verification is exactly what this project avoids; joserfc is a maintained
JOSE implementation that does both.

The device trusts a voucher only if the signer certificate in ``x5c`` was
issued by its vendor anchor, is a designated voucher signer (the
voucher-signing extended key usage, not a CA; or exactly the pinned signer
certificate when the device pins one), is valid now, the signature verifies,
and the serial number, nonce and expiry are the ones it expects. A device's or
the service's own identity, though vendor-issued, can never sign a voucher.
"""

from __future__ import annotations

import base64
import datetime
import json
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from .pki import CERT_PARSE_ERRORS, VOUCHER_SIGNING_EKU, Identity, has_usage

VOUCHER_TYPE = "voucher-jws+json"
VOUCHER_MEDIA_TYPE = "application/voucher-jws+json"
_ROOT = "ietf-voucher:voucher"


class _VoucherRegistry(jws.JWSRegistry):
    """joserfc caps protected headers at 512 bytes; an x5c certificate needs more."""

    max_header_length = 8192


_REGISTRY = _VoucherRegistry(algorithms=["ES256"])
MIN_NONCE_BYTES = 16
MAX_NONCE_BYTES = 64


class VoucherError(ValueError):
    """A voucher or voucher request is not acceptable; the message says why."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        raise VoucherError(f"{what} is not base64") from None


def _time(value: datetime.datetime) -> str:
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: Any, what: str) -> datetime.datetime:
    if not isinstance(text, str):
        raise VoucherError(f"voucher has no {what}")
    try:
        parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise VoucherError(f"voucher {what} {text!r} is not a date-time") from None
    if parsed.tzinfo is None:
        raise VoucherError(f"voucher {what} {text!r} has no time zone")
    return parsed


def check_nonce(nonce: str) -> bytes:
    raw = _unb64(nonce, "nonce")
    if not MIN_NONCE_BYTES <= len(raw) <= MAX_NONCE_BYTES:
        raise VoucherError(
            f"nonce has {len(raw)} bytes; use {MIN_NONCE_BYTES} to {MAX_NONCE_BYTES}"
        )
    return raw


@dataclass(frozen=True)
class Voucher:
    assertion: str
    serial_number: str
    nonce: str
    created_on: datetime.datetime
    expires_on: datetime.datetime
    pinned_domain_cert: x509.Certificate

    def to_json(self) -> dict[str, Any]:
        der = self.pinned_domain_cert.public_bytes(serialization.Encoding.DER)
        return {
            _ROOT: {
                "assertion": self.assertion,
                "serial-number": self.serial_number,
                "nonce": self.nonce,
                "created-on": _time(self.created_on),
                "expires-on": _time(self.expires_on),
                "pinned-domain-cert": _b64(der),
            }
        }


def sign_voucher(voucher: Voucher, signer: Identity) -> dict[str, Any]:
    """The JWS General JSON Serialization of a voucher."""
    key = ECKey.import_key(signer.key_pem)
    x5c = [_b64(c.public_bytes(serialization.Encoding.DER)) for c in signer.chain]
    member: Any = {"protected": {"alg": "ES256", "typ": VOUCHER_TYPE, "x5c": x5c}}
    payload = json.dumps(voucher.to_json(), sort_keys=True).encode()
    return dict(jws.serialize_json([member], payload, key, registry=_REGISTRY))


def _check_signer_role(signer: x509.Certificate, pin: x509.Certificate | None) -> None:
    name = signer.subject.rfc4514_string()
    if pin is not None and signer != pin:
        raise VoucherError(f"voucher signed by {name}, not the pinned voucher signer")
    if not has_usage(signer, VOUCHER_SIGNING_EKU):
        raise VoucherError(
            f"{name} is not a voucher signer (no voucher-signing extended key usage): "
            "a device or service identity cannot sign vouchers"
        )
    try:
        is_ca = signer.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if is_ca:
        raise VoucherError(f"{name} is not a voucher signer (it is a CA)")


def verify_voucher(
    signed: Any,
    *,
    vendor_anchor: x509.Certificate,
    serial_number: str,
    nonce: str,
    now: datetime.datetime | None = None,
    signer_pin: x509.Certificate | None = None,
) -> Voucher:
    """Check a signed voucher against what this device asked for; return it or raise.

    ``signer_pin``: the one certificate allowed to sign (else any vendor-issued
    certificate with the voucher-signing usage). Every failure is a
    ``VoucherError``, including certificates whose fields do not parse (their
    contents are parsed lazily, so any access may raise).
    """
    try:
        return _verify_voucher(
            signed,
            vendor_anchor=vendor_anchor,
            serial_number=serial_number,
            nonce=nonce,
            now=now,
            signer_pin=signer_pin,
        )
    except VoucherError:
        raise
    except CERT_PARSE_ERRORS as exc:  # lazily parsed certificates (found by fuzzing)
        raise VoucherError(f"malformed voucher: {type(exc).__name__}: {exc}") from None
    except (KeyError, IndexError, AttributeError) as exc:  # hostile JSON shapes: refuse
        raise VoucherError(f"malformed voucher: {type(exc).__name__}: {exc}") from None


def _verify_voucher(
    signed: Any,
    *,
    vendor_anchor: x509.Certificate,
    serial_number: str,
    nonce: str,
    now: datetime.datetime | None = None,
    signer_pin: x509.Certificate | None = None,
) -> Voucher:
    now = now or datetime.datetime.now(datetime.UTC)
    if (
        not isinstance(signed, dict)
        or not isinstance(signed.get("signatures"), list)
        or len(signed["signatures"]) != 1
        or not isinstance(signed["signatures"][0], dict)
    ):
        raise VoucherError("not a JWS General JSON Serialization with one signature")
    protected_b64 = signed["signatures"][0].get("protected")
    if not isinstance(protected_b64, str):
        raise VoucherError("the JWS signature has no protected header")
    try:
        padded = protected_b64 + "=" * (-len(protected_b64) % 4)
        header = json.loads(base64.urlsafe_b64decode(padded))
    except (TypeError, ValueError):
        raise VoucherError("the JWS protected header does not decode") from None
    if not isinstance(header, dict) or header.get("typ") != VOUCHER_TYPE:
        raise VoucherError(f"JWS typ is not {VOUCHER_TYPE}")
    if header.get("alg") != "ES256":
        raise VoucherError(f"unexpected JWS alg {header.get('alg')!r} (expected ES256)")
    x5c = header.get("x5c")
    if not isinstance(x5c, list) or not x5c or not isinstance(x5c[0], str):
        raise VoucherError("the JWS header carries no signer certificate (x5c)")
    try:
        signer = x509.load_der_x509_certificate(_unb64(x5c[0], "x5c certificate"))
    except ValueError:
        raise VoucherError("the signer certificate (x5c) does not parse") from None
    try:
        signer.verify_directly_issued_by(vendor_anchor)
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise VoucherError(
            f"voucher signed by an unknown key: {signer.subject.rfc4514_string()} was not "
            f"issued by the vendor anchor ({type(exc).__name__})"
        ) from None
    _check_signer_role(signer, signer_pin)
    if not signer.not_valid_before_utc <= now <= signer.not_valid_after_utc:
        raise VoucherError("the voucher signer certificate is not valid now")
    try:
        public = ECKey.import_key(
            signer.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        document: Any = signed
        result = jws.deserialize_json(document, public, registry=_REGISTRY)
    except JoseError as exc:
        raise VoucherError(f"bad voucher signature: {exc.description or exc.error}") from None
    except (ValueError, TypeError, KeyError) as exc:
        raise VoucherError(f"malformed JWS: {exc}") from None
    try:
        body = json.loads(result.payload)[_ROOT]
    except (ValueError, KeyError, TypeError):
        raise VoucherError(f"payload is not an {_ROOT} object") from None
    if not isinstance(body, dict):
        raise VoucherError(f"payload is not an {_ROOT} object")
    if body.get("serial-number") != serial_number:
        raise VoucherError(
            f"voucher is for serial {body.get('serial-number')!r}, this device is {serial_number!r}"
        )
    if body.get("nonce") != nonce:
        raise VoucherError("voucher nonce does not match the request's nonce")
    created = _parse_time(body.get("created-on"), "created-on")
    expires = _parse_time(body.get("expires-on"), "expires-on")
    if expires <= now:
        raise VoucherError(f"voucher expired at {_time(expires)}")
    if created > now + datetime.timedelta(minutes=5):
        raise VoucherError(f"voucher created in the future ({_time(created)})")
    pinned = body.get("pinned-domain-cert")
    if not isinstance(pinned, str):
        raise VoucherError("voucher has no pinned-domain-cert")
    try:
        domain_cert = x509.load_der_x509_certificate(_unb64(pinned, "pinned-domain-cert"))
    except ValueError:
        raise VoucherError("pinned-domain-cert does not parse") from None
    return Voucher(
        assertion=str(body.get("assertion", "")),
        serial_number=serial_number,
        nonce=nonce,
        created_on=created,
        expires_on=expires,
        pinned_domain_cert=domain_cert,
    )
