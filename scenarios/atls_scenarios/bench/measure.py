"""Measuring helpers: CPU time of this and other processes, bounded loops."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def rss_bytes(pid: int | None = None) -> int:
    with open(f"/proc/{pid or 'self'}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass
class Samples:
    """Wall latencies (seconds) and the CPU time they took."""

    latencies: list[float] = field(default_factory=list)
    cpu: float = 0.0

    @property
    def count(self) -> int:
        return len(self.latencies)

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else 0.0


def run_bounded(
    fn: Callable[[], object], count: int, seconds: float, cpu_of: Callable[[], float]
) -> Samples:
    """Call ``fn`` up to ``count`` times or for ``seconds``; time each call."""
    samples = Samples()
    started_cpu, deadline = cpu_of(), time.monotonic() + seconds
    while samples.count < count and time.monotonic() < deadline:
        t0 = time.perf_counter()
        fn()
        samples.latencies.append(time.perf_counter() - t0)
    samples.cpu = cpu_of() - started_cpu
    return samples


def interleaved(
    base: Callable[[], object],
    candidate: Callable[[], object],
    per_block: int,
    blocks: int,
) -> tuple[float, float]:
    """CPU seconds per call of each, measured in alternating blocks of this process."""
    base(), candidate()  # warm up
    spent = [0.0, 0.0]
    for _ in range(blocks):
        for i, fn in enumerate((base, candidate)):
            t0 = time.process_time()
            for _ in range(per_block):
                fn()
            spent[i] += time.process_time() - t0
    calls = per_block * blocks
    return spent[0] / calls, spent[1] / calls
