"""The device caps what it reads from the network (issue #12 item 5).

A local plain-HTTP server answers with bodies far over the cap, declared
(Content-Length) and undeclared (chunked); the device refuses them without
holding them in memory.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from atls_client.client import ATLSClient, CarrierSettings, ResponseTooLargeError
from atls_client.probe import probe
from tests.conftest import client_config

HUGE = 64 << 20  # 64 MiB offered; the cap is 1 MiB


class _Huge(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        chunked = "chunked" in self.path
        self.send_response(200)
        self.send_header("content-type", "application/atls")
        if chunked:
            self.send_header("transfer-encoding", "chunked")
        else:
            self.send_header("content-length", str(HUGE))
        self.end_headers()
        block = b"\x17" * 65536
        try:
            for _ in range(HUGE // len(block)):
                if chunked:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
                else:
                    self.wfile.write(block)
        except OSError:
            return  # the device hung up: what we want

    do_POST = do_GET = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def huge_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Huge)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize("path", ["", "/chunked"])
def test_atls_client_refuses_a_huge_response(pki, huge_server, path):
    carrier = CarrierSettings(network_tls_verify=False, max_response_bytes=1 << 20)
    client = ATLSClient(huge_server + path, client_config(pki).build(), carrier=carrier)
    with pytest.raises(ResponseTooLargeError, match="1048576"):
        client.handshake()
    assert client.handshake_attempts == 1, "a response over the cap is not retried"


@pytest.mark.parametrize("path", ["/healthz", "/chunked"])
def test_probe_refuses_a_huge_response(pki, huge_server, path):
    result = probe(huge_server + path, pki.vendor_ca().cert_pem, max_bytes=1 << 20)
    assert not result.ok
    assert "larger than 1048576 bytes" in result.detail
    assert len(result.body) <= 1 << 20
