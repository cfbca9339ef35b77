"""Key-export data protection against raw AES-128-GCM, in CPU time."""

from __future__ import annotations

import os
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from atls import ece
from atls.keys import AES_128_GCM, ExportedKeys, ExporterSettings
from atls.protection import ClientProtector, ServerProtector

from .measure import interleaved

_SIZES = {"64k": 65536, "1k": 1024, "1m": 1 << 20}
_CALLS = {65536: 200, 1024: 2000, 1 << 20: 20}


def measure(quick: bool) -> dict[str, Any]:
    """MB/s of seal + open (one request) against AES-GCM encrypt + decrypt of the same size.

    ``sizes``: per message size; ``breakdown_64k_us``: where a 64 KiB round trip goes.
    """
    keys = ExportedKeys(
        "TLS_AES_128_GCM_SHA256", AES_128_GCM, os.urandom(16), os.urandom(16), ExporterSettings()
    )
    out: dict[str, dict[str, float]] = {}
    parts: dict[str, float] = {}
    for label, size in _SIZES.items():
        data = os.urandom(size)
        aead, nonce = AESGCM(os.urandom(16)), os.urandom(12)
        client, server = ClientProtector(keys), ServerProtector(keys)

        def raw(aead: AESGCM = aead, nonce: bytes = nonce, data: bytes = data) -> None:
            aead.decrypt(nonce, aead.encrypt(nonce, data, None), None)

        def protected(
            client: ClientProtector = client, server: ServerProtector = server, data: bytes = data
        ) -> None:
            server.open_request(client.seal_request(data)[1])

        per_block = _CALLS[size] // (4 if quick else 1)
        base, ours = interleaved(raw, protected, per_block=per_block, blocks=4)
        out[label] = {
            "aesgcm_mb_s": size / base / 1e6,
            "export_mb_s": size / ours / 1e6,
            "ratio": base / ours,
        }
        if label == "64k":
            parts = breakdown(data, base, ours, per_block)
    return {"sizes": out, "breakdown_64k_us": parts}


def breakdown(data: bytes, raw_s: float, protected_s: float, calls: int) -> dict[str, float]:
    """Where one protected round trip's CPU goes (microseconds), part by part.

    Each part is what seal + open run besides raw AES-GCM, timed alone in this
    process: RFC 8188's key schedule (an extract and two expands, both ends),
    the per-message key (one expand, both ends), and the body copies the wire
    format forces (delimiter appended, header joined on, delimiter stripped).
    "other" is the rest (Python calls, header parsing, replay window).
    """
    salt, key = os.urandom(16), os.urandom(16)
    body = data + b"\x02"

    def key_schedule() -> None:
        ece._cipher(salt, key)
        ece._cipher(salt, key)

    def message_key() -> None:
        ece.hkdf_expand_one(key, b"atls aes128gcm c2s" + bytes(8), 16)
        ece.hkdf_expand_one(key, b"atls aes128gcm c2s" + bytes(8), 16)

    def copies() -> None:
        b"".join([salt, body])
        body[:-1]
        data + b"\x02"

    parts = {"raw_aes_gcm": raw_s * 1e6}
    for name, fn in (("rfc8188_key_schedule", key_schedule), ("message_key", message_key),
                     ("body_copies", copies)):  # fmt: skip
        parts[name] = interleaved(fn, fn, per_block=calls, blocks=2)[0] * 1e6
    parts["other"] = max(0.0, protected_s * 1e6 - sum(parts.values()))
    parts["total"] = protected_s * 1e6
    return {k: round(v, 2) for k, v in parts.items()}
