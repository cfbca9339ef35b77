"""``atls-testbed demo``: start the service, do ATLS in both modes, say what happened."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from atls.http_binding import Mode
from atls.pki import init_pki
from atls.session import Role, TLSConfig
from atls_client.client import ATLSClient, CarrierSettings

from .processes import ServiceProcess


def run_demo(pki_dir: Path, report_dir: Path, say: Callable[[str], None] = print) -> int:
    pki = init_pki(pki_dir)
    created = ", ".join(pki.created) or "nothing new"
    say(f"[1/4] test PKI in {pki.root} (created: {created})")
    failures = 0
    with ServiceProcess(pki.root, report_dir) as service:
        say(f"[2/4] atls-service running at {service.url} (log: {report_dir / 'service.log'})")
        serial = pki.device_serials()[0]
        config = TLSConfig(
            Role.CLIENT,
            identity=pki.device(serial),
            trust_anchors=pki.vendor_ca().cert_pem,
        )
        carrier = CarrierSettings(network_tls_verify=pki.vendor_ca_cert)
        for step, mode in ((3, Mode.EXPORT), (4, Mode.RECORDS)):
            with ATLSClient(service.url, config, mode=mode, carrier=carrier) as client:
                started = time.perf_counter()
                info = client.handshake()
                elapsed = (time.perf_counter() - started) * 1000
                binding = client.binding
                assert binding is not None
                say(
                    f"[{step}/4] {mode.value} mode: device {serial} <-> {info.peer_subject}: "
                    f"{info.version} {info.cipher}, {binding.round_trips} round trips, "
                    f"{elapsed:.1f} ms; exporter fingerprint "
                    f"{binding.keys.fingerprint if binding.keys else '-'}"
                )
                response = client.http.get("/api/hello")
                body = response.json()
                mine = binding.keys.fingerprint if binding.keys else None
                same_keys = body.get("exporter_fingerprint") == mine
                ok = (
                    response.status_code == 200
                    and body.get("atls") is True
                    and body.get("mode") == mode.value
                    and same_keys
                )
                failures += not ok
                say(
                    f"      GET /api/hello over ATLS -> {response.status_code}: "
                    f"{body.get('message')!r}; the service saw peer {body.get('peer')}, "
                    f"same exporter fingerprint: {same_keys}"
                )
    say("demo " + ("passed" if not failures else f"FAILED ({failures} checks)"))
    return 1 if failures else 0
