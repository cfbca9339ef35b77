"""Run every section, print the table, write bench.json and the plots."""

from __future__ import annotations

import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from OpenSSL import SSL

from atls.pki import init_pki

from . import addon, fleet, memory, network, plots, protection, session

_SIZES = {"1k": "1 KiB", "64k": "64 KiB", "1m": "1 MiB"}
SECTIONS = ("session", "protection", "memory", "network", "addon", "fleet")
# Targets from the performance issue, for the table's last column.
TARGETS = {
    "session_vs_pyopenssl_tls13": 0.95,
    "session_vs_pyopenssl_tls12": 0.95,
    "atls_http_vs_network_tls": 0.8,
    "addon_with_vs_without_atls": 0.95,
    "export_data_vs_aesgcm_64k": 0.8,
}


def run(
    out_root: Path,
    quick: bool,
    only: set[str],
    say: Callable[[str], None] = print,
    profile: bool = False,
) -> Path:
    """Measure, print and write; return the run's folder.

    ``profile``: the network section also profiles the service (service-profile.txt).
    """
    run_dir = out_root / time.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    openssl = SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()
    say(
        f"[bench] Python {platform.python_version()}, {openssl}, {'quick' if quick else 'full'} run"
    )
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="atls-bench-") as tmp:
        root = Path(tmp)
        pki = init_pki(root / "pki")
        steps: dict[str, Callable[[], Any]] = {
            "session": lambda: session.measure(pki, quick),
            "protection": lambda: protection.measure(quick),
            "memory": lambda: memory.measure(pki, quick),
            "network": lambda: network.measure(
                pki, root / "logs", quick, run_dir if profile else None
            ),
            "addon": lambda: addon.measure(pki, root / "addon", quick),
            "fleet": lambda: fleet.measure(root / "fleet", quick),
        }
        for name in SECTIONS:
            if only and name not in only:
                continue
            started = time.monotonic()
            say(f"[bench] {name} ...")
            results[name] = steps[name]()
            say(f"[bench] {name} done in {time.monotonic() - started:.0f}s")
    document = _document(results, quick)
    (run_dir / "bench.json").write_text(json.dumps(document, indent=2))
    pictures = _plots(results, run_dir)
    say(table(document))
    say(f"[bench] wrote {run_dir / 'bench.json'}" + "".join(f", {p.name}" for p in pictures))
    return run_dir


def _document(results: dict[str, Any], quick: bool) -> dict[str, Any]:
    ratios: dict[str, float] = {}
    figures: list[dict[str, Any]] = []

    def figure(key: str, label: str, value: float, baseline: float, ratio: float, unit: str):
        ratios[key] = round(ratio, 3)
        figures.append(
            {
                "key": key,
                "figure": label,
                "value": round(value, 3),
                "baseline": round(baseline, 3),
                "unit": unit,
                "ratio": round(ratio, 3),
                "target": TARGETS.get(key),
            }
        )

    if "session" in results:
        for label, data in results["session"].items():
            key = f"session_vs_pyopenssl_tls{label.replace('.', '')}"
            figure(
                key,
                f"ATLSSession pair handshakes vs bare pyOpenSSL, TLS {label} (CPU time)",
                data["atls_per_s"],
                data["bare_per_s"],
                data["ratio"],
                "handshakes/s",
            )
    if "network" in results:
        net = results["network"]
        figure(
            "atls_http_vs_network_tls",
            "ATLS over HTTP vs network TLS, both mutual (service CPU per handshake)",
            net["atls_cpu_ms"],
            net["network_cpu_ms"],
            net["ratio"],
            "ms CPU",
        )
        figure(
            "service_httptools_vs_h11",
            "service CPU per ATLS handshake, httptools vs h11 parser",
            net["atls_cpu_ms"],
            net["h11_cpu_ms_per_atls_handshake"],
            net["h11_cpu_ms_per_atls_handshake"] / net["atls_cpu_ms"],
            "ms CPU",
        )
    if "addon" in results:
        add = results["addon"]
        figure(
            "addon_with_vs_without_atls",
            "mitmdump with the ATLS addons vs without, ATLS flows (proxy CPU per request)",
            add["with_cpu_ms"],
            add["without_cpu_ms"],
            add["ratio"],
            "ms CPU",
        )
    if "protection" in results:
        for label, data in results["protection"]["sizes"].items():
            figure(
                f"export_data_vs_aesgcm_{label}",
                f"key-export data vs raw AES-128-GCM, {_SIZES[label]} messages",
                data["export_mb_s"],
                data["aesgcm_mb_s"],
                data["ratio"],
                "MB/s",
            )
    document: dict[str, Any] = {
        "quick": quick,
        "python": sys.version.split()[0],
        "openssl": SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode(),
        "ratios": ratios,
        "figures": figures,
    }
    if "protection" in results:
        document["breakdown"] = {"export_data_64k_us": results["protection"]["breakdown_64k_us"]}
    if "memory" in results:
        mem = results["memory"]
        document["memory"] = {
            "export_session_bytes": round(mem["export"]["traced_bytes_per_session"]),
            "export_session_rss_bytes": round(mem["export"]["rss_bytes_per_session"]),
            "records_session_bytes": round(mem["records"]["traced_bytes_per_session"]),
            "records_session_rss_bytes": round(mem["records"]["rss_bytes_per_session"]),
            "sessions_measured": mem["export"]["sessions"],
        }
    if "fleet" in results:
        document["fleet"] = {
            size: {
                "devices": f["devices"],
                "ok": f["ok"],
                "p50_s": _percentile(f["bootstrap_s"], 50),
                "p99_s": _percentile(f["bootstrap_s"], 99),
            }
            for size, f in results["fleet"].items()
        }
    if "network" in results and "profile_ms_per_handshake" in results["network"]:
        document["service_profile_ms_per_handshake"] = results["network"][
            "profile_ms_per_handshake"
        ]
    if "network" in results:
        document["latency_ms"] = {
            "atls_p50": round(results["network"]["atls_p50_ms"], 2),
            "network_tls_p50": round(results["network"]["network_p50_ms"], 2),
        }
    return document


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))], 3) if ordered else 0.0


