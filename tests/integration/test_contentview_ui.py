"""Decoded ATLS in mitmproxy's own UIs: ``mitmdump --flow-detail`` and mitmweb in Chromium.

Flows come from a real run (client -> mitmdump with the addon -> service) in
TLS 1.2 and 1.3; the saved file is then opened the way a user would. The
browser test loads mitmweb in headless Chromium, asserts the decoded text in
the rendered DOM and keeps a screenshot beside the test's temporary files.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mitmproxy import http, io

from atls.http_binding import Mode
from atls.pki import PKIDirectory
from atls.session import TLSVersion
from atls_client.client import CarrierSettings
from atls_policy import SCRIPT
from atls_policy.observe import summarize
from atls_scenarios.processes import ManagedProcess, MitmdumpProcess, free_port, wait_port
from tests.integration.conftest import atls_client

pytestmark = pytest.mark.integration

MITMWEB_TOKEN = "atls-test-token"


@pytest.fixture(scope="module")
def saved_flows(pki: PKIDirectory, service, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ui-flows")
    flows = root / "flows.mitm"
    with MitmdumpProcess(
        root / "conf", root, upstream_ca=pki.vendor_ca_cert, with_addon=True, save_flows=flows
    ) as box:
        for version in (TLSVersion.TLS1_2, TLSVersion.TLS1_3):
            carrier = CarrierSettings(proxy=box.url, network_tls_verify=False)
            with atls_client(
                pki, service.url, version=version, carrier=carrier, mode=Mode.RECORDS
            ) as client:
                client.handshake()
                assert client.http.get("/api/hello").status_code == 200
    return flows


def read_flows(path: Path) -> list[http.HTTPFlow]:
    with path.open("rb") as f:
        return [flow for flow in io.FlowReader(f).stream() if isinstance(flow, http.HTTPFlow)]


def test_mitmdump_flow_detail_shows_decoded_atls(saved_flows: Path):
    mitmdump = Path(sys.executable).with_name("mitmdump")
    out = subprocess.run(
        [str(mitmdump), "-n", "-r", str(saved_flows), "-s", str(SCRIPT), "--flow-detail", "3"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    text = out.stdout
    assert out.returncode == 0, out.stderr
    assert "ATLS message: application/atls" in text
    assert "versions offered: 1.2" in text and "versions offered: 1.3" in text
    assert "key share groups: X25519MLKEM768" in text
    assert "subject: CN=atls-service" in text  # TLS 1.2 server certificate
    assert "device-0001" in text  # TLS 1.2 shows the device's certificate too
    assert "cipher suite: TLS_AES_256_GCM_SHA384" in text
    assert "application data," in text and "unreadable" in text
    assert "0000000000 16 03" not in text  # no hex dump of ATLS bodies


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def mitmweb(saved_flows: Path, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    argv = [
        str(Path(sys.executable).with_name("mitmweb")),
        "-n",
        "-r",
        str(saved_flows),
        "-s",
        str(SCRIPT),
        "--set",
        f"web_password={MITMWEB_TOKEN}",
        "--set",
        f"web_port={port}",
        "--set",
        "web_host=127.0.0.1",
        "--set",
        "web_open_browser=false",
        "--set",
        f"confdir={tmp_path / 'conf'}",
        "--listen-port",
        str(free_port()),
    ]
    proc = ManagedProcess("mitmweb", argv, tmp_path / "mitmweb.log")
    proc.start()
    try:
        wait_port("127.0.0.1", port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


def browse(url: str, shot: Path) -> str:
    """Render ``url`` in headless Chromium: the DOM after scripts ran, and a screenshot."""
    browser = chromium()
    assert browser
    common = [
        browser,
        "--headless",
        "--no-sandbox",  # tests run as root in CI containers
        "--disable-gpu",
        f"--user-data-dir={shot.parent / 'chromium-profile'}",
        "--virtual-time-budget=10000",
        "--window-size=1400,1800",
    ]
    subprocess.run([*common, f"--screenshot={shot}", url], capture_output=True, timeout=90)
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=90)
    return dom.stdout


@pytest.mark.skipif(chromium() is None, reason="no chromium: apt-get install chromium")
def test_mitmweb_shows_decoded_atls_in_a_browser(saved_flows: Path, mitmweb: str, tmp_path: Path):
    flows = read_flows(saved_flows)
    tls12 = next(  # the TLS 1.2 server flight: its certificates are in the clear
        f for f in flows if f.response and summarize(f.response.raw_content or b"").certificates
    )
    first = flows[0]
    request_shot = tmp_path / "mitmweb-request.png"
    dom = browse(f"{mitmweb}/?token={MITMWEB_TOKEN}#/flows/{first.id}/request", request_shot)
    assert "ATLS message: application/atls" in dom, dom[-2000:]
    assert "ClientHello" in dom and "versions offered" in dom
    assert "key share groups" in dom
    assert request_shot.stat().st_size > 10_000
    response_shot = tmp_path / "mitmweb-response.png"
    dom = browse(f"{mitmweb}/?token={MITMWEB_TOKEN}#/flows/{tls12.id}/response", response_shot)
    assert "ServerHello" in dom and "subject: CN=atls-service" in dom, dom[-2000:]
    print(f"screenshots: {request_shot}, {response_shot}")
