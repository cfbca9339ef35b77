"""The benchmark's pictures (matplotlib, PNG): latencies, fleets, memory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend


def handshake_latency(network: dict[str, Any], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (("atls_latency_s", "ATLS over HTTP"), ("network_latency_s", "network TLS")):
        values = [1000 * v for v in network.get(key, [])]
        if values:
            ax.hist(values, bins=40, alpha=0.6, label=f"{label} (n={len(values)})")
    ax.set_xlabel("handshake latency seen by the client (ms)")
    ax.set_ylabel("handshakes")
    ax.set_title("Handshake latency, one service, mutual authentication")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def fleet_latency(fleet: dict[str, Any], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    sizes = sorted(fleet.values(), key=lambda f: f["devices"])
    ax.boxplot([f["bootstrap_s"] or [0.0] for f in sizes], showfliers=True)
    ax.set_xticks(range(1, len(sizes) + 1), [str(f["devices"]) for f in sizes])
    ax.set_xlabel("devices bootstrapping at once (local engine, one middlebox)")
    ax.set_ylabel("bootstrap time per device (s)")
    ax.set_title("Bootstrap latency against fleet size")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def memory(memory: dict[str, Any], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    for mode, data in memory.items():
        curve = data["curve"]
        ax.plot(
            [c[0] for c in curve], [c[1] / 1024 for c in curve], marker="o", label=f"{mode}: traced"
        )
        ax.plot(
            [c[0] for c in curve],
            [c[2] / 1024 for c in curve],
            linestyle="--",
            label=f"{mode}: RSS growth",
        )
    ax.set_xlabel("established sessions on the service")
    ax.set_ylabel("KiB")
    ax.set_title("Service memory against sessions")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