def _plots(results: dict[str, Any], run_dir: Path) -> list[Path]:
    pictures = []
    if "network" in results:
        pictures.append(
            plots.handshake_latency(results["network"], run_dir / "handshake-latency.png")
        )
    if "fleet" in results:
        pictures.append(plots.fleet_latency(results["fleet"], run_dir / "fleet-latency.png"))
    if "memory" in results:
        pictures.append(plots.memory(results["memory"], run_dir / "memory.png"))
    return pictures


def table(document: dict[str, Any]) -> str:
    lines = [
        f"{'figure':<78} {'value':>10} {'baseline':>10} {'unit':<13} {'ratio':>6} {'target':>7}"
    ]
    for f in document["figures"]:
        target = f"{f['target']:.2f}" if f["target"] is not None else "-"
        lines.append(
            f"{f['figure']:<78} {f['value']:>10.2f} {f['baseline']:>10.2f} {f['unit']:<13} "
            f"{f['ratio']:>6.2f} {target:>7}"
        )
    parts = (document.get("breakdown") or {}).get("export_data_64k_us")
    if parts:
        lines.append(
            "key-export round trip at 64 KiB, CPU us: "
            + ", ".join(f"{name.replace('_', ' ')} {us:.1f}" for name, us in parts.items())
        )
    shares = document.get("service_profile_ms_per_handshake")
    if shares:
        total = sum(shares.values()) or 1.0
        lines.append(
            "service CPU per ATLS handshake under cProfile, by component: "
            + ", ".join(
                f"{name.replace('_', ' ')} {100 * ms / total:.0f}%"
                for name, ms in sorted(shares.items(), key=lambda kv: -kv[1])
            )
            + f" (of {total:.2f} ms with the profiler on)"
        )
    memory = document.get("memory")
    if memory:
        lines.append(
            f"memory per established key-export session: {memory['export_session_bytes']} B traced "
            f"({memory['export_session_rss_bytes']} B RSS); records mode "
            f"{memory['records_session_bytes']} B traced "
            f"({memory['records_session_rss_bytes']} B RSS); target <= 2048 B traced"
        )
    for size, f in (document.get("fleet") or {}).items():
        lines.append(
            f"fleet of {size}: {f['ok']}/{f['devices']} bootstrapped, p50 {f['p50_s']:.2f}s, "
            f"p99 {f['p99_s']:.2f}s per device"
        )
    return "\n".join(lines)
