"""Server-side ATLS sessions by handle, with limits, TTLs and eviction.

The handle (an HTTP cookie, a CoAP option, ...) is a lookup key, not a
credential: a flight posted under somebody else's handle fails TLS's own
integrity checks, and a protected message fails its AEAD. The limits exist so
a flood of ClientHellos cannot exhaust memory: pending handshakes are capped
globally and per client address; established sessions are capped in total and
per device identity (behind a middlebox a whole fleet shares one address, so
the address says little once the handshake has named the device); idle
sessions expire. Refusals carry a ``Reason``, never a transport's code.

Every operation is O(1) amortised: handshakes are kept in creation order and
sessions in least-recently-used order, so expiry only ever looks at the
oldest entries.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from .config import Mode
from .dtls import AnySession
from .errors import Reason, Refusal
from .events import SessionInfo
from .keys import ExportedKeys
from .protection import ServerProtector


@dataclass(frozen=True)
class SessionLimits:
    max_handshakes: int = 256
    max_handshakes_per_client: int = 32
    max_sessions: int = 4096
    max_sessions_per_identity: int = 8
    handshake_ttl: float = 30.0
    idle_ttl: float = 300.0
    max_flight_bytes: int = 65536
    remembered_expired: int = 4096

    def __post_init__(self) -> None:
        for name in (
            "max_handshakes",
            "max_handshakes_per_client",
            "max_sessions",
            "max_sessions_per_identity",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.handshake_ttl <= 0 or self.idle_ttl <= 0:
            raise ValueError("TTLs must be positive")
        if self.max_flight_bytes < 512:
            raise ValueError("max_flight_bytes below 512 cannot carry a ClientHello")


def session_public_id(token: str) -> str:
    """A log-safe name for a handle: a hash of it, never the handle itself."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


@dataclass(eq=False, slots=True)
class SessionEntry:
    """One session as the server keeps it.

    ``session`` is the TLS (or DTLS) object while it is needed: always in records
    mode, and in key-export mode only until the keys are exported (then the
    entry keeps just ``keys``, ``protector`` and ``info``).
    """

    token: str
    session: AnySession | None
    client: str
    mode: Mode
    created: float
    last_used: float
    established: bool = False
    info: SessionInfo | None = None
    identity: str | None = None
    keys: ExportedKeys | None = None
    protector: ServerProtector | None = None
    flights: int = 0
    requests: int = 0
    _public_id: str | None = field(default=None, repr=False)

    @property
    def public_id(self) -> str:
        if self._public_id is None:
            self._public_id = session_public_id(self.token)
        return self._public_id


