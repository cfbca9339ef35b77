"""Server-side ATLS sessions named by cookie, with limits and eviction.

The cookie is a lookup key, not a credential: a flight posted under somebody
else's cookie fails TLS's own integrity checks. The limits exist so a flood
of ClientHellos cannot exhaust memory: pending handshakes are capped globally
(503) and per client address (429); established sessions are capped too, the
least recently used one giving way; idle sessions expire.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from atls.http_binding import Problem
from atls.keys import ExportedKeys
from atls.protection import ServerProtector
from atls.session import ATLSSession


@dataclass(frozen=True)
class SessionLimits:
    max_handshakes: int = 256
    max_handshakes_per_client: int = 32
    max_sessions: int = 4096
    handshake_ttl: float = 30.0
    idle_ttl: float = 300.0
    max_flight_bytes: int = 65536
    remembered_expired: int = 4096

    def __post_init__(self) -> None:
        for name in ("max_handshakes", "max_handshakes_per_client", "max_sessions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.handshake_ttl <= 0 or self.idle_ttl <= 0:
            raise ValueError("TTLs must be positive")
        if self.max_flight_bytes < 512:
            raise ValueError("max_flight_bytes below 512 cannot carry a ClientHello")


class StoreError(Exception):
    """A session lookup or admission failed; carries the problem to answer."""

    def __init__(self, problem: Problem, retry_after: int | None = None) -> None:
        self.problem = problem
        self.retry_after = retry_after
        super().__init__(problem.detail)


@dataclass(eq=False)
class SessionEntry:
    token: str
    session: ATLSSession
    client: str
    created: float
    last_used: float
    established: bool = False
    keys: ExportedKeys | None = None
    protector: ServerProtector | None = None
    flights: int = 0
    requests: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def public_id(self) -> str:
        """A log-safe name: a hash of the cookie, never the cookie itself."""
        return session_public_id(self.token)


def session_public_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:12]


class SessionStore:
    def __init__(
        self, limits: SessionLimits | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits or SessionLimits()
        self.clock = clock
        self._handshakes: dict[str, SessionEntry] = {}
        self._sessions: OrderedDict[str, SessionEntry] = OrderedDict()
        self._expired: OrderedDict[str, str] = OrderedDict()
        self.evictions: dict[str, int] = {}

    # -- counts -------------------------------------------------------------

    @property
    def handshakes(self) -> int:
        return len(self._handshakes)

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    def stats(self) -> dict[str, object]:
        return {
            "handshakes": self.handshakes,
            "sessions": self.sessions,
            "evictions": dict(self.evictions),
        }

    # -- admission ------------------------------------------------------------

    def open(self, session: ATLSSession, client: str) -> SessionEntry:
        """Admit a new handshake, or refuse with 503 (full) / 429 (this client)."""
        self.sweep()
        limits = self.limits
        if len(self._handshakes) >= limits.max_handshakes:
            raise StoreError(
                Problem(
                    503,
                    "handshake-capacity",
                    "too many handshakes in progress",
                    f"the service has {limits.max_handshakes} handshakes in progress; retry later",
                ),
                retry_after=max(1, int(limits.handshake_ttl)),
            )
        mine = sum(1 for e in self._handshakes.values() if e.client == client)
        if mine >= limits.max_handshakes_per_client:
            raise StoreError(
                Problem(
                    429,
                    "client-handshake-limit",
                    "too many handshakes from this client",
                    f"{client} has {mine} handshakes in progress "
                    f"(limit {limits.max_handshakes_per_client})",
                ),
                retry_after=max(1, int(limits.handshake_ttl)),
            )
        now = self.clock()
        token = secrets.token_urlsafe(18)
        entry = SessionEntry(token, session, client, created=now, last_used=now)
        self._handshakes[token] = entry
        return entry

    def promote(self, entry: SessionEntry) -> None:
        """The handshake finished: move it to the established sessions."""
        if self._handshakes.pop(entry.token, None) is None:
            return
        while len(self._sessions) >= self.limits.max_sessions:
            oldest, _ = self._sessions.popitem(last=False)
            self._forget(oldest, "capacity")
        entry.established = True
        self._sessions[entry.token] = entry

    # -- lookup ---------------------------------------------------------------

    def __contains__(self, token: object) -> bool:
        return token in self._handshakes or token in self._sessions

    def get(self, token: str) -> SessionEntry:
        self.sweep()
        entry = self._handshakes.get(token) or self._sessions.get(token)
        if entry is None:
            reason = self._expired.get(token)
            if reason is not None:
                raise StoreError(
                    Problem(
                        410,
                        "session-expired",
                        "ATLS session has ended",
                        f"session {session_public_id(token)} ended ({reason}); "
                        "start a new handshake",
                    )
                )
            raise StoreError(
                Problem(
                    404,
                    "unknown-session",
                    "no such ATLS session",
                    "the session cookie names no session on this service; "
                    "start a new handshake without it",
                )
            )
        entry.last_used = self.clock()
        if entry.established:
            self._sessions.move_to_end(token)
        return entry

    def remove(self, entry: SessionEntry, reason: str) -> None:
        if self._handshakes.pop(entry.token, None) or self._sessions.pop(entry.token, None):
            self._forget(entry.token, reason)

    def sweep(self) -> list[str]:
        """Expire stale handshakes and idle sessions; return their public ids."""
        now = self.clock()
        gone = []
        for token, entry in list(self._handshakes.items()):
            if now - entry.created > self.limits.handshake_ttl:
                del self._handshakes[token]
                self._forget(token, "handshake timeout")
                gone.append(entry.public_id)
        for token, entry in list(self._sessions.items()):
            if now - entry.last_used > self.limits.idle_ttl:
                del self._sessions[token]
                self._forget(token, "idle timeout")
                gone.append(entry.public_id)
        return gone

    def _forget(self, token: str, reason: str) -> None:
        self.evictions[reason] = self.evictions.get(reason, 0) + 1
        self._expired[token] = reason
        while len(self._expired) > self.limits.remembered_expired:
            self._expired.popitem(last=False)
