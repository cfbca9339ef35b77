"""DTLS 1.2 sessions in memory: HelloVerifyRequest, loss, reordering, forged records."""

from __future__ import annotations

import pytest

from atls.config import Role, TLSConfig
from atls.dtls import DTLSContext, DTLSSession, pack_datagrams, split_records
from atls.events import ApplicationData, CloseNotify, HandshakeComplete, SessionState
from atls.keys import ExporterSettings, export_keys
from atls.loopback import run_datagram_handshake
from atls.pki import PKIDirectory
from atls.records import ContentType, HandshakeType, parse_records
from atls.session import NotTLSError, SessionStateError, TLSAlertError
from tests.conftest import client_config

MTU = 400  # small enough that the certificate flights take several datagrams


@pytest.fixture(scope="module")
def server_config(pki: PKIDirectory) -> TLSConfig:
    return TLSConfig(
        Role.SERVER,
        identity=pki.service(),
        trust_anchors=pki.vendor_ca().cert_pem,
        require_client_certificate=True,
    )


@pytest.fixture(scope="module")
def server_dtls(server_config: TLSConfig) -> DTLSContext:
    return DTLSContext(server_config, mtu=MTU)


def pair(pki, server_dtls, **kw) -> tuple[DTLSSession, DTLSSession]:
    client = DTLSSession(DTLSContext(client_config(pki, **kw), mtu=MTU))
    return client, DTLSSession(server_dtls, client_id="192.0.2.7")


def test_handshake_both_roles_with_hello_verify_request(pki, server_dtls):
    client, server = pair(pki, server_dtls)
    transcript = run_datagram_handshake(client, server)
    assert client.state is server.state is SessionState.ESTABLISHED
    assert client.info.version == server.info.version == "DTLSv1.2"
    assert server.info.peer_certificate == pki.device("device-0001").certificate
    assert client.info.peer_certificate == pki.service().certificate
    # ClientHello, HelloVerifyRequest, ClientHello with the cookie, then the handshake
    first, hvr, second = (parse_records(f)[0] for _, f in transcript.flights[:3])
    assert hvr.payload[0] == 3  # hello_verify_request
    assert first.handshake_type is second.handshake_type is HandshakeType.CLIENT_HELLO
    cookie = hvr.payload[12 + 3 :]  # handshake header, server_version, cookie length
    assert cookie and cookie in second.payload
    assert server.hello_verified
    assert export_keys(client).master_secret == export_keys(server).master_secret
    settings = ExporterSettings(context=b"")
    assert export_keys(client, settings).master_secret != export_keys(client).master_secret


def test_hello_verify_request_is_stateless(pki, server_dtls):
    """A throwaway server session answers the challenge; a fresh one takes the proven hello."""
    client, _ = pair(pki, server_dtls)
    challenger = DTLSSession(server_dtls, client_id="192.0.2.7")
    assert challenger.receive_datagrams(client.initiate()) == []
    assert not challenger.hello_verified
    hello_with_cookie = DTLSSession.receive_datagrams(client, challenger.data_to_send())
    assert hello_with_cookie == []
    second = client.data_to_send()
    # a different client address cannot use the cookie
    elsewhere = DTLSSession(server_dtls, client_id="198.51.100.9")
    elsewhere.receive_datagrams(second)
    assert not elsewhere.hello_verified
    assert parse_records(b"".join(elsewhere.data_to_send()))[0].payload[0] == 3  # challenged again
    fresh = DTLSSession(server_dtls, client_id="192.0.2.7")
    fresh.receive_datagrams(second)
    assert fresh.hello_verified
    assert fresh.data_to_send()  # ServerHello ... ServerHelloDone


def test_datagrams_respect_the_mtu_and_whole_records(pki, server_dtls):
    client, server = pair(pki, server_dtls)
    transcript = run_datagram_handshake(client, server)
    assert any(len(split_records(f)) > 2 for _, f in transcript.flights)
    client.send(b"x" * 3000)
    datagrams = client.data_to_send()
    assert len(datagrams) >= 8 and all(len(d) <= MTU for d in datagrams)
    assert all(parse_records(d) for d in datagrams)  # each datagram is whole records
    assert pack_datagrams(b"".join(datagrams), 10_000) == [b"".join(datagrams)]
    events = server.receive_datagrams(datagrams)
    assert events == [ApplicationData(b"x" * 3000)]


def test_lost_datagram_is_retransmitted_by_the_timer(pki, server_dtls):
    client, server = pair(pki, server_dtls)
    lost: list[int] = []

    def drop_once(index: int, sender: str, datagrams: list[bytes]) -> list[bytes]:
        if sender == "server" and len(datagrams) > 1 and not lost:
            lost.append(index)
            return datagrams[:1] + datagrams[2:]  # the second datagram never arrives
        return datagrams

    run_datagram_handshake(client, server, drop_once)
    assert lost
    assert client.state is server.state is SessionState.ESTABLISHED
    assert client.retransmissions >= 1


def test_reordered_datagrams_are_reassembled(pki, server_dtls):
    """Handshake fragments out of order are buffered and reassembled: no retransmission."""
    client, server = pair(pki, server_dtls)
    reversed_flights = []

    def reverse(index: int, sender: str, datagrams: list[bytes]) -> list[bytes]:
        epochs = {r.epoch for d in datagrams for r in parse_records(d)}
        if len(datagrams) > 1 and epochs == {0}:
            reversed_flights.append(index)
            return datagrams[::-1]
        return datagrams

    run_datagram_handshake(client, server, reverse)
    assert len(reversed_flights) >= 1
    assert client.retransmissions == server.retransmissions == 0


