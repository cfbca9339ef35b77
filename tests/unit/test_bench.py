"""The benchmark command writes what it promises (figures are printed, never asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from atls_scenarios.bench.run import run
from atls_scenarios.cli import main


def test_quick_sections_write_ratios_memory_and_a_plot(tmp_path: Path):
    lines: list[str] = []
    run_dir = run(tmp_path, quick=True, only={"session", "protection", "memory"}, say=lines.append)
    document = json.loads((run_dir / "bench.json").read_text())
    for key in (
        "session_vs_pyopenssl_tls13",
        "session_vs_pyopenssl_tls12",
        "export_data_vs_aesgcm_64k",
    ):
        assert isinstance(document["ratios"][key], float) and document["ratios"][key] > 0
    assert document["memory"]["export_session_bytes"] > 0
    parts = document["breakdown"]["export_data_64k_us"]
    assert {"raw_aes_gcm", "rfc8188_key_schedule", "message_key", "body_copies", "other"} <= set(
        parts
    )
    assert parts["total"] >= parts["raw_aes_gcm"] > 0
    assert (run_dir / "memory.png").read_bytes().startswith(b"\x89PNG")
    table = "\n".join(lines)
    assert "vs bare pyOpenSSL, TLS 1.3" in table and "target" in table
    assert "key-export round trip at 64 KiB, CPU us: raw aes gcm" in table


def test_an_unknown_section_is_a_usage_error(capsys):
    assert main(["bench", "--only", "sessions"]) == 2
    assert "unknown bench section 'sessions'" in capsys.readouterr().err
