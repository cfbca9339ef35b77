"""Real processes on loopback: the service (and mitmdump where a test needs it)."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from atls.http_binding import Mode, Variant
from atls.pki import PKIDirectory
from atls.session import TLSVersion
from atls_client.client import ATLSClient, CarrierSettings
from atls_scenarios.processes import MitmdumpProcess, ServiceProcess
from tests.conftest import client_config

pytestmark = pytest.mark.integration

# Small limits so floods and expiry are quick to reach; bounded by design.
LIMITED_ARGS = [
    "--max-handshakes",
    "8",
    "--max-handshakes-per-client",
    "3",
    "--handshake-ttl",
    "3",
    "--idle-ttl",
    "3",
    "--max-flight-bytes",
    "8192",
]


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="module")
def service(pki: PKIDirectory, logs: Path) -> Iterator[ServiceProcess]:
    with ServiceProcess(pki.root, logs / "service") as svc:
        yield svc
    assert svc.process and svc.process.proc
    assert svc.process.proc.returncode == 0, "the service must shut down cleanly"
    assert '"event": "service.stopped"' in svc.process.log_path.read_text()


@pytest.fixture(scope="module")
def limited_service(pki: PKIDirectory, logs: Path) -> Iterator[ServiceProcess]:
    with ServiceProcess(pki.root, logs / "limited", extra_args=LIMITED_ARGS) as svc:
        yield svc


@pytest.fixture(scope="module")
def mitm_tunnel(logs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MitmdumpProcess]:
    with MitmdumpProcess(tmp_path_factory.mktemp("mitm-tunnel"), logs, intercept=False) as m:
        yield m


@pytest.fixture(scope="module")
def mitm_intercepting(
    pki: PKIDirectory, logs: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MitmdumpProcess]:
    with MitmdumpProcess(
        tmp_path_factory.mktemp("mitm"), logs, upstream_ca=pki.vendor_ca_cert
    ) as m:
        yield m


def atls_client(
    pki: PKIDirectory,
    url: str,
    *,
    mode: Mode = Mode.EXPORT,
    version: TLSVersion | None = None,
    variant: Variant = Variant.CURRENT,
    carrier: CarrierSettings | None = None,
    **tls: object,
) -> ATLSClient:
    config = client_config(pki, version, **{"server_name": "127.0.0.1", **tls})
    return ATLSClient(
        url,
        config,
        mode=mode,
        variant=variant,
        carrier=carrier or CarrierSettings(network_tls_verify=pki.vendor_ca_cert),
    )


def raw_http(pki: PKIDirectory, local_address: str | None = None) -> httpx.Client:
    """A plain HTTP client for hostile requests (network TLS verified)."""
    context = ssl.create_default_context(cafile=str(pki.vendor_ca_cert))
    transport = httpx.HTTPTransport(verify=context, local_address=local_address)
    return httpx.Client(transport=transport, timeout=10)
