"""Is this HTTP message ATLS, and which kind?

- ``labelled``: ``application/atls``, or a POST to ``/.well-known/atls``;
- ``legacy``: draft-00's ``application/atls+octet-stream``, or a POST to ``/atls``;
- ``unlabelled``: another content type, but the body is exactly a sequence of
  well-formed TLS records: TLS smuggled through HTTP, which a policy may block.

Arbitrary binary is never taken for TLS: the whole body must parse as records
(content type 20-23, version 3.x, lengths that add up), see ``atls.records``.
"""

from __future__ import annotations

from atls.http_binding import LEGACY_MEDIA_TYPE, LEGACY_PATH, MEDIA_TYPE, WELL_KNOWN_PATH
from atls.http_binding import media_type_of as media_type_of
from atls.records import looks_like_tls

LABELLED, LEGACY, UNLABELLED = "labelled", "legacy", "unlabelled"
# A smuggled flight is at least one record with a 1-byte payload.
_MIN_UNLABELLED = 6


def _by_label(content_type: str | None) -> str | None:
    media = media_type_of(content_type)
    return {MEDIA_TYPE: LABELLED, LEGACY_MEDIA_TYPE: LEGACY}.get(media)


def classify_request(
    method: str,
    path: str,
    content_type: str | None,
    body: bytes | None,
    detect_unlabelled: bool = True,
) -> str | None:
    label = _by_label(content_type)
    if label:
        return label
    if method.upper() == "POST":
        label = {WELL_KNOWN_PATH: LABELLED, LEGACY_PATH: LEGACY}.get(path.split("?", 1)[0])
        if label:
            return label
    return _unlabelled(body) if detect_unlabelled else None


def classify_response(
    content_type: str | None, body: bytes | None, detect_unlabelled: bool = True
) -> str | None:
    return _by_label(content_type) or (_unlabelled(body) if detect_unlabelled else None)


def _unlabelled(body: bytes | None) -> str | None:
    if body and len(body) >= _MIN_UNLABELLED and looks_like_tls(body):
        return UNLABELLED
    return None
