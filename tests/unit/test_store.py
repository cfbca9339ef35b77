"""The session store's limits and expiry, on a fake clock."""

from __future__ import annotations

import pytest

from atls.session import ATLSSession
from atls_service.store import SessionLimits, SessionStore, StoreError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _store(clock: Clock, **limits: float) -> SessionStore:
    return SessionStore(SessionLimits(**limits), clock)  # type: ignore[arg-type]


def test_handshake_limits_global_and_per_client(server_context, clock):
    store = _store(clock, max_handshakes=3, max_handshakes_per_client=2)
    store.open(ATLSSession(server_context), "a")
    store.open(ATLSSession(server_context), "a")
    with pytest.raises(StoreError) as per_client:
        store.open(ATLSSession(server_context), "a")
    assert per_client.value.problem.status == 429
    assert per_client.value.retry_after
    store.open(ATLSSession(server_context), "b")
    with pytest.raises(StoreError) as full:
        store.open(ATLSSession(server_context), "c")
    assert full.value.problem.status == 503


def test_unknown_and_expired_are_told_apart(server_context, clock):
    store = _store(clock, handshake_ttl=10, idle_ttl=20)
    entry = store.open(ATLSSession(server_context), "a")
    with pytest.raises(StoreError) as unknown:
        store.get("no-such-cookie")
    assert unknown.value.problem.status == 404
    clock.now += 11
    with pytest.raises(StoreError) as expired:
        store.get(entry.token)
    assert expired.value.problem.status == 410
    assert "handshake timeout" in expired.value.problem.detail
    assert store.handshakes == 0


def test_established_sessions_idle_out_and_lru_gives_way(server_context, clock):
    store = _store(clock, max_sessions=2, idle_ttl=20)
    entries = []
    for client in "abc":
        entry = store.open(ATLSSession(server_context), client)
        store.promote(entry)
        entries.append(entry)
        clock.now += 1
    assert store.sessions == 2
    with pytest.raises(StoreError) as evicted:
        store.get(entries[0].token)
    assert evicted.value.problem.status == 410 and "capacity" in evicted.value.problem.detail
    clock.now += 15
    store.get(entries[2].token)  # touching keeps it alive
    clock.now += 10
    assert store.get(entries[2].token) is entries[2]
    with pytest.raises(StoreError, match="idle timeout"):
        store.get(entries[1].token)
    assert store.stats()["evictions"] == {"capacity": 1, "idle timeout": 1}


def test_limits_are_validated():
    with pytest.raises(ValueError, match="max_handshakes"):
        SessionLimits(max_handshakes=0)
    with pytest.raises(ValueError, match="ClientHello"):
        SessionLimits(max_flight_bytes=100)
