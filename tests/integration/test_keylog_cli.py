"""``--keylog`` on atls-client, atls-service and atls-device, and the researcher's recipe.

A real client talks to a real service through mitmdump saving flows; the
secrets the client logged then decrypt the inner request captured in the
saved flows (records mode, TLS 1.3), exactly as the README's recipe does.
"""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from mitmproxy import http, io

from atls.http_binding import Mode
from atls.records import ContentType, iter_records
from atls_client.bootstrap import Bootstrap, BootstrapConfig
from atls_scenarios.processes import MitmdumpProcess, ServiceProcess
from tests.unit.test_keylog import entries, hkdf_expand_label

pytestmark = pytest.mark.integration


def cli(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=60
    )


def test_client_and_service_key_logs_decrypt_a_captured_inner_request(pki, tmp_path: Path):
    client_log, service_log = tmp_path / "client.keys", tmp_path / "service.keys"
    flows = tmp_path / "flows.mitm"
    with (
        ServiceProcess(pki.root, tmp_path, extra_args=["--keylog", str(service_log)]) as service,
        MitmdumpProcess(
            tmp_path / "conf", tmp_path, upstream_ca=pki.vendor_ca_cert, save_flows=flows
        ) as box,
    ):
        done = cli(
            "atls_client.cli",
            service.url,
            "--pki", str(pki.root),
            "--server-name", "127.0.0.1",
            "--proxy", box.url,
            "--no-network-tls-verify",
            "--mode", "records",
            "--tls-version", "1.3",
            "--request", "GET /api/whoami",
            "--keylog", str(client_log),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    client, server = entries(client_log), entries(service_log)
    assert client["CLIENT_TRAFFIC_SECRET_0"] == server["CLIENT_TRAFFIC_SECRET_0"]
    assert stat.S_IMODE(client_log.stat().st_mode) == 0o600
    # The recipe: find the captured inner request, derive its key, open it.
    secret = bytes.fromhex(client["CLIENT_TRAFFIC_SECRET_0"][1])
    key, iv = hkdf_expand_label(secret, "key", 32), hkdf_expand_label(secret, "iv", 12)
    with flows.open("rb") as f:
        posts = [fl for fl in io.FlowReader(f).stream() if isinstance(fl, http.HTTPFlow)]
    # after the handshake: the inner request, then the client's close_notify
    request = posts[-2].request.raw_content or b""
    record = next(iter_records(request))
    assert record.content_type is ContentType.APPLICATION_DATA
    header = bytes([23, 3, 3]) + len(record.payload).to_bytes(2)
    inner = AESGCM(key).decrypt(iv, record.payload, header).rstrip(b"\x00")
    assert inner[-1] == ContentType.APPLICATION_DATA
    assert inner.startswith(b"GET /api/whoami HTTP/1.1\r\n")


@pytest.mark.parametrize(
    ("module", "args"),
    [
        ("atls_client.cli", ["https://127.0.0.1:1"]),
        ("atls_client.device_cli", ["bootstrap", "--service", "https://127.0.0.1:1"]),
        ("atls_service.cli", []),
    ],
)
def test_an_unwritable_key_log_is_a_usage_error(pki, tmp_path, module, args):
    store = ["--store", str(tmp_path / "store")] if "device" in module else []
    bad = tmp_path / "no-such-dir" / "keys.log"
    done = cli(module, *args, "--pki", str(pki.root), *store, "--keylog", str(bad))
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"cannot write the key log {bad}" in done.stdout + done.stderr


def test_the_device_passes_its_key_log_to_the_atls_session(pki, tmp_path):
    lines: list[bytes] = []
    config = BootstrapConfig(
        service_url="https://127.0.0.1:1",
        identity=pki.device("device-0001"),
        vendor_anchor_pem=pki.vendor_ca_cert.read_bytes(),
        store=tmp_path / "store",
        mode=Mode.RECORDS,
        keylog=lines.append,
    )
    client = Bootstrap(config)._atls_client()
    assert client.context.config.keylog == lines.append
