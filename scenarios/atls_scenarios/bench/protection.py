"""Key-export data protection against raw AES-128-GCM, in CPU time."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from atls.keys import AES_128_GCM, ExportedKeys, ExporterSettings
from atls.protection import ClientProtector, ServerProtector

from .measure import interleaved


def measure(quick: bool) -> dict[str, dict[str, float]]:
    """MB/s of seal + open (one request) against AES-GCM encrypt + decrypt of the same size."""
    keys = ExportedKeys(
        "TLS_AES_128_GCM_SHA256", AES_128_GCM, os.urandom(16), os.urandom(16), ExporterSettings()
    )
    out = {}
    for label, size in (("64k", 65536), ("1k", 1024), ("1m", 1 << 20)):
        data = os.urandom(size)
        aead, nonce = AESGCM(os.urandom(16)), os.urandom(12)
        client, server = ClientProtector(keys), ServerProtector(keys)

        def raw(aead: AESGCM = aead, nonce: bytes = nonce, data: bytes = data) -> None:
            aead.decrypt(nonce, aead.encrypt(nonce, data, None), None)

        def protected(
            client: ClientProtector = client, server: ServerProtector = server, data: bytes = data
        ) -> None:
            server.open_request(client.seal_request(data)[1])

        per_block = {65536: 200, 1024: 2000, 1 << 20: 20}[size] // (4 if quick else 1)
        base, ours = interleaved(raw, protected, per_block=per_block, blocks=4)
        out[label] = {
            "aesgcm_mb_s": size / base / 1e6,
            "export_mb_s": size / ours / 1e6,
            "ratio": base / ours,
        }
    return out
