"""The session store's limits and expiry, on a fake clock."""

from __future__ import annotations

import pytest

from atls.config import Mode
from atls.errors import Reason, Refusal
from atls.session import ATLSSession
from atls.store import SessionEntry, SessionLimits, SessionStore


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
    store.open(ATLSSession(server_context), "a", Mode.EXPORT)
    store.open(ATLSSession(server_context), "a", Mode.EXPORT)
    with pytest.raises(Refusal) as per_client:
        store.open(ATLSSession(server_context), "a", Mode.EXPORT)
    assert per_client.value.reason is Reason.CLIENT_HANDSHAKE_LIMIT
    assert per_client.value.retry_after
    store.open(ATLSSession(server_context), "b", Mode.EXPORT)
    with pytest.raises(Refusal) as full:
        store.open(ATLSSession(server_context), "c", Mode.EXPORT)
    assert full.value.reason is Reason.HANDSHAKE_CAPACITY


def test_unknown_and_expired_are_told_apart(server_context, clock):
    store = _store(clock, handshake_ttl=10, idle_ttl=20)
    entry = store.open(ATLSSession(server_context), "a", Mode.EXPORT)
    with pytest.raises(Refusal) as unknown:
        store.get("no-such-cookie")
    assert unknown.value.reason is Reason.UNKNOWN_SESSION
    clock.now += 11
    with pytest.raises(Refusal) as expired:
        store.get(entry.token)
    assert expired.value.reason is Reason.SESSION_ENDED
    assert "handshake timeout" in expired.value.detail
    assert store.handshakes == 0


def test_established_sessions_idle_out_and_lru_gives_way(server_context, clock):
    store = _store(clock, max_sessions=2, idle_ttl=20)
    entries = []
    for client in "abc":
        entry = store.open(ATLSSession(server_context), client, Mode.EXPORT)
        store.promote(entry, f"serial-{client}")
        entries.append(entry)
        clock.now += 1
    assert store.sessions == 2
    with pytest.raises(Refusal) as evicted:
        store.get(entries[0].token)
    assert evicted.value.reason is Reason.SESSION_ENDED and "capacity" in evicted.value.detail
    clock.now += 15
    store.get(entries[2].token)  # touching keeps it alive
    clock.now += 10
    assert store.get(entries[2].token) is entries[2]
    with pytest.raises(Refusal, match="idle timeout"):
        store.get(entries[1].token)
    assert store.stats()["evictions"] == {"capacity": 1, "idle timeout": 1}


def test_limits_are_validated():
    with pytest.raises(ValueError, match="max_handshakes"):
        SessionLimits(max_handshakes=0)
    with pytest.raises(ValueError, match="ClientHello"):
        SessionLimits(max_flight_bytes=100)


def test_a_finished_handshake_frees_its_client_slot(server_context, clock):
    store = _store(clock, max_handshakes_per_client=1)
    entry = store.open(ATLSSession(server_context), "fleet", Mode.EXPORT)
    store.promote(entry, "device-1")
    store.open(ATLSSession(server_context), "fleet", Mode.EXPORT)  # the slot is free again
    with pytest.raises(Refusal):
        store.open(ATLSSession(server_context), "fleet", Mode.EXPORT)


def test_established_sessions_are_counted_per_device_identity(server_context, clock):
    """Behind a middlebox a fleet shares one address; the device's serial tells them apart."""
    store = _store(clock, max_sessions_per_identity=2)
    mine = []
    for _ in range(3):
        entry = store.open(ATLSSession(server_context), "middlebox", Mode.EXPORT)
        store.promote(entry, "device-A")
        mine.append(entry)
    other = store.open(ATLSSession(server_context), "middlebox", Mode.EXPORT)
    store.promote(other, "device-B")
    assert store.sessions_of("device-A") == 2 and store.sessions_of("device-B") == 1
    with pytest.raises(Refusal, match="identity limit"):
        store.get(mine[0].token)  # device A's oldest gave way, nobody else's
    assert store.get(mine[2].token) is mine[2] and store.get(other.token) is other
    store.remove(mine[1], "closed by client")
    store.remove(mine[2], "closed by client")
    assert store.sessions_of("device-A") == 0 and store.stats()["identities"] == 1


class _CountingEntry(SessionEntry):
    """An entry that counts how often a sweep reads its creation time."""

    __slots__ = ()
    reads = 0

    @property  # type: ignore[override]
    def created(self) -> float:
        _CountingEntry.reads += 1
        return float(SessionEntry.created.__get__(self, SessionEntry))  # type: ignore[attr-defined]


def test_expiry_looks_only_at_what_expired(server_context, clock):
    """O(1) per request: a sweep stops at the first entry that is still fresh."""
    store = _store(clock, handshake_ttl=10, max_handshakes=5000, max_handshakes_per_client=5000)
    entries = [store.open(ATLSSession(server_context), "a", Mode.EXPORT) for _ in range(500)]
    for entry in entries:
        entry.__class__ = _CountingEntry
    _CountingEntry.reads = 0
    store.get(entries[-1].token)
    store.sweep()
    assert _CountingEntry.reads <= 2  # one look per sweep, not 500
    clock.now += 11
    assert len(store.sweep()) == 500 and store.handshakes == 0
