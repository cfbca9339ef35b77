"""A hostile ATLS peer: malformed and out-of-order handshake messages *inside* a session.

A middlebox sees only opaque bytes; a peer that holds a real TLS client can
send what a middlebox cannot forge: a second ClientHello in a session, a
Finished before any hello, a TLS 1.2 Certificate message whose DER is broken
but whose lengths are right, handshake messages split into one-byte records.
Raw records are built here on top of a real ``ATLSSession`` client.

Each case talks over a ``Channel`` (the server driver in memory, or the
running service over HTTP) and returns the answers it got; the tests check
that every answer is a documented refusal or a normal reply, never more.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from atls.config import TLSVersion
from atls.records import ContentType, HandshakeType, iter_records
from atls.session import ATLSSession, TLSConfig


def record(content_type: int, payload: bytes, version: int = 0x0303) -> bytes:
    return bytes([content_type]) + version.to_bytes(2) + len(payload).to_bytes(2) + payload


def handshake(msg_type: int, body: bytes, declared: int | None = None) -> bytes:
    length = len(body) if declared is None else declared
    return bytes([msg_type]) + length.to_bytes(3) + body


def split_records(flight: bytes, size: int) -> bytes:
    """The same records' payloads re-cut into records of ``size`` bytes (same type)."""
    out = b""
    for rec in iter_records(flight):
        for at in range(0, len(rec.payload), size):
            out += record(rec.content_type, rec.payload[at : at + size], rec.legacy_version)
    return out


def corrupt_certificate_der(flight: bytes) -> bytes:
    """TLS 1.2 client flight: break the DER inside the Certificate message, lengths intact."""
    out = b""
    for rec in iter_records(flight):
        payload = bytearray(rec.payload)
        if rec.content_type == ContentType.HANDSHAKE and payload[:1] == bytes(
            [HandshakeType.CERTIFICATE]
        ):
            # msg header 4, list length 3, cert length 3, then DER: flip its tag and length
            payload[10] ^= 0xFF
            payload[11] ^= 0x7F
        out += record(rec.content_type, bytes(payload), rec.legacy_version)
    return out


@dataclass
class Answer:
    status: int
    slug: str | None  # the problem document's slug for a refusal
    body: bytes
    cookie: str | None  # a new session's handle


class Channel(Protocol):
    def post(self, body: bytes, cookie: str | None) -> Answer: ...


Case = Callable[[Channel, Callable[[TLSVersion], TLSConfig]], list[Answer]]


def _client(config: Callable[[TLSVersion], TLSConfig], version: TLSVersion) -> ATLSSession:
    return ATLSSession(config(version).build())


def server_hello_from_client(ch: Channel, config: Callable[..., TLSConfig]) -> list[Answer]:
    body = os.urandom(38) + b"\x00\x13\x01\x00\x00\x00"
    return [ch.post(record(22, handshake(HandshakeType.SERVER_HELLO, body)), None)]


def finished_first(ch: Channel, config: Callable[..., TLSConfig]) -> list[Answer]:
    return [ch.post(record(22, handshake(HandshakeType.FINISHED, os.urandom(32))), None)]


def client_hello_length_lies(ch: Channel, config: Callable[..., TLSConfig]) -> list[Answer]:
    hello = _client(config, TLSVersion.TLS1_3).initiate()
    rec = next(iter_records(hello))
    lying = bytes([1]) + (0xFFFFFF).to_bytes(3) + rec.payload[4:]
    return [ch.post(record(22, lying), None)]


def client_hello_truncated_inside(ch: Channel, config: Callable[..., TLSConfig]) -> list[Answer]:
    """Record and message lengths consistent, the ClientHello's own fields cut short."""
    hello = _client(config, TLSVersion.TLS1_3).initiate()
    body = next(iter_records(hello)).payload[4:60]
    return [ch.post(record(22, handshake(HandshakeType.CLIENT_HELLO, body)), None)]


def two_client_hellos(ch: Channel, config: Callable[..., TLSConfig]) -> list[Answer]:
    first = _client(config, TLSVersion.TLS1_3).initiate()
    second = _client(config, TLSVersion.TLS1_3).initiate()
    return [ch.post(first + second, None)]


def application_data_first(ch: Channel, config: Callable[..., TLSConfig]) -> list[Answer]:
    return [ch.post(record(23, os.urandom(64)), None)]


def change_cipher_spec_first(ch: Channel, config: Callable[..., TLSConfig]) -> list[Answer]:
    return [ch.post(record(20, b"\x01"), None)]


def alert_first(ch: Channel, config: Callable[..., TLSConfig]) -> list[Answer]:
    return [ch.post(record(21, b"\x02\x28"), None)]


def hello_in_one_byte_records(ch: Channel, config: Callable[..., TLSConfig]) -> list[Answer]:
    """Legal TLS (fragmentation), hostile in cost: the answer may be a reply or a refusal."""
    return [ch.post(split_records(_client(config, TLSVersion.TLS1_3).initiate(), 1), None)]


