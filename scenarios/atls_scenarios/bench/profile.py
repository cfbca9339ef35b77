"""Where the service's CPU goes per ATLS handshake: a cProfile run, summed by component.

The ratios say how far a figure is from its target; this says why. The
service runs once more under its own profiler (``ATLS_SERVICE_PROFILE``, CPU
time), ATLS handshakes are driven at it as in the network section, and the
profile's own time per function is summed into components by where the
function lives. The full listing goes beside bench.json.
"""

from __future__ import annotations

import io
import pstats
from pathlib import Path

# First match wins; a function's file (or built-in name) decides its component.
# A built-in that no entry names (len, isinstance, dict.get, ...) counts for its callers.
COMPONENTS = (
    ("startup", ("<frozen importlib", "(<module>)", "marshal", "builtins.compile")),
    ("openssl_handshake", ("SSL_do_handshake",)),
    ("carrier_tls_io", ("_ssl._SSLSocket", "'read' of '_ssl", "'write' of '_ssl")),
    ("uvicorn_http", ("/uvicorn/", "httptools", "uvloop", "/h11/")),
    ("starlette_asgi", ("/starlette/",)),
    ("logging", ("/logging/", "json/", "/atls_service/logs.py")),
    ("atls_core", ("/atls/", "OpenSSL/", "cryptography/", "_openssl.", "_rust.")),
    ("atls_service", ("/atls_service/",)),
    ("asyncio", ("/asyncio/",)),
)


Func = tuple[str, int, str]


def _named(func: Func) -> str | None:
    filename, line, function = func
    where = f"{filename}:{line}({function})"
    for name, needles in COMPONENTS:
        if any(needle in where for needle in needles):
            return name
    return None


def components(stats: pstats.Stats) -> dict[str, float]:
    """Seconds of own (not cumulative) time per component, plus ``other``."""
    raw: dict[Func, tuple[int, int, float, float, dict[Func, tuple[int, int, float, float]]]]
    raw = stats.stats  # type: ignore[attr-defined]
    memo: dict[Func, str] = {}

    def component(func: Func, depth: int = 0) -> str:
        """The component of a function; an unnamed built-in takes its main caller's."""
        if func in memo:
            return memo[func]
        name = _named(func)
        if name is None and func[0] == "~" and depth < 8 and func in raw:
            callers = raw[func][4]
            if callers:
                main = max(callers, key=lambda c: callers[c][2])
                name = component(main, depth + 1)
        memo[func] = name or "other"
        return memo[func]

    totals = {name: 0.0 for name, _ in COMPONENTS} | {"other": 0.0}
    for func, (_, _, own, _, callers) in raw.items():
        if func[0] == "~" and _named(func) is None and callers:
            # split a shared built-in's time over its callers' components
            for caller, (_, _, spent, _) in callers.items():
                totals[component(caller)] += spent
        else:
            totals[component(func)] += own
    return totals


def summarize(profile: Path, handshakes: int, listing: Path) -> dict[str, float]:
    """Milliseconds of service CPU per handshake, per component (startup left out).

    The full listing (own time, then cumulative) is written to ``listing``.
    """
    stats = pstats.Stats(str(profile))
    text = io.StringIO()
    stats.stream = text  # type: ignore[attr-defined]
    stats.sort_stats("tottime").print_stats(40)
    stats.sort_stats("cumulative").print_stats(60)
    listing.write_text(text.getvalue())
    totals = components(stats)
    totals.pop("startup")
    return {name: round(1000 * s / handshakes, 3) for name, s in totals.items()}
