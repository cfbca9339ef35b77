"""The implementation registry (``interop/implementations.yaml``).

A third party adds an implementation with an entry here and nothing else, so
the loader checks every field and names the place of any mistake.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROLES = ("client", "server")
_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]*$")
_FIELDS = {
    "name", "roles", "command", "image", "image_command", "build", "requires", "stack",
    "openssl_based", "notes", "versions",
}  # fmt: skip


class RegistryError(ValueError):
    """The registry file is invalid; the message names the entry and the field."""


@dataclass(frozen=True)
class Implementation:
    """One implementation behind the endpoint contract."""

    name: str
    roles: tuple[str, ...]
    command: str | None = None
    image: str | None = None
    image_command: str | None = None
    build: str | None = None
    requires: tuple[str, ...] = ()
    stack: str = ""
    openssl_based: bool = False
    notes: str = ""

    def plays(self, role: str) -> bool:
        return role in self.roles

    def label(self) -> str:
        """The matrix label: a star marks OpenSSL underneath."""
        return f"{self.name}*" if self.openssl_based else self.name

    def expand(self, text: str, root: Path) -> str:
        """Expand ``{build}`` (this implementation's build folder) in a command."""
        return text.replace("{build}", str(root / "interop" / ".build" / self.name))


def _entry(raw: Any, where: str) -> Implementation:
    if not isinstance(raw, dict):
        raise RegistryError(f"{where}: an entry must be a mapping, got {type(raw).__name__}")
    unknown = set(raw) - _FIELDS
    if unknown:
        raise RegistryError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise RegistryError(f"{where}.name: {name!r} is not a name like 'my-stack' ([a-z0-9.-])")
    where = f"{where} ({name})"
    roles = raw.get("roles")
    if (
        not isinstance(roles, list)
        or not roles
        or any(r not in ROLES for r in roles)
        or len(set(roles)) != len(roles)
    ):
        raise RegistryError(f"{where}.roles: must be a non-empty list of client, server")
    for key in ("command", "image", "image_command", "build", "stack", "notes"):
        value = raw.get(key)
        if value is not None and not isinstance(value, str):
            raise RegistryError(f"{where}.{key}: must be a string")
    if not raw.get("command") and not raw.get("image"):
        raise RegistryError(f"{where}: needs a command (local engine) or an image (compose)")
    requires = raw.get("requires", [])
    if not isinstance(requires, list) or not all(isinstance(r, str) for r in requires):
        raise RegistryError(f"{where}.requires: must be a list of program names")
    openssl_based = raw.get("openssl_based", False)
    if not isinstance(openssl_based, bool):
        raise RegistryError(f"{where}.openssl_based: must be true or false")
    return Implementation(
        name=name,
        roles=tuple(roles),
        command=raw.get("command"),
        image=raw.get("image"),
        image_command=raw.get("image_command"),
        build=raw.get("build"),
        requires=tuple(requires),
        stack=str(raw.get("stack") or ""),
        openssl_based=openssl_based,
        notes=" ".join(str(raw.get("notes") or "").split()),
    )


def load_registry(path: Path) -> list[Implementation]:
    """Read and check the registry; the order of the file is the matrix order."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise RegistryError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise RegistryError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("implementations"), list):
        raise RegistryError(f"{path}: expected a mapping with an 'implementations' list")
    if data.get("version", 1) != 1:
        raise RegistryError(f"{path}: version {data.get('version')!r} unsupported (use 1)")
    found = [
        _entry(raw, f"{path.name}: implementations[{i}]")
        for i, raw in enumerate(data["implementations"])
    ]
    seen: set[str] = set()
    for impl in found:
        if impl.name in seen:
            raise RegistryError(f"{path.name}: implementation {impl.name!r} is listed twice")
        seen.add(impl.name)
    return found


def select(impls: list[Implementation], names: list[str] | None, role: str) -> list[Implementation]:
    """The implementations named (all when ``names`` is None) that play ``role``."""
    by_name = {i.name: i for i in impls}
    if names is None:
        return [i for i in impls if i.plays(role)]
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise RegistryError(
            f"unknown implementation(s) {', '.join(unknown)}; known: {', '.join(by_name)}"
        )
    wrong = [n for n in names if not by_name[n].plays(role)]
    if wrong:
        raise RegistryError(f"{', '.join(wrong)} cannot act as {role}")
    return [by_name[n] for n in names]
