"""A tiny extra interop client: Python's ``ssl`` module (MemoryBIO + SSLObject).

Used by the test that adds an implementation with a registry entry alone. It
follows interop/CONTRACT.md for the client role: handshake over POSTs with
the session cookie; the ssl module has no exporter API, so test cases that
need an export exit 127.
"""

from __future__ import annotations

import http.client
import os
import ssl
import sys
from pathlib import Path
from urllib.parse import urlsplit

VERSIONS = {
    "handshake-tls13": (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_3),
    "handshake-tls12": (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2),
    "wrong-anchor": (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3),
    "mutual-auth-missing": (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3),
}


def main() -> int:
    testcase = os.environ["TESTCASE"]
    if os.environ.get("ROLE") != "client" or testcase not in VERSIONS:
        print(f"stdlib-ssl peer: {testcase} unsupported (no exporter API in Python's ssl module)")
        return 127
    certs = Path(os.environ["CERTS"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version, context.maximum_version = VERSIONS[testcase]
    context.load_verify_locations(certs / "ca.pem")
    if (certs / "cert.pem").exists():
        context.load_cert_chain(certs / "cert.pem", certs / "key.pem")
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(
        incoming, outgoing, server_hostname=(certs / "server-name").read_text().strip()
    )
    url = urlsplit(os.environ["SERVER_URL"])
    cookie = None

    def post(body: bytes) -> bytes:
        nonlocal cookie
        conn = http.client.HTTPConnection(url.hostname or "", url.port or 80, timeout=5)
        headers = {"Content-Type": "application/atls"}
        if cookie:
            headers["Cookie"] = f"atls_session={cookie}"
        conn.request("POST", "/.well-known/atls", body, headers)
        response = conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise ConnectionError(f"HTTP {response.status}: {data[:200]!r}")
        for name, value in response.getheaders():
            if name.lower() == "set-cookie" and value.startswith("atls_session="):
                cookie = value.split(";", 1)[0].split("=", 1)[1]
        return data

    try:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                incoming.write(post(outgoing.read()))
        if outgoing.pending:  # TLS 1.3: the client's Finished
            incoming.write(post(outgoing.read()))
    except (ssl.SSLError, OSError) as exc:
        print(f"stdlib-ssl peer failed: {exc}", file=sys.stderr)
        return 1
    print(f"stdlib-ssl peer: {tls.version()} {tls.cipher()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
