"""The device's trust store, installed atomically.

Layout under the store root:

    factory.pem          anchors the device shipped with (the vendor CA); never rewritten
    current -> gen-000002
    gen-000002/anchors.pem     domain anchors delivered by the last bootstrap
    gen-000002/voucher.json    the voucher that vouched for them
    gen-000002/installed.json  when, for which serial and domain

An install writes a complete new generation in a staging directory, fsyncs
it, renames it into place, and then replaces the ``current`` symlink with
``os.replace`` (atomic on POSIX). A crash or kill at any point leaves
``current`` on a complete generation: the old one, or the new one. Staging
leftovers are ignored and cleaned up by the next install.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

CRASH_ENV = "ATLS_TRUSTSTORE_CRASH_AT"
INSTALL_STEPS = (
    "staged",
    "anchors-written",
    "voucher-written",
    "generation-renamed",
    "link-prepared",
    "link-swapped",
    "cleaned",
)
_KEEP_GENERATIONS = 2


class TrustStoreError(Exception):
    """The store is missing, unreadable or inconsistent."""


def _checkpoint(step: str) -> None:
    """Test hook: ``ATLS_TRUSTSTORE_CRASH_AT=<step>`` kills the process right here."""
    if os.environ.get(CRASH_ENV) == step:
        os._exit(137)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _pem(certs: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


@dataclass(frozen=True)
class Installed:
    generation: str
    anchors: list[x509.Certificate]
    voucher: dict[str, Any]
    metadata: dict[str, Any]


class TrustStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    @property
    def factory_path(self) -> Path:
        return self.root / "factory.pem"

    @property
    def current_link(self) -> Path:
        return self.root / "current"

    def initialize(self, factory_anchors_pem: bytes) -> None:
        """Create the store with its factory anchors, if it does not exist yet."""
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.factory_path.exists():
            x509.load_pem_x509_certificates(factory_anchors_pem)  # refuse garbage
            tmp = self.root / f".factory.{secrets.token_hex(4)}"
            _write_synced(tmp, factory_anchors_pem)
            os.replace(tmp, self.factory_path)
            _fsync_dir(self.root)

    def factory_anchors(self) -> list[x509.Certificate]:
        try:
            return x509.load_pem_x509_certificates(self.factory_path.read_bytes())
        except FileNotFoundError:
            raise TrustStoreError(f"{self.root} has no factory anchors; initialize it") from None
        except ValueError as exc:
            raise TrustStoreError(f"{self.factory_path} does not parse: {exc}") from None

    def load(self) -> Installed | None:
        """The installed generation, or None when nothing was installed yet."""
        if not self.current_link.is_symlink():
            return None
        target = self.root / os.readlink(self.current_link)
        try:
            anchors = x509.load_pem_x509_certificates((target / "anchors.pem").read_bytes())
            voucher = json.loads((target / "voucher.json").read_text())
            metadata = json.loads((target / "installed.json").read_text())
        except (OSError, ValueError) as exc:
            raise TrustStoreError(
                f"installed generation {target.name} is unreadable: {exc}"
            ) from None
        return Installed(target.name, anchors, voucher, metadata)

    def network_anchors_pem(self) -> bytes:
        """What network TLS is validated against: factory anchors plus installed ones."""
        installed = self.load()
        return _pem(self.factory_anchors() + (installed.anchors if installed else []))

    def install(
        self, anchors: Sequence[x509.Certificate], voucher: dict[str, Any], metadata: dict[str, Any]
    ) -> Installed:
        if not anchors:
            raise TrustStoreError("refusing to install an empty anchor set")
        self.factory_anchors()  # the store must exist
        generations = sorted(p.name for p in self.root.glob("gen-*"))
        number = int(generations[-1].split("-")[1]) + 1 if generations else 1
        name = f"gen-{number:06d}"
        staging = self.root / f".staging-{name}-{secrets.token_hex(4)}"
        staging.mkdir()
        _checkpoint("staged")
        _write_synced(staging / "anchors.pem", _pem(anchors))
        _checkpoint("anchors-written")
        _write_synced(staging / "voucher.json", json.dumps(voucher, indent=2).encode())
        _write_synced(
            staging / "installed.json",
            json.dumps({"installed_at": time.time(), **metadata}, indent=2).encode(),
        )
        _fsync_dir(staging)
        _checkpoint("voucher-written")
        os.rename(staging, self.root / name)
        _fsync_dir(self.root)
        _checkpoint("generation-renamed")
        link_tmp = self.root / f".current-{secrets.token_hex(4)}"
        os.symlink(name, link_tmp)
        _checkpoint("link-prepared")
        os.replace(link_tmp, self.current_link)
        _fsync_dir(self.root)
        _checkpoint("link-swapped")
        self._clean(keep=name)
        _checkpoint("cleaned")
        installed = self.load()
        assert installed is not None
        return installed

    def rollback(self, previous: Installed | None) -> str:
        """Make ``previous`` current again (None: only the factory anchors); say which.

        Atomic as an install: a new link replaces ``current`` in one rename.
        """
        if previous is None:
            self.current_link.unlink(missing_ok=True)
            _fsync_dir(self.root)
            return "the factory anchors"
        if not (self.root / previous.generation).is_dir():
            raise TrustStoreError(f"cannot roll back: {previous.generation} is gone")
        link_tmp = self.root / f".current-{secrets.token_hex(4)}"
        os.symlink(previous.generation, link_tmp)
        os.replace(link_tmp, self.current_link)
        _fsync_dir(self.root)
        return previous.generation

    def _clean(self, keep: str) -> None:
        for leftover in self.root.glob(".staging-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        for leftover in self.root.glob(".current-*"):
            leftover.unlink(missing_ok=True)
        old = sorted(p for p in self.root.glob("gen-*") if p.name != keep)
        for stale in old[: max(0, len(old) - (_KEEP_GENERATIONS - 1))]:
            shutil.rmtree(stale, ignore_errors=True)
