"""RFC 8188 aes128gcm: the RFC's own examples, and the same bytes as http_ece."""

from __future__ import annotations

import base64
import os

import http_ece
import pytest

from atls import ece


def b64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_rfc8188_section_3_1_encryption_of_a_response():
    body = ece.encrypt(
        b"I am the walrus",
        b64u("yqdlZ-tYemfogSmv7Ws5PQ"),
        rs=4096,
        salt=b64u("I1BsxtFttlv3u_Oo94xnmw"),
    )
    assert body == b64u("I1BsxtFttlv3u_Oo94xnmwAAEAAA-NAVub2qFgBEuQKRapoZu-IxkIva3MEB1PD-ly8Thjg")
    assert ece.decrypt(body, b64u("yqdlZ-tYemfogSmv7Ws5PQ")) == b"I am the walrus"


def test_rfc8188_section_3_2_with_multiple_records():
    body = b64u(
        "uNCkWiNYzKTnBN9ji3-qWAAAABkCYTHOG8chz_gnvgOqdGYovxyjuqRyJFjEDyoF"
        "1Fvkj6hQPdPHI51OEUKEpgz3SsLWIqS_uA"
    )
    assert ece.header(body)[:2] == (25, b"a1")
    assert ece.decrypt(body, b64u("BO3ZVPxUlnLORbVGMpbT1Q")) == b"I am the walrus"


@pytest.mark.parametrize("size", [0, 1, 16366, 16367, 16368, 70000])
@pytest.mark.parametrize("rs", [18, 4096, 16384])
def test_same_bytes_as_http_ece(size, rs):
    key, salt, plaintext = os.urandom(16), os.urandom(16), os.urandom(size)
    if rs == 18 and size > 1000:
        plaintext = plaintext[:1000]
    ours = ece.encrypt(plaintext, key, keyid=b"17", rs=rs, salt=salt)
    theirs = http_ece.encrypt(plaintext, key=key, keyid="17", rs=rs, salt=salt)
    if size:  # empty: http_ece sends a bare header, we send the one record RFC 8188 describes
        assert ours == theirs
    assert http_ece.decrypt(ours, key=key) == plaintext
    if size:
        assert ece.decrypt(theirs, key) == plaintext


def test_damage_is_refused():
    key = os.urandom(16)
    body = ece.encrypt(os.urandom(5000), key, rs=1024)
    with pytest.raises(ece.ECEError, match="truncated"):
        ece.decrypt(body[: 21 + 1024 * 2], key)  # whole records, but not the last one
    with pytest.raises(ece.ECEError, match="authenticate"):
        ece.decrypt(body[:-1] + bytes([body[-1] ^ 1]), key)
    with pytest.raises(ece.ECEError, match="record size"):
        ece.decrypt(body[:16] + (5).to_bytes(4) + body[20:], key)
    with pytest.raises(ece.ECEError, match="shorter"):
        ece.decrypt(b"short", key)
    with pytest.raises(ece.ECEError, match="no records"):  # unauthenticated: never "empty"
        ece.decrypt(body[:21], key)