def second_client_hello_mid_handshake(
    ch: Channel, config: Callable[..., TLSConfig]
) -> list[Answer]:
    first = ch.post(_client(config, TLSVersion.TLS1_3).initiate(), None)
    again = _client(config, TLSVersion.TLS1_3).initiate()
    return [first, ch.post(again, first.cookie)]


def finished_replaced_by_garbage(ch: Channel, config: Callable[..., TLSConfig]) -> list[Answer]:
    client = _client(config, TLSVersion.TLS1_3)
    first = ch.post(client.initiate(), None)
    client.receive_flight(first.body)
    flight = bytearray(client.data_to_send())
    flight[-5:] = os.urandom(5)  # the last encrypted record's tag: Finished cannot verify
    return [first, ch.post(bytes(flight), first.cookie)]


def tls12_certificate_der_broken(ch: Channel, config: Callable[..., TLSConfig]) -> list[Answer]:
    client = _client(config, TLSVersion.TLS1_2)
    first = ch.post(client.initiate(), None)
    client.receive_flight(first.body)
    return [first, ch.post(corrupt_certificate_der(client.data_to_send()), first.cookie)]


def client_hello_inside_established_session(
    ch: Channel, config: Callable[..., TLSConfig]
) -> list[Answer]:
    """A complete handshake, then a plaintext ClientHello as if renegotiating."""
    client = _client(config, TLSVersion.TLS1_3)
    first = ch.post(client.initiate(), None)
    client.receive_flight(first.body)
    second = ch.post(client.data_to_send(), first.cookie)
    hello = _client(config, TLSVersion.TLS1_3).initiate()
    return [first, second, ch.post(hello, first.cookie)]


def reordered_second_flight(ch: Channel, config: Callable[..., TLSConfig]) -> list[Answer]:
    """TLS 1.2: the client's second flight with its records in reverse order."""
    client = _client(config, TLSVersion.TLS1_2)
    first = ch.post(client.initiate(), None)
    client.receive_flight(first.body)
    records = list(iter_records(client.data_to_send()))
    reordered = b"".join(record(r.content_type, r.payload, r.legacy_version) for r in records[::-1])
    return [first, ch.post(reordered, first.cookie)]


def ssl3_record_version(ch: Channel, config: Callable[..., TLSConfig]) -> list[Answer]:
    hello = _client(config, TLSVersion.TLS1_3).initiate()
    rec = next(iter_records(hello))
    return [ch.post(record(22, rec.payload, version=0x0300), None)]


CASES: dict[str, Case] = {
    "server-hello-from-client": server_hello_from_client,
    "finished-first": finished_first,
    "client-hello-length-lies": client_hello_length_lies,
    "client-hello-truncated-inside": client_hello_truncated_inside,
    "two-client-hellos": two_client_hellos,
    "application-data-first": application_data_first,
    "change-cipher-spec-first": change_cipher_spec_first,
    "alert-first": alert_first,
    "hello-in-one-byte-records": hello_in_one_byte_records,
    "second-client-hello-mid-handshake": second_client_hello_mid_handshake,
    "finished-replaced-by-garbage": finished_replaced_by_garbage,
    "tls12-certificate-der-broken": tls12_certificate_der_broken,
    "client-hello-inside-established-session": client_hello_inside_established_session,
    "reordered-second-flight": reordered_second_flight,
    "ssl3-record-version": ssl3_record_version,
}

# The answer each case's *last* message must get: refusal slugs (or "reply").
EXPECTED_LAST: dict[str, set[str]] = {
    "server-hello-from-client": {"tls-alert", "not-a-client-hello"},
    "finished-first": {"tls-alert", "not-a-client-hello"},
    "client-hello-length-lies": {"tls-alert", "incomplete-flight", "not-a-client-hello"},
    "client-hello-truncated-inside": {"tls-alert", "not-a-client-hello"},
    "two-client-hellos": {"tls-alert"},
    "application-data-first": {"tls-alert", "not-a-client-hello"},
    "change-cipher-spec-first": {"tls-alert", "not-a-client-hello"},
    "alert-first": {"tls-alert", "not-a-client-hello", "incomplete-flight"},
    "hello-in-one-byte-records": {"reply", "tls-alert"},
    "second-client-hello-mid-handshake": {"tls-alert", "incomplete-flight"},
    "finished-replaced-by-garbage": {"tls-alert"},
    "tls12-certificate-der-broken": {"tls-alert"},
    "client-hello-inside-established-session": {"tls-alert"},
    "reordered-second-flight": {"tls-alert", "incomplete-flight"},
    # RFC 8446 5.1: legacy_record_version is ignored, so this one is accepted
    "ssl3-record-version": {"reply"},
}
