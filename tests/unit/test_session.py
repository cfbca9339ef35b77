"""The sans-I/O session: handshakes, authentication failures, tampered flights."""

from __future__ import annotations

import random

import pytest

from atls.loopback import run_handshake
from atls.pki import CertificateAuthority, PKIDirectory
from atls.records import RECORD_HEADER_LEN, parse_records
from atls.session import (
    ApplicationData,
    ATLSError,
    ATLSSession,
    CloseNotify,
    HandshakeComplete,
    IncompleteFlightError,
    NotTLSError,
    Role,
    SessionStateError,
    TLSAlertError,
    TLSConfig,
    TLSContext,
    TLSVersion,
)
from tests.conftest import DEVICE, client_config

VERSIONS = [TLSVersion.TLS1_2, TLSVersion.TLS1_3]


def pair(
    pki: PKIDirectory, server_context: TLSContext, version: TLSVersion | None = None, **kw: object
) -> tuple[ATLSSession, ATLSSession]:
    return ATLSSession(client_config(pki, version, **kw).build()), ATLSSession(server_context)


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.name)
def test_mutual_handshake_reports_facts(pki, server_context, version):
    client, server = pair(pki, server_context, version)
    transcript = run_handshake(client, server)
    expected = {"TLS1_2": "TLSv1.2", "TLS1_3": "TLSv1.3"}[version.name]
    assert client.info.version == server.info.version == expected
    assert client.info.cipher == server.info.cipher
    assert client.info.peer_certificate == pki.service().certificate
    assert server.info.peer_certificate == pki.device(DEVICE).certificate
    assert "device-0001" in (server.info.peer_subject or "")
    # Two round trips in both versions; every event names its side once.
    assert transcript.round_trips == 2
    completes = [role for role, e in transcript.events if isinstance(e, HandshakeComplete)]
    assert sorted(completes) == ["client", "server"]


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.name)
def test_application_data_and_close(pki, server_context, version):
    client, server = pair(pki, server_context, version)
    run_handshake(client, server)
    client.send(b"ping" * 10000)
    events = server.receive_data(client.data_to_send())
    assert b"".join(e.data for e in events if isinstance(e, ApplicationData)) == b"ping" * 10000
    server.send(b"pong")
    assert client.receive_data(server.data_to_send()) == [ApplicationData(b"pong")]
    client.close()
    assert any(isinstance(e, CloseNotify) for e in server.receive_data(client.data_to_send()))


def _handshake_error(client: ATLSSession, server: ATLSSession) -> TLSAlertError:
    with pytest.raises(TLSAlertError) as info:
        run_handshake(client, server)
    return info.value


def test_wrong_anchor_is_unknown_ca(pki, server_context, rogue_ca):
    client, server = pair(pki, server_context, trust_anchors=rogue_ca.cert_pem)
    error = _handshake_error(client, server)
    assert (error.alert, error.origin) == ("unknown_ca", "local")
    assert "trust anchor" in error.reason
    assert error.data_to_send, "the alert owed to the peer is handed out"
    with pytest.raises(TLSAlertError) as peer:
        server.receive_data(error.data_to_send)
    assert (peer.value.alert, peer.value.origin) == ("unknown_ca", "peer")


@pytest.mark.parametrize("name", ["evil.example", "10.9.8.7"])
def test_wrong_name_is_bad_certificate(pki, server_context, name):
    client, server = pair(pki, server_context, server_name=name)
    error = _handshake_error(client, server)
    assert (error.alert, error.origin) == ("bad_certificate", "local")
    assert name in error.reason


@pytest.mark.parametrize(
    ("version", "alert"),
    [(TLSVersion.TLS1_3, "certificate_required"), (TLSVersion.TLS1_2, "handshake_failure")],
    ids=["TLS1_3", "TLS1_2"],
)
def test_missing_client_certificate_is_refused(pki, server_context, version, alert):
    client, server = pair(pki, server_context, version, identity=None)
    error = _handshake_error(client, server)
    assert (error.alert, error.origin) == (alert, "local")
    assert server.failed and not server.handshake_complete


