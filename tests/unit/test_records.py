"""Record framing as an observer sees it; arbitrary binary is never TLS."""

from __future__ import annotations

import os
import random

import pytest

from atls.loopback import run_handshake
from atls.records import (
    ContentType,
    HandshakeType,
    RecordError,
    TruncatedRecord,
    looks_like_tls,
    parse_records,
)
from atls.session import ATLSSession
from tests.conftest import client_config


def test_real_flights_parse(pki, server_context):
    client, server = ATLSSession(client_config(pki).build()), ATLSSession(server_context)
    flights = run_handshake(client, server).flights
    hello = parse_records(flights[0][1])
    assert hello[0].content_type is ContentType.HANDSHAKE
    assert hello[0].handshake_type is HandshakeType.CLIENT_HELLO
    assert parse_records(flights[1][1])[0].handshake_type is HandshakeType.SERVER_HELLO
    assert all(looks_like_tls(f) for _, f in flights)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello world",
        b"GET / HTTP/1.1\r\n\r\n",
        b'{"json": true}',
        b"\x16\x03",
        b"\x16\x05\x01\x00\x01\x00",
        b"\x18\x07\x03\x00\x01\x00",
        b"\x16\xfe\xfd\x00\x00\x00\x00\x00\x00\x00\x00\x00\x05\x00",  # DTLS, cut short
        b"\x16\x03\x03\x00\x00",
        b"\x17\x03\x03\xff\xff" + b"\x00" * 70000,
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 30,
    ],
)
def test_non_tls_is_not_tls(data):
    assert not looks_like_tls(data)


def test_random_binary_is_almost_never_tls():
    rng = random.Random(7)
    blobs = [rng.randbytes(rng.randrange(1, 4096)) for _ in range(2000)]
    assert sum(looks_like_tls(b) for b in blobs) == 0


def test_truncation_is_distinguished():
    with pytest.raises(TruncatedRecord):
        parse_records(b"\x16\x03\x01\x00\x10" + os.urandom(4))
    with pytest.raises(RecordError, match="neither TLS nor DTLS"):
        parse_records(b"\x16\x02\x01\x00\x01\x00")


@pytest.mark.parametrize("content_type", [24, 25, 26, 99])
def test_every_content_type_is_a_record(content_type):
    """The draft limits no content type: heartbeat (24), tls12_cid (25), ... are records."""
    record = parse_records(bytes([content_type]) + b"\x03\x03\x00\x02ab")[0]
    assert record.content_type == content_type and record.payload == b"ab"
    assert looks_like_tls(bytes([content_type]) + b"\x03\x03\x00\x02ab")


@pytest.mark.parametrize("version", [b"\xfe\xfd", b"\xfe\xfc", b"\xfe\xff"])
def test_dtls_record_headers_parse(version):
    header = b"\x16" + version + b"\x00\x01" + (7).to_bytes(6, "big") + b"\x00\x03"
    records = parse_records(header + b"xyz" + b"\x17\x03\x03\x00\x01!")
    dtls, tls = records
    assert dtls.dtls and dtls.epoch == 1 and dtls.sequence == 7 and dtls.payload == b"xyz"
    assert dtls.wire_length == 16 and dtls.content_type is ContentType.HANDSHAKE
    assert not tls.dtls and tls.wire_length == 6
    with pytest.raises(TruncatedRecord):
        parse_records(header + b"xy")
