"""The interop runner's hook for ``atls-service`` (``--export-file``).

For interop runs only (interop/CONTRACT.md): each established session appends
the hex of 32 bytes exported with the interop label, so the runner can compare
both ends' exports. The hook is an observer on the TLS configuration, so the
endpoint does not know it exists. (The key log and the suites are ordinary
service options: ``--keylog``, ``--suites``.)
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from pathlib import Path

from atls.keys import DEFAULT_EXPORTER_LABEL
from atls.session import TLSConfig, TLSSessionBase

from .app import ServiceSettings

EXPORT_LENGTH = 32
_lock = threading.Lock()


def _append(path: Path, line: bytes) -> None:
    with _lock, path.open("ab") as handle:
        handle.write(line.rstrip(b"\n") + b"\n")


@dataclass(frozen=True)
class InteropSettings(ServiceSettings):
    """ServiceSettings plus the export observer."""

    export_file: Path | None = None

    def tls_config(self) -> TLSConfig:
        config = super().tls_config()
        export_file, context = self.export_file, self.exporter.context

        def on_established(session: TLSSessionBase) -> None:
            if export_file is not None:
                material = session.export_keying_material(
                    DEFAULT_EXPORTER_LABEL, EXPORT_LENGTH, context
                )
                _append(export_file, material.hex().encode())

        return dataclasses.replace(config, on_established=on_established)
