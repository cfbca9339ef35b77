"""Service and client on loopback: both modes, both versions, both drafts, proxies."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from atls.http_binding import Mode, ServiceRefusedError, Variant
from atls.session import TLSAlertError, TLSVersion
from atls_client.client import AsyncATLSClient, CarrierError, CarrierSettings
from tests.conftest import client_config
from tests.integration.conftest import atls_client

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("variant", list(Variant), ids=lambda v: v.value)
@pytest.mark.parametrize("version", [TLSVersion.TLS1_2, TLSVersion.TLS1_3], ids=lambda v: v.name)
@pytest.mark.parametrize("mode", list(Mode), ids=lambda m: m.value)
def test_handshake_and_requests(pki, service, mode, version, variant):
    with atls_client(pki, service.url, mode=mode, version=version, variant=variant) as client:
        info = client.handshake()
        assert info.version == {"TLS1_2": "TLSv1.2", "TLS1_3": "TLSv1.3"}[version.name]
        assert client.binding and client.binding.round_trips == 2
        whoami = client.http.get("/api/whoami").json()
        assert whoami["atls"] is True and whoami["mode"] == mode.value
        assert "device-0001" in whoami["peer"]
        assert whoami["exporter_fingerprint"] == client.binding.keys.fingerprint
        payload = bytes(range(256)) * 100
        echo = client.http.post(
            "/api/echo", content=payload, headers={"content-type": "application/octet-stream"}
        )
        assert echo.status_code == 200 and echo.content == payload
        missing = client.http.get("/api/nothing-here")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
        # The ATLS endpoint is not reachable from inside a session (no nesting).
        assert client.http.post("/.well-known/atls", content=b"x").status_code == 404


def test_network_requests_are_not_atls(pki, service):
    from tests.integration.conftest import raw_http

    with raw_http(pki) as http:
        assert http.get(service.url + "/api/whoami").json() == {"atls": False}


@pytest.mark.parametrize("mode", list(Mode), ids=lambda m: m.value)
async def test_async_client_concurrent_requests(pki, service, mode):
    config = client_config(pki, server_name="127.0.0.1")
    carrier = CarrierSettings(network_tls_verify=pki.vendor_ca_cert)
    async with AsyncATLSClient(service.url, config, mode=mode, carrier=carrier) as client:
        await client.handshake()
        bodies = [f"request {i}".encode() for i in range(20)]
        responses = await asyncio.gather(
            *(client.http.post("/api/echo", content=b) for b in bodies)
        )
        assert [r.content for r in responses] == bodies


def test_repeated_handshakes_on_one_client_open_new_sessions(pki, service):
    """Regression: the carrier's cookie jar sent the old cookie with a new ClientHello."""
    with atls_client(pki, service.url) as client:
        seen = set()
        for _ in range(3):
            client.handshake()
            seen.add(client.http.get("/api/whoami").json()["session"])
        assert len(seen) == 3


def test_sessions_side_by_side_stay_independent(pki, service):
    """Several sessions side by side stay independent."""
    clients = [atls_client(pki, service.url, mode=m) for m in (Mode.RECORDS, Mode.EXPORT)]
    try:
        for c in clients:
            c.handshake()
        for _ in range(3):
            for c in clients:
                assert c.http.get("/api/hello").status_code == 200
        ids = {c.http.get("/api/whoami").json()["session"] for c in clients}
        assert len(ids) == 2
    finally:
        for c in clients:
            c.close()


def test_through_a_plain_forward_proxy(pki, service, mitm_tunnel):
    carrier = CarrierSettings(proxy=mitm_tunnel.url, network_tls_verify=pki.vendor_ca_cert)
    with atls_client(pki, service.url, carrier=carrier) as client:
        client.handshake()
        assert client.http.get("/api/whoami").json()["atls"] is True
    log = mitm_tunnel.process.log_path.read_text()  # type: ignore[union-attr]
    assert "/.well-known/atls" not in log, "a tunnel proxy must not see inside network TLS"


