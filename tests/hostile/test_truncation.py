"""Truncation at every record boundary of every flight, both directions, both versions.

A middlebox that cuts a flight between records leaves no partial record to
notice; whatever the cut, the handshake fails with a typed ATLS error (or, for
a cut the protocol tolerates, completes with both sides agreeing) and nothing
else happens.
"""

from __future__ import annotations

import pytest

from atls.errors import ATLSError
from atls.loopback import run_handshake
from atls.records import parse_records
from atls.session import ATLSSession, TLSVersion
from tests.conftest import client_config


def _boundaries(pki, server_context, version):
    client = ATLSSession(client_config(pki, version).build())
    flights = [f for _, f in run_handshake(client, ATLSSession(server_context)).flights]
    for index, flight in enumerate(flights):
        for keep in range(len(parse_records(flight))):
            yield index, keep


@pytest.mark.parametrize("version", [TLSVersion.TLS1_2, TLSVersion.TLS1_3], ids=["1.2", "1.3"])
def test_every_record_boundary(pki, server_context, version):
    outcomes: dict[str, int] = {}
    for index, keep in _boundaries(pki, server_context, version):

        def cut(i: int, sender: str, flight: bytes, index=index, keep=keep) -> bytes:
            if i != index:
                return flight
            return b"".join(
                r.content_type.to_bytes(1)
                + r.legacy_version.to_bytes(2)
                + len(r.payload).to_bytes(2)
                + r.payload
                for r in parse_records(flight)[:keep]
            )

        client = ATLSSession(client_config(pki, version).build())
        server = ATLSSession(server_context)
        try:
            run_handshake(client, server, cut)
        except (ATLSError, RuntimeError) as exc:
            # RuntimeError: the loopback's own "flights stopped before both completed"
            outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1
            continue
        # a tolerated cut (e.g. session tickets dropped): both sides agree
        assert client.info.cipher == server.info.cipher
        outcomes["completed"] = outcomes.get("completed", 0) + 1
    assert sum(outcomes.values()) > 5, outcomes
    assert set(outcomes) - {"completed"}, "some cut must fail the handshake"