class SessionStore:
    def __init__(
        self, limits: SessionLimits | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits or SessionLimits()
        self.clock = clock
        self._handshakes: OrderedDict[str, SessionEntry] = OrderedDict()  # by creation
        self._sessions: OrderedDict[str, SessionEntry] = OrderedDict()  # least recent first
        self._per_client: Counter[str] = Counter()
        self._per_identity: dict[str, OrderedDict[str, None]] = {}
        self._expired: OrderedDict[str, str] = OrderedDict()
        self.evictions: Counter[str] = Counter()

    # -- counts -------------------------------------------------------------

    @property
    def handshakes(self) -> int:
        return len(self._handshakes)

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    def sessions_of(self, identity: str) -> int:
        return len(self._per_identity.get(identity, ()))

    def stats(self) -> dict[str, object]:
        return {
            "handshakes": self.handshakes,
            "sessions": self.sessions,
            "identities": len(self._per_identity),
            "evictions": dict(self.evictions),
        }

    # -- admission ------------------------------------------------------------

    def open(self, session: AnySession, client: str, mode: Mode) -> SessionEntry:
        """Admit a new handshake, or refuse: the service is full, or this client is."""
        self.sweep()
        limits = self.limits
        if len(self._handshakes) >= limits.max_handshakes:
            raise Refusal(
                Reason.HANDSHAKE_CAPACITY,
                f"the service has {limits.max_handshakes} handshakes in progress; retry later",
                title="too many handshakes in progress",
                retry_after=max(1, int(limits.handshake_ttl)),
            )
        mine = self._per_client[client]
        if mine >= limits.max_handshakes_per_client:
            raise Refusal(
                Reason.CLIENT_HANDSHAKE_LIMIT,
                f"{client} has {mine} handshakes in progress "
                f"(limit {limits.max_handshakes_per_client})",
                title="too many handshakes from this client",
                retry_after=max(1, int(limits.handshake_ttl)),
            )
        now = self.clock()
        entry = SessionEntry(
            secrets.token_urlsafe(18), session, client, mode, created=now, last_used=now
        )
        self._handshakes[entry.token] = entry
        self._per_client[client] += 1
        return entry

    def promote(self, entry: SessionEntry, identity: str | None) -> None:
        """The handshake finished: move it to the established sessions.

        Beyond the total cap the least recently used session ends; beyond the
        per-identity cap, that identity's oldest session ends.
        """
        if self._handshakes.pop(entry.token, None) is None:
            return
        self._uncount_client(entry.client)
        while len(self._sessions) >= self.limits.max_sessions:
            _, oldest = self._sessions.popitem(last=False)
            self._retire(oldest, "capacity")
        entry.established = True
        entry.identity = identity
        self._sessions[entry.token] = entry
        if identity is not None:
            mine = self._per_identity.setdefault(identity, OrderedDict())
            mine[entry.token] = None
            while len(mine) > self.limits.max_sessions_per_identity:
                token, _ = mine.popitem(last=False)
                victim = self._sessions.pop(token)
                self._retire(victim, "identity limit", counted=True)

    # -- lookup ---------------------------------------------------------------

    def __contains__(self, token: object) -> bool:
        return token in self._handshakes or token in self._sessions

    def get(self, token: str) -> SessionEntry:
        self.sweep()
        entry = self._handshakes.get(token) or self._sessions.get(token)
        if entry is None:
            reason = self._expired.get(token)
            if reason is not None:
                raise Refusal(
                    Reason.SESSION_ENDED,
                    f"session {session_public_id(token)} ended ({reason}); start a new handshake",
                    title="ATLS session has ended",
                )
            raise Refusal(
                Reason.UNKNOWN_SESSION,
                "the session handle names no session on this service; "
                "start a new handshake without it",
                title="no such ATLS session",
            )
        entry.last_used = self.clock()
        if entry.established:
            self._sessions.move_to_end(token)
        return entry

    def remove(self, entry: SessionEntry, reason: str) -> None:
        if self._handshakes.pop(entry.token, None) is not None:
            self._uncount_client(entry.client)
            self._forget(entry.token, reason)
        elif self._sessions.pop(entry.token, None) is not None:
            self._retire(entry, reason)

    def sweep(self) -> list[str]:
        """Expire stale handshakes and idle sessions; return their public ids."""
        now = self.clock()
        gone = []
        while self._handshakes:
            token, entry = next(iter(self._handshakes.items()))
            if now - entry.created <= self.limits.handshake_ttl:
                break
            del self._handshakes[token]
            self._uncount_client(entry.client)
            self._forget(token, "handshake timeout")
            gone.append(entry.public_id)
        while self._sessions:
            token, entry = next(iter(self._sessions.items()))
            if now - entry.last_used <= self.limits.idle_ttl:
                break
            del self._sessions[token]
            self._retire(entry, "idle timeout")
            gone.append(entry.public_id)
        return gone

    # -- bookkeeping ----------------------------------------------------------

    def _uncount_client(self, client: str) -> None:
        self._per_client[client] -= 1
        if self._per_client[client] <= 0:
            del self._per_client[client]

    def _retire(self, entry: SessionEntry, reason: str, counted: bool = False) -> None:
        """An established session left ``_sessions``: drop it from its identity too."""
        if entry.identity is not None and not counted:
            mine = self._per_identity.get(entry.identity)
            if mine is not None:
                mine.pop(entry.token, None)
        if entry.identity is not None:
            mine = self._per_identity.get(entry.identity)
            if mine is not None and not mine:
                del self._per_identity[entry.identity]
        self._forget(entry.token, reason)

    def _forget(self, token: str, reason: str) -> None:
        self.evictions[reason] += 1
        self._expired[token] = reason
        while len(self._expired) > self.limits.remembered_expired:
            self._expired.popitem(last=False)
