"""Inner HTTP/1.1 framing with h11."""

from __future__ import annotations

import pytest

from atls.inner_http import (
    InnerHTTPError,
    InnerRequest,
    InnerResponse,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)


def test_request_round_trip():
    request = InnerRequest("POST", "/api/echo?x=1", [("content-type", "text/plain")], b"hi")
    decoded = decode_request(encode_request(request))
    assert (decoded.method, decoded.target, decoded.body) == ("POST", "/api/echo?x=1", b"hi")
    assert decoded.header("content-type") == "text/plain"
    assert decoded.header("content-length") == "2"
    assert decoded.header("host") == "atls"


def test_response_round_trip():
    response = InnerResponse(404, [("content-type", "application/json")], b'{"a": 1}')
    decoded = decode_response(encode_response(response), "GET")
    assert (decoded.status, decoded.body) == (404, b'{"a": 1}')
    assert decode_response(encode_response(InnerResponse(204)), "GET").body == b""


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage\r\n\r\n",
        b"GET / HTTP/1.1\r\n",
        b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 10\r\n\r\nshort",
        b"GET / HTTP/1.1\r\n" + b"x: " + b"a" * 20000 + b"\r\n\r\n",
    ],
    ids=["empty", "garbage", "no-end-of-headers", "short-body", "huge-header"],
)
def test_malformed_requests_are_inner_errors(data):
    with pytest.raises(InnerHTTPError):
        decode_request(data)


def test_malformed_response_is_an_inner_error():
    with pytest.raises(InnerHTTPError):
        decode_response(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nab")
