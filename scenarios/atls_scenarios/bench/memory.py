"""Memory of established key-export sessions on the service side (tracemalloc, RSS)."""

from __future__ import annotations

import gc
import tracemalloc

from atls.config import Mode
from atls.http_binding import ClientBinding, OutgoingMessage
from atls.pki import PKIDirectory
from atls.server import Coding, Refused, Reply, ServerDriver
from atls.session import ATLSSession, TLSContext
from atls.store import SessionLimits, SessionStore

from .measure import rss_bytes
from .session import contexts


def _establish(driver: ServerDriver, client_ctx: TLSContext, mode: Mode) -> None:
    binding = ClientBinding(ATLSSession(client_ctx), mode=mode)
    message: OutgoingMessage | None = binding.start()
    handle = None
    while message is not None:
        outcome = driver.receive(handle, Coding.TLS, message.body, client="10.0.0.1", mode=mode)
        if isinstance(outcome, Refused):
            raise RuntimeError(outcome.refusal)
        assert isinstance(outcome, Reply)
        handle = outcome.handle
        headers = {"content-type": "application/atls"}
        if outcome.new_session:
            headers["set-cookie"] = f"atls_session={handle}"
        message = binding.receive(200, headers, outcome.body)


def measure(pki: PKIDirectory, quick: bool) -> dict[str, object]:
    """Traced bytes per established session (export and records mode), and RSS growth."""
    from atls.config import TLSVersion

    client_ctx, server_ctx = contexts(pki, TLSVersion.TLS1_3)
    checkpoints = [0, 25, 50, 100] if quick else [0, 50, 100, 200, 400]
    out: dict[str, object] = {}
    for mode in (Mode.EXPORT, Mode.RECORDS):
        limits = SessionLimits(max_sessions=10000, max_sessions_per_identity=10000)
        driver = ServerDriver(server_ctx, SessionStore(limits))
        _establish(driver, client_ctx, mode)  # warm caches before measuring
        gc.collect()
        tracemalloc.start()
        base_traced, base_rss = tracemalloc.get_traced_memory()[0], rss_bytes()
        curve = []
        done = 0
        for target in checkpoints:
            while done < target:
                _establish(driver, client_ctx, mode)
                done += 1
            gc.collect()
            curve.append(
                (
                    done,
                    tracemalloc.get_traced_memory()[0] - base_traced,
                    rss_bytes() - base_rss,
                )
            )
        tracemalloc.stop()
        n, traced, rss = curve[-1]
        out[mode.value] = {
            "sessions": n,
            "traced_bytes_per_session": traced / n,
            "rss_bytes_per_session": rss / n,
            "curve": curve,
        }
    return out
