"""Key logs (SSLKEYLOGFILE format) for inner ATLS sessions: written, and they decrypt.

The decryption check re-derives TLS 1.3 record keys from the logged server
handshake secret (RFC 8446 section 7.3) and opens the first encrypted record of
the service's flight: it must be the EncryptedExtensions message.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from atls.loopback import run_handshake
from atls.pki import PKIDirectory
from atls.records import ContentType, iter_records
from atls.session import ATLSSession, Role, TLSConfig, TLSVersion, open_keylog
from tests.conftest import client_config

TLS13_LABELS = {
    "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
    "SERVER_HANDSHAKE_TRAFFIC_SECRET",
    "CLIENT_TRAFFIC_SECRET_0",
    "SERVER_TRAFFIC_SECRET_0",
    "EXPORTER_SECRET",
}


def handshake(pki: PKIDirectory, version: TLSVersion, client_log: Path, server_log: Path):
    server = TLSConfig(
        Role.SERVER,
        identity=pki.service(),
        trust_anchors=pki.vendor_ca().cert_pem,
        require_client_certificate=True,
        min_version=version,
        max_version=version,
        keylog=server_log,
    )
    client = ATLSSession(client_config(pki, version, keylog=client_log).build())
    return run_handshake(client, ATLSSession(server.build())).flights


def entries(path: Path) -> dict[str, tuple[str, str]]:
    """label -> (client random hex, secret hex); NSS key log lines."""
    out = {}
    for line in path.read_text().splitlines():
        label, client_random, secret = line.split(" ")
        out[label] = (client_random, secret)
    return out


def test_tls13_secrets_are_logged_by_both_sides(pki, tmp_path):
    flights = handshake(pki, TLSVersion.TLS1_3, tmp_path / "c.log", tmp_path / "s.log")
    client, server = entries(tmp_path / "c.log"), entries(tmp_path / "s.log")
    assert set(client) == set(server) == TLS13_LABELS
    assert client == server  # the same secrets, so either file decrypts both directions
    hello = flights[0][1]
    client_random = hello[11:43].hex()  # record header 5 + handshake header 4 + version 2
    assert {random for random, _ in client.values()} == {client_random}
    assert stat.S_IMODE((tmp_path / "c.log").stat().st_mode) == 0o600


def test_tls12_logs_the_master_secret(pki, tmp_path):
    flights = handshake(pki, TLSVersion.TLS1_2, tmp_path / "c.log", tmp_path / "s.log")
    client = entries(tmp_path / "c.log")
    assert set(client) == {"CLIENT_RANDOM"}
    random, master = client["CLIENT_RANDOM"]
    assert random == flights[0][1][11:43].hex() and len(master) == 96  # 48 bytes
    assert entries(tmp_path / "s.log") == client


def hkdf_expand_label(secret: bytes, label: str, length: int) -> bytes:
    full = b"tls13 " + label.encode()
    info = length.to_bytes(2) + bytes([len(full)]) + full + b"\x00"
    return HKDFExpand(hashes.SHA384(), length, info).derive(secret)


def test_the_logged_secret_decrypts_the_captured_server_flight(pki, tmp_path):
    flights = handshake(pki, TLSVersion.TLS1_3, tmp_path / "c.log", tmp_path / "s.log")
    secret = bytes.fromhex(entries(tmp_path / "c.log")["SERVER_HANDSHAKE_TRAFFIC_SECRET"][1])
    # Our default suite is TLS_AES_256_GCM_SHA384: SHA-384, a 32-byte key.
    key, iv = hkdf_expand_label(secret, "key", 32), hkdf_expand_label(secret, "iv", 12)
    server_flight = flights[1][1]
    encrypted = [
        r for r in iter_records(server_flight) if r.content_type is ContentType.APPLICATION_DATA
    ]
    record = encrypted[0]
    header = bytes([23, 3, 3]) + len(record.payload).to_bytes(2)
    inner = AESGCM(key).decrypt(iv, record.payload, header)  # sequence 0: nonce = iv
    content = inner.rstrip(b"\x00")
    assert content[-1] == ContentType.HANDSHAKE
    assert content[0] == 8  # EncryptedExtensions: only the logged secret opens it


def test_a_callable_gets_every_line(pki):
    lines: list[bytes] = []
    client = ATLSSession(client_config(pki, TLSVersion.TLS1_3, keylog=lines.append).build())
    server = TLSConfig(
        Role.SERVER, identity=pki.service(), trust_anchors=pki.vendor_ca().cert_pem
    ).build()
    run_handshake(client, ATLSSession(server))
    assert {line.split(b" ")[0].decode() for line in lines} == TLS13_LABELS


def test_an_unwritable_key_log_fails_at_configuration(tmp_path):
    with pytest.raises(ValueError, match="cannot write the key log .*missing"):
        open_keylog(tmp_path / "missing" / "keys.log")
    assert open_keylog(None) is None