def test_client_certificate_from_unknown_ca_is_refused(pki, server_context, rogue_ca):
    client, server = pair(pki, server_context, identity=rogue_ca.issue_device("device-rogue"))
    error = _handshake_error(client, server)
    assert (error.alert, error.origin) == ("unknown_ca", "local")
    assert server.failed


def test_expired_service_certificate_is_refused(pki):
    import datetime

    expired = pki.vendor_ca().issue_server(
        ["atls-service"],
        not_after=datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1),
    )
    server = ATLSSession(TLSConfig(Role.SERVER, identity=expired).build())
    client = ATLSSession(client_config(pki).build())
    error = _handshake_error(client, server)
    assert error.alert == "certificate_expired"
    assert "expired" in error.reason


def _record_version_offsets(flight: bytes) -> set[int]:
    """legacy_record_version bytes: unauthenticated by design (RFC 8446 5.1)."""
    offsets, at = set(), 0
    for record in parse_records(flight):
        offsets |= {at + 1, at + 2}
        at += record.wire_length
    return offsets


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.name)
def test_a_flipped_bit_in_any_flight_fails(pki, server_context, version):
    """Seeded sample of single-bit flips at every flight; none may go unnoticed.

    Measured exhaustively once (every bit position of every flight, both
    versions): only the record header's legacy version bytes survive, which
    no TLS version authenticates, so they are left out here.
    """
    client, server = pair(pki, server_context, version)
    flights = run_handshake(client, server).flights
    rng = random.Random(f"flip-{version.name}")
    checked = 0
    for index in range(len(flights)):
        for _ in range(24):
            pick, bit = rng.randrange(1 << 30), 1 << rng.randrange(8)

            def flip(i: int, role: str, data: bytes, index=index, pick=pick, bit=bit):
                if i != index:
                    return data
                skip = _record_version_offsets(data)
                candidates = [p for p in range(len(data)) if p not in skip]
                tampered = bytearray(data)
                tampered[candidates[pick % len(candidates)]] ^= bit
                return bytes(tampered)

            c, s = pair(pki, server_context, version)
            with pytest.raises(ATLSError):
                run_handshake(c, s, flip)
            checked += 1
    assert checked == len(flights) * 24


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.name)
def test_truncated_flights_fail_cleanly(pki, server_context, version):
    client, server = pair(pki, server_context, version)
    flights = run_handshake(client, server).flights
    # Cut points relative to the bytes delivered: ECDSA signatures vary in length.
    cuts = (lambda n: 1, lambda n: RECORD_HEADER_LEN, lambda n: n // 2, lambda n: n - 1)
    for index in range(min(3, len(flights))):
        for cut in cuts:
            c, s = pair(pki, server_context, version)
            with pytest.raises((IncompleteFlightError, TLSAlertError)):
                run_handshake(
                    c,
                    s,
                    lambda i, r, d, index=index, cut=cut: d[: cut(len(d))] if i == index else d,
                )


def test_dropping_the_last_record_of_a_flight_is_incomplete(pki, server_context):
    client, server = pair(pki, server_context, TLSVersion.TLS1_2)
    hello = client.initiate()
    server.receive_flight(hello)
    flight = server.data_to_send()
    records = parse_records(flight)
    assert len(records) >= 1
    # TLS 1.2 server flight minus its final record (ServerHelloDone and co.)
    shortened = flight[: len(flight) - records[-1].wire_length] if len(records) > 1 else flight[:-4]
    with pytest.raises(IncompleteFlightError):
        client.receive_flight(shortened)


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.name)
def test_reordered_flights_fail_cleanly(pki, server_context, version):
    # The client's second flight delivered to a fresh server instead of a ClientHello.
    client, server = pair(pki, server_context, version)
    flights = run_handshake(client, server).flights
    fresh = ATLSSession(server_context)
    with pytest.raises((TLSAlertError, IncompleteFlightError)):
        fresh.receive_flight(flights[2][1])
    # The first record of each multi-record flight moved to its end.
    for index, (_, flight) in enumerate(flights[:3]):
        if len(parse_records(flight)) < 2:
            continue
        c, s = pair(pki, server_context, version)
        with pytest.raises((TLSAlertError, IncompleteFlightError)):
            run_handshake(c, s, lambda i, r, d, index=index: _swap_first(d) if i == index else d)


