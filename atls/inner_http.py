"""The inner protocol: one HTTP/1.1 exchange per ATLS message, framed by h11.

Inside an established ATLS session, application data is an ordinary HTTP/1.1
request (client to service) and response (service to client). Using real
HTTP framing means every service endpoint is reachable over ATLS, and any
HTTP client library can talk through it with a transport adapter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import h11

MAX_INNER_HEADER_BYTES = 16384

Headers = list[tuple[str, str]]


class InnerHTTPError(ValueError):
    """The decrypted bytes are not one complete HTTP/1.1 message."""


@dataclass
class InnerRequest:
    method: str
    target: str
    headers: Headers = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)


@dataclass
class InnerResponse:
    status: int
    headers: Headers = field(default_factory=list)
    body: bytes = b""
    reason: str = ""

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)


def _framed(headers: Headers, body: bytes) -> Headers:
    kept = [(k, v) for k, v in headers if k.lower() not in ("content-length", "transfer-encoding")]
    return [*kept, ("content-length", str(len(body)))]


def encode_request(request: InnerRequest, host: str = "atls") -> bytes:
    conn = h11.Connection(h11.CLIENT)
    headers = _framed(request.headers, request.body)
    if not any(k.lower() == "host" for k, _ in headers):
        headers.insert(0, ("host", host))
    try:
        out = conn.send(h11.Request(method=request.method, target=request.target, headers=headers))
    except h11.LocalProtocolError as exc:
        raise InnerHTTPError(f"cannot encode request: {exc}") from None
    out = (out or b"") + (conn.send(h11.Data(data=request.body)) or b"")
    return out + (conn.send(h11.EndOfMessage()) or b"")


def encode_response(response: InnerResponse) -> bytes:
    conn = h11.Connection(h11.SERVER)
    # h11 needs to have seen a request before it sends a response.
    conn.receive_data(b"GET / HTTP/1.1\r\nhost: atls\r\n\r\n")
    conn.next_event()
    conn.next_event()
    headers = _framed(response.headers, response.body)
    out = conn.send(
        h11.Response(status_code=response.status, headers=headers, reason=response.reason.encode())
    )
    out = (out or b"") + (conn.send(h11.Data(data=response.body)) or b"")
    return out + (conn.send(h11.EndOfMessage()) or b"")


def _collect(conn: h11.Connection, data: bytes) -> tuple[object, bytes]:
    conn.receive_data(data)
    conn.receive_data(b"")  # the message must be complete in these bytes
    head: object = None
    body = bytearray()
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise InnerHTTPError(f"malformed inner HTTP message: {exc}") from None
        if isinstance(event, h11.Request | h11.Response):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return head, bytes(body)
        elif event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
            raise InnerHTTPError("inner HTTP message is incomplete")
        else:  # pragma: no cover - h11 has no other events for one message
            raise InnerHTTPError(f"unexpected inner HTTP event {event!r}")


def _headers(raw: list[tuple[bytes, bytes]]) -> Headers:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]


def decode_request(data: bytes) -> InnerRequest:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_INNER_HEADER_BYTES)
    head, body = _collect(conn, data)
    assert isinstance(head, h11.Request)
    return InnerRequest(
        method=head.method.decode("ascii"),
        target=head.target.decode("ascii"),
        headers=_headers(list(head.headers)),
        body=body,
    )


def decode_response(data: bytes, method: str = "GET") -> InnerResponse:
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_INNER_HEADER_BYTES)
    conn.send(h11.Request(method=method, target="/", headers=[("host", "atls")]))
    conn.send(h11.EndOfMessage())
    head, body = _collect(conn, data)
    if not isinstance(head, h11.Response):
        raise InnerHTTPError("inner HTTP message is not a final response")
    return InnerResponse(
        status=head.status_code,
        headers=_headers(list(head.headers)),
        body=body,
        reason=head.reason.decode("latin-1"),
    )
