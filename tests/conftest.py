"""Shared fixtures (a test PKI and TLS configurations built from it) and the skip summary."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from atls.pki import CertificateAuthority, PKIDirectory, init_pki
from atls.session import Role, TLSConfig, TLSContext, TLSVersion

DEVICE = "device-0001"


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKIDirectory:
    return init_pki(
        tmp_path_factory.mktemp("pki"),
        device_serials=[f"device-{i:04d}" for i in range(1, 4)],
    )


@pytest.fixture(scope="session")
def rogue_ca() -> CertificateAuthority:
    """A CA nobody trusts: its certificates must be refused."""
    return CertificateAuthority.create("Rogue CA")


@pytest.fixture(scope="session")
def server_context(pki: PKIDirectory) -> TLSContext:
    return TLSConfig(
        Role.SERVER,
        identity=pki.service(),
        trust_anchors=pki.vendor_ca().cert_pem,
        require_client_certificate=True,
    ).build()


def client_config(pki: PKIDirectory, version: TLSVersion | None = None, **kw: object) -> TLSConfig:
    args: dict[str, object] = {
        "identity": pki.device(DEVICE),
        "trust_anchors": pki.vendor_ca().cert_pem,
        "server_name": "atls-service",
    }
    if version is not None:
        args["min_version"] = args["max_version"] = version
    args.update(kw)
    return TLSConfig(Role.CLIENT, **args)  # type: ignore[arg-type]


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """End with why tests were skipped, grouped: a skip should say what would run it."""
    reasons: Counter[str] = Counter()
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        reasons[reason.removeprefix("Skipped: ")] += 1
    if reasons:
        terminalreporter.section("why tests were skipped")
        for reason, count in reasons.most_common():
            terminalreporter.write_line(f"{count} skipped: {reason}")