def test_any_reordering_completes_with_the_timer(pki, server_dtls):
    """Finished (epoch 1) before ChangeCipherSpec is dropped; the timer recovers it."""
    client, server = pair(pki, server_dtls)
    run_datagram_handshake(client, server, lambda i, s, d: d[::-1])
    assert client.state is server.state is SessionState.ESTABLISHED


def test_timer_api(pki, server_dtls):
    client, _ = pair(pki, server_dtls)
    assert client.next_timeout() is None
    client.initiate()
    timeout = client.next_timeout()
    assert timeout is not None and 0 < timeout <= 1.0
    assert client.handle_timeout() is False  # not due yet: nothing to retransmit
    assert client.data_to_send() == []


def test_forged_and_replayed_records_are_dropped_and_the_session_goes_on(pki, server_dtls):
    client, server = pair(pki, server_dtls)
    run_datagram_handshake(client, server)
    client.send(b"first")
    (record,) = client.data_to_send()
    assert server.receive_flight(record) == [ApplicationData(b"first")]
    assert server.receive_flight(record) == []  # replayed: the replay window drops it
    forged = bytearray(record)
    forged[-1] ^= 0x01
    assert server.receive_flight(bytes(forged)) == []  # bad MAC: dropped silently
    alert = bytes([ContentType.ALERT, 0xFE, 0xFD, 0, 1]) + b"\0" * 6 + b"\0\x02\x02\x28"
    assert server.receive_flight(alert) == []  # a plaintext fatal alert from outside
    assert server.state is SessionState.ESTABLISHED
    client.send(b"second")
    assert server.receive_flight(b"".join(client.data_to_send())) == [ApplicationData(b"second")]
    server.send(b"answer")
    assert client.receive_flight(b"".join(server.data_to_send())) == [ApplicationData(b"answer")]
    client.close()
    events = server.receive_flight(b"".join(client.data_to_send()))
    assert events == [CloseNotify()] and server.state is SessionState.CLOSED


def test_records_are_checked_before_dtls(pki, server_dtls):
    client, server = pair(pki, server_dtls)
    run_datagram_handshake(client, server)
    with pytest.raises(NotTLSError):
        server.receive_flight(b"GET / HTTP/1.1\r\n\r\n")
    assert server.state is SessionState.ESTABLISHED


def test_wrong_service_name_fails_with_bad_certificate(pki, server_dtls):
    client, server = pair(pki, server_dtls, server_name="someone-else")
    with pytest.raises(TLSAlertError) as failure:
        run_datagram_handshake(client, server)
    assert failure.value.alert == "bad_certificate"
    assert client.state is SessionState.FAILED
    with pytest.raises(SessionStateError):
        client.receive_flight(b"\x16\xfe\xfd" + b"\0" * 10)


def test_events_report_completion_once(pki, server_dtls):
    client, server = pair(pki, server_dtls)
    transcript = run_datagram_handshake(client, server)
    done = sorted(r for r, e in transcript.events if isinstance(e, HandshakeComplete))
    assert done == ["client", "server"]


def test_a_tls13_floor_makes_no_dtls_context(pki):
    from atls.config import TLSVersion

    with pytest.raises(ValueError, match="DTLS 1.2 only"):
        DTLSContext(client_config(pki, TLSVersion.TLS1_3))


def test_bit_flips_in_any_flight_fail_cleanly_or_are_dropped(pki, server_dtls):
    """300 seeded single-bit flips over every handshake flight: only the session's own errors.

    A flip either makes DTLS drop the record (the handshake then needs the
    timer, which this test does not wait for), fails it with a TLS alert, or
    is harmless (legacy record version, unchecked bits); nothing else escapes.
    """
    import random

    from atls.errors import ATLSError

    transcript = run_datagram_handshake(*pair(pki, server_dtls))
    sizes = [len(f) for _, f in transcript.flights]
    rng = random.Random(9)
    outcomes = {"completed": 0, "failed": 0, "stalled": 0}
    for _ in range(300):
        target = rng.randrange(len(sizes))
        bit = rng.randrange(sizes[target] * 8)

        def flip(index: int, sender: str, datagrams: list[bytes], t=target, b=bit) -> list[bytes]:
            if index != t:
                return datagrams
            data = bytearray(b"".join(datagrams))
            if b // 8 < len(data):
                data[b // 8] ^= 1 << (b % 8)
            try:
                return split_records(bytes(data))
            except ValueError:
                return [bytes(data)]  # a broken header: delivered as one datagram

        client, server = pair(pki, server_dtls)
        try:
            _drive_once(client, server, flip)
        except ATLSError:
            outcomes["failed"] += 1
            continue
        done = client.handshake_complete and server.handshake_complete
        outcomes["completed" if done else "stalled"] += 1
    # seed 9 here: 48 complete (harmless bits), 179 fail with an alert, 73 stall (dropped)
    assert sum(outcomes.values()) == 300 and outcomes["failed"] and outcomes["stalled"]


def _drive_once(client: DTLSSession, server: DTLSSession, hook) -> None:
    """Exchange flights until one side has nothing to say (no timers: a drop stalls)."""
    sender, receiver = client, server
    flight = client.initiate()
    for index in range(16):
        if not flight:
            return
        receiver.receive_datagrams(hook(index, sender.role.value, flight))
        flight = receiver.data_to_send()
        sender, receiver = receiver, sender
