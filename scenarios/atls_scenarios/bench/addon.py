"""mitmdump with the ATLS addons against mitmdump without them, for ATLS flows.

The proxy is the bound, so the figure is mitmdump's CPU time per request:
one export-mode session, keep-alive, GETs over ATLS; the addons run with an
audit rule and an audit log, as a lab uses them. Both proxies run side by
side and are driven in alternating blocks.
"""

from __future__ import annotations

from pathlib import Path

from atls.config import Role, TLSConfig
from atls.pki import PKIDirectory
from atls_client.client import ATLSClient, CarrierSettings

from ..processes import MitmdumpProcess, ServiceProcess
from .measure import process_cpu

POLICY = (
    "rules:\n  - {id: watch, action: audit}\n  - {id: no-smuggling, action: block, "
    "match: {variant: unlabelled}}\ndefault: allow\n"
)


def measure(pki: PKIDirectory, root: Path, quick: bool) -> dict[str, float]:
    per_block, blocks = (40, 4) if quick else (100, 8)
    root.mkdir(parents=True, exist_ok=True)
    policy = root / "policy.yaml"
    policy.write_text(POLICY)
    config = TLSConfig(
        Role.CLIENT,
        identity=pki.device("device-0001"),
        trust_anchors=pki.vendor_ca().cert_pem,
        server_name="atls-service",
    )
    with ServiceProcess(pki.root, root / "logs") as service:
        boxes = {
            with_addon: MitmdumpProcess(
                root / f"conf-{with_addon}",
                root / "logs",
                upstream_ca=pki.vendor_ca_cert,
                policy=policy if with_addon else None,
                audit_log=root / "audit.jsonl" if with_addon else None,
                log_level="warn",
                extra_args=["--set", "flow_detail=0"],
            ).start()
            for with_addon in (False, True)
        }
        try:
            clients = {}
            for with_addon, box in boxes.items():
                carrier = CarrierSettings(proxy=box.url, network_tls_verify=False)
                client = ATLSClient(service.url, config, carrier=carrier)
                client.handshake()
                for _ in range(5):
                    client.http.get("/api/hello")
                clients[with_addon] = client
            spent = {False: 0.0, True: 0.0}
            for _ in range(blocks):
                for with_addon, client in clients.items():
                    proc = boxes[with_addon].process
                    assert proc is not None and proc.proc is not None
                    before = process_cpu(proc.proc.pid)
                    for _ in range(per_block):
                        client.http.get("/api/hello")
                    spent[with_addon] += process_cpu(proc.proc.pid) - before
            for client in clients.values():
                client.close()
        finally:
            for box in boxes.values():
                box.stop()
    calls = per_block * blocks
    return {
        "without_cpu_ms": 1000 * spent[False] / calls,
        "with_cpu_ms": 1000 * spent[True] / calls,
        "ratio": spent[False] / spent[True],
    }
