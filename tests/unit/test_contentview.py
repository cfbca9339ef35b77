"""The ATLS content view through mitmproxy's contentview API (as mitmweb calls it)."""

from __future__ import annotations

import pytest
from mitmproxy import contentviews, http
from mitmproxy.test import taddons, tflow

from atls.http_binding import LEGACY_MEDIA_TYPE, MEDIA_TYPE
from atls.loopback import run_handshake
from atls.session import ATLSSession, TLSVersion
from atls_policy.contentview import ATLSView, atls_view
from tests.conftest import client_config


@pytest.fixture(scope="module")
def flights(pki, server_context) -> dict[str, list[bytes]]:
    out = {}
    for version in (TLSVersion.TLS1_2, TLSVersion.TLS1_3):
        client = ATLSSession(client_config(pki, version).build())
        transcript = run_handshake(client, ATLSSession(server_context))
        out[version.name] = [f for _, f in transcript.flights]
    return out


def shown(body: bytes, content_type: str | None = MEDIA_TYPE, **headers: str):
    """What mitmproxy's UIs show for a request with this body (view chosen automatically)."""
    with taddons.context():
        ATLSView().load(None)
        flow = tflow.tflow()
        flow.request.method = "POST"
        if content_type:
            flow.request.headers["content-type"] = content_type
        for name, value in headers.items():
            flow.request.headers[name.replace("_", "-")] = value
        flow.request.raw_content = body
        return contentviews.prettify_message(flow.request, flow)


def test_registered_under_its_name():
    ATLSView().load(None)
    assert "atls" in contentviews.registry.available_views()


def test_tls13_client_hello_is_decoded(flights):
    result = shown(flights["TLS1_3"][0])
    assert result.view_name == "ATLS"
    text = result.text
    assert "ClientHello" in text
    assert "versions offered: 1.3" in text
    assert "TLS_AES_256_GCM_SHA384" in text
    assert "key share groups: X25519MLKEM768, x25519" in text
    assert "SNI: atls-service" in text
    assert "ALPN: -" in text


def test_tls13_server_flight_shows_hello_then_unreadable_records(flights):
    text = shown(flights["TLS1_3"][1]).text
    assert "ServerHello" in text and "version: 1.3" in text
    assert "cipher suite: TLS_AES_256_GCM_SHA384" in text
    assert "record 3: application data, 23 bytes, unreadable" in text
    assert "Certificate" not in text  # encrypted in TLS 1.3


def test_tls12_certificates_are_visible_including_the_device(flights):
    server = shown(flights["TLS1_2"][1]).text
    assert "subject: CN=atls-service" in server
    assert "ServerHelloDone" in server
    device = shown(flights["TLS1_2"][2]).text
    assert "device-0001" in device  # TLS 1.2 exposes the device's serial
    assert "change_cipher_spec, 1 byte" in device
    assert "handshake, 40 bytes, encrypted, unreadable" in device


def test_legacy_media_type_is_decoded_too(flights):
    result = shown(flights["TLS1_3"][0], LEGACY_MEDIA_TYPE)
    assert result.view_name == "ATLS"
    assert "application/atls+octet-stream" in result.text


def test_export_mode_shows_the_rfc8188_header_only():
    header = bytes(16) + (4096).to_bytes(4) + b"\x01" + b"7"
    result = shown(header + b"\xaa" * 40, content_encoding="aes128gcm")
    assert result.view_name == "ATLS"
    assert "sequence number (keyid): 7" in result.text
    assert "record size: 4096" in result.text
    assert "40 bytes after the header, unreadable" in result.text


def test_garbage_under_the_atls_type_says_why():
    result = shown(b"GET / HTTP/1.1\r\n\r\n")
    assert result.view_name == "ATLS"
    assert "note: not TLS records" in result.text


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/octet-stream", "text/plain", None]
)
def test_other_types_keep_their_views(flights, content_type):
    assert shown(flights["TLS1_3"][0], content_type).view_name != "ATLS"


def test_smuggled_tls_flagged_by_the_addon_is_decoded(flights):
    flow = tflow.tflow()
    flow.request.headers["content-type"] = "application/octet-stream"
    flow.request.raw_content = flights["TLS1_3"][0]
    flow.metadata["atls"] = {"variant": "unlabelled", "flight": 1}
    flow.comment = "ATLS unlabelled request #1 -> block (no-smuggled-tls)"
    with taddons.context():
        ATLSView().load(None)
        result = contentviews.prettify_message(flow.request, flow)
    assert result.view_name == "ATLS"
    assert "middlebox: ATLS unlabelled request #1 -> block" in result.text
    assert "ClientHello" in result.text


def test_hostile_bodies_never_raise(flights):
    hello = flights["TLS1_2"][1]
    metadata = contentviews.Metadata(content_type=MEDIA_TYPE)
    for cut in range(0, len(hello), 7):
        assert atls_view.prettify(hello[:cut], metadata).startswith("ATLS message")
        flipped = bytearray(hello)
        flipped[cut] ^= 0xFF
        assert atls_view.prettify(bytes(flipped), metadata).startswith("ATLS message")


def test_response_flights_are_decoded(flights):
    flow = tflow.tflow()
    flow.response = http.Response.make(200, flights["TLS1_3"][1], {"content-type": MEDIA_TYPE})
    with taddons.context():
        ATLSView().load(None)
        result = contentviews.prettify_message(flow.response, flow)
    assert result.view_name == "ATLS" and "ServerHello" in result.text
