"""Key-export mode framing: RFC 8188 aes128gcm with per-message keys and replay defence."""

from __future__ import annotations

import os

import pytest

from atls.keys import AES_128_GCM, ExportedKeys, ExporterSettings
from atls.protection import (
    ClientProtector,
    ProtectionError,
    ReplayError,
    ReplayWindow,
    ServerProtector,
    read_sequence,
)


def _keys(secret: bytes | None = None) -> ExportedKeys:
    return ExportedKeys(
        "TLS_AES_128_GCM_SHA256",
        AES_128_GCM,
        secret or os.urandom(16),
        os.urandom(16),
        ExporterSettings(),
    )


def test_round_trip_binds_response_to_request():
    keys = _keys()
    client, server = ClientProtector(keys), ServerProtector(keys)
    for payload in (b"", b"GET / HTTP/1.1\r\n\r\n", os.urandom(70000)):
        seq, body = client.seal_request(payload)
        assert payload[:16] not in body or not payload
        got_seq, plaintext = server.open_request(body)
        assert (got_seq, plaintext) == (seq, payload)
        answer = server.seal_response(seq, b"reply" + payload)
        assert client.open_response(seq, answer) == b"reply" + payload


def test_replay_is_rejected_and_the_session_keeps_working():
    keys = _keys()
    client, server = ClientProtector(keys), ServerProtector(keys)
    _, first = client.seal_request(b"one")
    server.open_request(first)
    with pytest.raises(ReplayError, match="already accepted"):
        server.open_request(first)
    _, second = client.seal_request(b"two")
    assert server.open_request(second)[1] == b"two"


def test_out_of_order_within_window_is_accepted_once():
    keys = _keys()
    client, server = ClientProtector(keys), ServerProtector(keys, replay_window=4)
    bodies = [client.seal_request(b"%d" % i)[1] for i in range(8)]
    server.open_request(bodies[7])
    server.open_request(bodies[5])
    with pytest.raises(ReplayError, match="older than the replay window"):
        server.open_request(bodies[2])
    with pytest.raises(ReplayError):
        server.open_request(bodies[5])


def test_tampering_fails_without_touching_the_window():
    keys = _keys()
    client, server = ClientProtector(keys), ServerProtector(keys)
    _, body = client.seal_request(b"secret request")
    flipped = bytearray(body)
    flipped[-3] ^= 1
    with pytest.raises(ProtectionError, match="does not open"):
        server.open_request(bytes(flipped))
    # The genuine message still opens: a forgery did not burn its sequence number.
    assert server.open_request(body)[1] == b"secret request"


def test_changed_keyid_changes_the_key():
    keys = _keys()
    client, server = ClientProtector(keys), ServerProtector(keys)
    _, body = client.seal_request(b"x")
    assert read_sequence(body) == 0
    relabelled = body[:21] + b"1" + body[22:]
    with pytest.raises(ProtectionError):
        server.open_request(relabelled)


def test_directions_and_sessions_are_separate():
    keys = _keys()
    client, server = ClientProtector(keys), ServerProtector(keys)
    seq, request = client.seal_request(b"ping")
    with pytest.raises(ProtectionError):  # a request reflected as the response
        client.open_response(seq, request)
    other = ServerProtector(_keys())
    with pytest.raises(ProtectionError):  # another session's keys
        other.open_request(request)
    answer = server.seal_response(seq, b"pong")
    with pytest.raises(ProtectionError, match="expected 1"):
        client.open_response(1, answer)


@pytest.mark.parametrize("body", [b"", b"short", os.urandom(21) + b"x", b"\x00" * 20 + b"\x03abc"])
def test_malformed_headers_are_protection_errors(body):
    with pytest.raises(ProtectionError):
        ServerProtector(_keys()).open_request(body)


def test_window_accepts_a_fresh_run():
    window = ReplayWindow(64)
    for seq in range(200):
        window.accept(seq)
    window.accept(1000)
    with pytest.raises(ReplayError):
        window.accept(999 - 64)
