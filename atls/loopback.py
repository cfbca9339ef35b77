"""Drive a client and a server session against each other in memory.

For tests, benchmarks and experiments: no network, every flight visible, and
an optional hook that may alter a flight in flight (the middlebox's view).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .dtls import DTLSSession
from .session import ATLSSession, Event, HandshakeComplete

# (index of the flight, sender role value, bytes) -> bytes actually delivered
FlightHook = Callable[[int, str, bytes], bytes]

MAX_FLIGHTS = 16


@dataclass
class Transcript:
    flights: list[tuple[str, bytes]] = field(default_factory=list)
    events: list[tuple[str, Event]] = field(default_factory=list)

    @property
    def round_trips(self) -> int:
        return (len(self.flights) + 1) // 2


def run_handshake(
    client: ATLSSession, server: ATLSSession, hook: FlightHook | None = None
) -> Transcript:
    """Complete the handshake (including the last flight's answer); raise on failure."""
    transcript = Transcript()
    sender, receiver = client, server
    flight = client.initiate()
    for index in range(MAX_FLIGHTS):
        if not flight:
            break
        delivered = hook(index, sender.role.value, flight) if hook else flight
        transcript.flights.append((sender.role.value, delivered))
        events = receiver.receive_flight(delivered)  # whole flights, checked as such
        transcript.events.extend((receiver.role.value, e) for e in events)
        flight = receiver.data_to_send()
        sender, receiver = receiver, sender
    else:
        raise RuntimeError(f"handshake did not settle within {MAX_FLIGHTS} flights")
    if not (client.handshake_complete and server.handshake_complete):
        raise RuntimeError("flights stopped before both sides completed the handshake")
    assert any(isinstance(e, HandshakeComplete) for _, e in transcript.events)
    return transcript


# (index of the flight, sender role value, datagrams) -> datagrams actually delivered
DatagramHook = Callable[[int, str, list[bytes]], list[bytes]]


def run_datagram_handshake(
    client: DTLSSession, server: DTLSSession, hook: DatagramHook | None = None
) -> Transcript:
    """The same for DTLS, flight by flight as lists of datagrams (HelloVerifyRequest too).

    The hook may drop, reorder or alter datagrams; when a side has nothing to
    answer, its retransmission timer is run (waiting for it, as a real
    adapter would), so a lost datagram costs time, not the handshake.
    """
    transcript = Transcript()
    sender, receiver = client, server
    flight = client.initiate()
    for index in range(MAX_FLIGHTS):
        if client.handshake_complete and server.handshake_complete and not flight:
            break
        if not flight:  # lost: the side that waits for an answer retransmits
            sender, receiver = _waiting(client, server)
            timeout = sender.next_timeout()
            if timeout is None:
                raise RuntimeError("flights stopped and no retransmission timer runs")
            time.sleep(timeout + 0.01)
            sender.handle_timeout()
            flight = sender.data_to_send()
            continue
        delivered = hook(index, sender.role.value, flight) if hook else flight
        transcript.flights.append((sender.role.value, b"".join(delivered)))
        events = receiver.receive_datagrams(delivered)
        transcript.events.extend((receiver.role.value, e) for e in events)
        flight = receiver.data_to_send()
        sender, receiver = receiver, sender
    else:
        raise RuntimeError(f"handshake did not settle within {MAX_FLIGHTS} flights")
    return transcript


def _waiting(client: DTLSSession, server: DTLSSession) -> tuple[DTLSSession, DTLSSession]:
    """Which side's timer is due first (the one whose flight went unanswered)."""
    pending = [s for s in (client, server) if s.next_timeout() is not None]
    if not pending:
        return client, server
    first = min(pending, key=lambda s: s.next_timeout() or 0.0)
    return (first, server if first is client else client)