def _swap_first(flight: bytes) -> bytes:
    records = parse_records(flight)
    if len(records) < 2:
        return flight
    first = records[0].wire_length
    return flight[first:] + flight[:first]


def test_not_tls_is_rejected_before_openssl(server_context):
    server = ATLSSession(server_context)
    with pytest.raises(NotTLSError):
        server.receive_flight(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    # Nothing was fed to TLS: the same session still accepts a real ClientHello.
    assert not server.failed


def test_api_misuse_is_a_state_error(pki, server_context):
    client, server = pair(pki, server_context)
    with pytest.raises(SessionStateError):
        server.initiate()
    with pytest.raises(SessionStateError):
        client.send(b"too early")
    with pytest.raises(SessionStateError):
        client.export_keying_material("application-layer-tls", 32)
    client.initiate()
    with pytest.raises(SessionStateError):
        client.initiate()


def test_config_refuses_unsafe_or_impossible_settings(pki):
    with pytest.raises(ValueError, match="trust_anchors"):
        TLSConfig(Role.CLIENT)
    with pytest.raises(ValueError, match="identity"):
        TLSConfig(Role.SERVER)
    with pytest.raises(ValueError, match="min_version"):
        TLSConfig(
            Role.CLIENT,
            verify_peer=False,
            min_version=TLSVersion.TLS1_3,
            max_version=TLSVersion.TLS1_2,
        )


def test_a_failed_session_refuses_further_input(pki, server_context, rogue_ca):
    client, server = pair(pki, server_context, trust_anchors=rogue_ca.cert_pem)
    _handshake_error(client, server)
    with pytest.raises(SessionStateError, match="already failed"):
        client.receive_data(b"\x16\x03\x03\x00\x01\x00")


def test_version_parsing():
    assert TLSVersion.parse("TLSv1.3") is TLSVersion.TLS1_3
    assert TLSVersion.parse("1.2") is TLSVersion.TLS1_2
    assert TLSVersion.parse("dtls1.2") is TLSVersion.DTLS1_2
    assert TLSVersion.parse(1.1).label == "1.1"  # observers see old versions offered
    with pytest.raises(ValueError, match="1.4"):
        TLSVersion.parse("1.4")
    with pytest.raises(ValueError, match="TLS 1.2 or 1.3, not 1.1"):
        TLSConfig(Role.CLIENT, verify_peer=False, min_version=TLSVersion.TLS1_1)


def test_chain_with_intermediate_is_sent_and_verified(pki, server_context):
    """A device whose identity chains through an intermediate still authenticates."""
    root = pki.vendor_ca()
    intermediate_identity = _intermediate(root)
    device = intermediate_identity.issue_device("device-sub-0001")
    chained = type(device)(device.chain_pem + intermediate_identity.cert_pem, device.key_pem)
    client, server = pair(pki, server_context, identity=chained)
    run_handshake(client, server)
    assert [c.subject for c in server.info.peer_chain[:2]] == [
        device.certificate.subject,
        intermediate_identity.certificate.subject,
    ]


def _intermediate(root: CertificateAuthority) -> CertificateAuthority:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from atls.pki import Identity

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Vendor Sub CA")]))
        .issuer_name(root.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(root.identity.private_key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return CertificateAuthority(Identity(pem, key_pem))
