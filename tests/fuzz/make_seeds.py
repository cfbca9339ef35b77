"""Write seed inputs for each fuzz target (real flights, a real voucher, bundle, policy).

Run once: ``.venv/bin/python -m tests.fuzz.make_seeds``; the seeds are committed
in ``corpus/<target>/seed-*`` beside the crash inputs kept as regressions.
"""

from __future__ import annotations

import base64
import datetime
import json

from atls.cacerts import encode_cacerts
from atls.inner_http import InnerRequest, encode_request
from atls.loopback import run_handshake
from atls.session import ATLSSession, Role, TLSConfig, TLSVersion
from atls.voucher import Voucher, sign_voucher

from .targets import CORPUS, NOW, _pki, _server_context


def main() -> None:
    pki = _pki()
    out: dict[str, dict[str, bytes]] = {
        name: {}
        for name in (
            "server_driver",
            "records",
            "observer",
            "voucher",
            "cacerts",
            "policy",
            "inner_http",
        )
    }
    for version in (TLSVersion.TLS1_2, TLSVersion.TLS1_3):
        client = ATLSSession(
            TLSConfig(
                Role.CLIENT,
                identity=pki.device("fuzz-1"),
                trust_anchors=pki.vendor_ca().cert_pem,
                server_name="atls-service",
                min_version=version,
                max_version=version,
            ).build()
        )
        flights = [f for _, f in run_handshake(client, ATLSSession(_server_context())).flights]
        tag = version.name.lower()
        for i, flight in enumerate(flights):
            out["records"][f"seed-{tag}-{i}"] = flight
            out["observer"][f"seed-{tag}-{i}"] = flight
        out["server_driver"][f"seed-{tag}-hello"] = b"\x00" + flights[0]
        if len(flights) > 2:
            out["server_driver"][f"seed-{tag}-two"] = (
                b"\x00" + flights[0] + b"\xff\x00\xff" + b"\x00" + flights[2]
            )
    nonce = base64.b64encode(b"\x00" * 16).decode()
    voucher = Voucher(
        "logged",
        "fuzz-1",
        nonce,
        NOW,
        NOW + datetime.timedelta(minutes=10),
        pki.vendor_ca().certificate,
    )
    out["voucher"]["seed-good"] = json.dumps(sign_voucher(voucher, pki.voucher_signer())).encode()
    out["cacerts"]["seed-one"] = encode_cacerts([pki.vendor_ca().certificate])
    out["policy"]["seed-rules"] = b"""rules:
  - {id: a, action: block, status: 451, match: {variant: legacy, records: invalid}}
  - {id: b, action: limit, limits: {flights_per_session: 5}}
  - {id: c, action: fault, match: {flight: [2]}, fault: {type: bitflip, seed: 7}}
default: allow
"""
    out["inner_http"]["seed-get"] = encode_request(
        InnerRequest("GET", "/api/hello", [("accept", "application/json")], b"")
    )
    out["inner_http"]["seed-post"] = encode_request(
        InnerRequest("POST", "/bootstrap/voucher", [("content-type", "application/json")], b"{}")
    )
    for target, seeds in out.items():
        folder = CORPUS / target
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in seeds.items():
            (folder / name).write_bytes(data)


if __name__ == "__main__":
    main()
