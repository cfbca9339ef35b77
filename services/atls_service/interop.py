"""Interop-runner hooks for ``atls-service`` (``--export-file``, ``--keylog-file``).

For interop runs only (interop/CONTRACT.md): each established session appends
the hex of 32 bytes exported with the interop label, and the TLS secrets go to
an SSLKEYLOGFILE so a failed cell can be decrypted. The hooks are observers on
the TLS configuration, so the endpoint does not know they exist.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from pathlib import Path

from atls.keys import DEFAULT_EXPORTER_LABEL
from atls.session import ATLSSession, TLSConfig

from .app import ServiceSettings

EXPORT_LENGTH = 32
_lock = threading.Lock()


def _append(path: Path, line: bytes) -> None:
    with _lock, path.open("ab") as handle:
        handle.write(line.rstrip(b"\n") + b"\n")


@dataclass(frozen=True)
class InteropSettings(ServiceSettings):
    """ServiceSettings plus the interop observers and a TLS 1.3 suite list."""

    export_file: Path | None = None
    export_context: bytes | None = None
    keylog_file: Path | None = None
    tls13_ciphersuites: str | None = None

    def tls_config(self) -> TLSConfig:
        config = super().tls_config()
        export_file, keylog_file = self.export_file, self.keylog_file

        def on_established(session: ATLSSession) -> None:
            if export_file is not None:
                material = session.export_keying_material(
                    DEFAULT_EXPORTER_LABEL, EXPORT_LENGTH, self.export_context
                )
                _append(export_file, material.hex().encode())

        return dataclasses.replace(
            config,
            tls13_ciphersuites=self.tls13_ciphersuites or config.tls13_ciphersuites,
            keylog=(lambda line: _append(keylog_file, line)) if keylog_file else None,
            on_established=on_established if export_file else None,
        )
