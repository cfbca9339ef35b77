"""Drive a client and a server session against each other in memory.

For tests, benchmarks and experiments: no network, every flight visible, and
an optional hook that may alter a flight in flight (the middlebox's view).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

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
