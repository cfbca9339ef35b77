"""Is this HTTP message ATLS, and which kind?

The kinds use the project's one vocabulary (``atls.http_binding.Variant``):
- ``current``: ``application/atls``, or a POST to ``/.well-known/atls``;
- ``draft-00``: ``application/atls+octet-stream``, or a POST to ``/atls``;
- ``unlabelled``: another content type, but the body is exactly a sequence of
  well-formed TLS records: TLS smuggled through HTTP, which a policy may block.

Arbitrary binary is never taken for TLS: the whole body must parse as records
(version 3.x or DTLS, lengths that add up), see ``atls.records``.
"""

from __future__ import annotations

from atls.http_binding import Variant
from atls.records import looks_like_tls

CURRENT, DRAFT00, UNLABELLED = Variant.CURRENT.value, Variant.DRAFT00.value, "unlabelled"
# A smuggled flight is at least one record with a 1-byte payload.
_MIN_UNLABELLED = 6


def classify_request(
    method: str,
    path: str,
    content_type: str | None,
    body: bytes | None,
    detect_unlabelled: bool = True,
) -> str | None:
    variant = Variant.of_media_type(content_type)
    if variant is None and method.upper() == "POST":
        variant = Variant.of_path(path)
    if variant is not None:
        return variant.value
    return _unlabelled(body) if detect_unlabelled else None


def classify_response(
    content_type: str | None, body: bytes | None, detect_unlabelled: bool = True
) -> str | None:
    variant = Variant.of_media_type(content_type)
    if variant is not None:
        return variant.value
    return _unlabelled(body) if detect_unlabelled else None


def _unlabelled(body: bytes | None) -> str | None:
    if body and len(body) >= _MIN_UNLABELLED and looks_like_tls(body):
        return UNLABELLED
    return None