def test_through_an_intercepting_proxy_needs_explicit_consent(pki, service, mitm_intercepting):
    # Default: network TLS is validated, and the middlebox's CA is unknown.
    strict = CarrierSettings(proxy=mitm_intercepting.url, network_tls_verify=pki.vendor_ca_cert)
    with atls_client(pki, service.url, carrier=strict) as client:
        with pytest.raises(CarrierError, match="failed certificate validation"):
            client.handshake()
    # Explicitly unverified carrier, for ATLS only: ATLS authenticates end to end.
    lax = CarrierSettings(proxy=mitm_intercepting.url, network_tls_verify=False)
    with atls_client(pki, service.url, carrier=lax, mode=Mode.RECORDS) as client:
        info = client.handshake()
        assert info.peer_subject == "CN=atls-service"
        assert client.http.post("/api/echo", content=b"through the middlebox").content == (
            b"through the middlebox"
        )
    log = mitm_intercepting.process.log_path.read_text()  # type: ignore[union-attr]
    assert "POST https://127.0.0.1" in log and "/.well-known/atls" in log


def test_the_middlebox_cannot_impersonate_the_service(pki, service, mitm_intercepting):
    """ATLS pins the vendor anchor: the middlebox's CA does not satisfy it."""
    lax = CarrierSettings(proxy=mitm_intercepting.url, network_tls_verify=False)
    anchors = mitm_intercepting.ca_cert.read_bytes()
    with atls_client(pki, service.url, carrier=lax, trust_anchors=anchors) as client:
        with pytest.raises(TLSAlertError) as failure:
            client.handshake()
    assert failure.value.alert == "unknown_ca"


def test_plain_http_service_through_forward_proxy(pki, logs, mitm_intercepting):
    from atls_scenarios.processes import ServiceProcess

    with ServiceProcess(pki.root, logs / "plain", plain_http=True) as plain:
        carrier = CarrierSettings(proxy=mitm_intercepting.url)
        with atls_client(pki, plain.url, carrier=carrier) as client:
            client.handshake()
            assert client.http.get("/api/whoami").json()["atls"] is True


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "atls_client.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_cli_success_and_exit_codes(pki, service, mitm_intercepting):
    base = ["--pki", str(pki.root), "--server-name", "127.0.0.1"]
    ok = _cli(
        service.url,
        *base,
        "--network-ca",
        str(pki.vendor_ca_cert),
        "--json",
        "--request",
        "POST /api/echo",
        "--data",
        "hello",
    )
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    assert report["response"] == {"status": 200, "body": "hello"}
    assert report["session"]["exporter_fingerprint"]

    carrier = _cli(service.url, *base)  # system CAs: the test PKI is unknown
    assert carrier.returncode == 3 and "failed certificate validation" in carrier.stderr

    tls = _cli(
        service.url,
        "--pki",
        str(pki.root),
        "--server-name",
        "wrong.example",
        "--network-ca",
        str(pki.vendor_ca_cert),
    )
    assert tls.returncode == 4 and "bad_certificate" in tls.stderr

    refused = _cli(
        service.url,
        *base,
        "--no-network-tls-verify",
        "--proxy",
        mitm_intercepting.url.replace(str(mitm_intercepting.port), "1"),
    )
    assert refused.returncode == 3 and "via proxy" in refused.stderr

    inner = _cli(
        service.url, *base, "--network-ca", str(pki.vendor_ca_cert), "--request", "GET /api/missing"
    )
    assert inner.returncode == 6

    usage = _cli(service.url, "--pki", "/nonexistent", "--network-ca", str(pki.vendor_ca_cert))
    assert usage.returncode == 2 and "device identities" in usage.stderr


def test_cli_reports_a_refusal(pki, logs, tmp_path):
    """A middlebox that cannot reach the service answers 502: exit 5, said plainly."""
    from atls_scenarios.processes import MitmdumpProcess, ServiceProcess

    with (
        ServiceProcess(pki.root, logs / "refusal") as svc,
        MitmdumpProcess(tmp_path / "mitm", logs) as blind_mitm,
    ):  # trusts no vendor CA
        result = _cli(
            svc.url,
            "--pki",
            str(pki.root),
            "--server-name",
            "127.0.0.1",
            "--proxy",
            blind_mitm.url,
            "--no-network-tls-verify",
        )
    assert result.returncode == 5
    assert "HTTP 502" in result.stderr


def test_refusal_is_a_typed_error(pki, service):
    with atls_client(pki, service.url, variant=Variant.CURRENT) as client:
        client.base_url = service.url + "/nope"
        with pytest.raises(ServiceRefusedError) as refused:
            client.handshake()
    assert refused.value.status == 404
