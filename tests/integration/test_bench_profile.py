"""`bench --profile`: the service profiles itself and the bench sums its CPU by component."""

from __future__ import annotations

import json
from pathlib import Path

from atls_scenarios.bench.run import run


def test_profile_sums_the_service_cpu_by_component(tmp_path: Path):
    lines: list[str] = []
    run_dir = run(tmp_path, quick=True, only={"network"}, say=lines.append, profile=True)
    document = json.loads((run_dir / "bench.json").read_text())
    shares = document["service_profile_ms_per_handshake"]
    # the service's own TLS handshakes and its HTTP stack both show up, by name
    assert shares["openssl_handshake"] > 0 and shares["uvicorn_http"] > 0
    assert "startup" not in shares
    assert "SSL_do_handshake" in (run_dir / "service-profile.txt").read_text()
    assert (run_dir / "service.prof").stat().st_size > 0
    assert any("by component: " in line for line in lines)
