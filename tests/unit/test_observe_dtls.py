"""What the middlebox sees of DTLS records in ATLS bodies (no keys, no mitmproxy flows)."""

from __future__ import annotations

from atls.config import Role, TLSConfig
from atls.dtls import DTLSContext, DTLSSession
from atls.loopback import run_datagram_handshake
from atls.records import ContentType
from atls_policy.detect import looks_like_tls
from atls_policy.observe import summarize
from tests.conftest import client_config


def _transcript(pki):
    server = TLSConfig(
        Role.SERVER,
        identity=pki.service(),
        trust_anchors=pki.vendor_ca().cert_pem,
        require_client_certificate=True,
    ).with_profile("constrained")
    client = DTLSSession(
        DTLSContext(client_config(pki, alpn=("coap",)).with_profile("constrained"), mtu=300)
    )
    server_session = DTLSSession(DTLSContext(server, mtu=300), client_id="192.0.2.1")
    transcript = run_datagram_handshake(client, server_session)
    return client, server_session, [body for _, body in transcript.flights]


def test_dtls_handshake_as_the_middlebox_sees_it(pki):
    client, server, flights = _transcript(pki)
    first, hvr, second, server_flight, client_flight = (summarize(f) for f in flights[:5])
    assert looks_like_tls(flights[0])
    assert first.handshake == ["client_hello"] and first.cookie_length == 0
    hello = first.client_hello
    assert hello is not None and hello.versions == ["DTLS 1.2"]
    assert hello.sni == "atls-service" and hello.alpn == ["coap"]
    assert "TLS_ECDHE_ECDSA_WITH_AES_128_CCM" in hello.cipher_suites
    assert hvr.handshake == ["hello_verify_request"] and hvr.cookie_length == 16
    assert second.cookie_length == 16
    # the certificate flight is fragmented over several records: reassembled
    assert len(server_flight.records) > 4
    assert server_flight.server_hello is not None
    assert server_flight.server_hello.version == "DTLS 1.2"
    assert server_flight.server_hello.cipher_suite == "TLS_ECDHE_ECDSA_WITH_AES_128_CCM"
    assert server_flight.certificates[0] == pki.service().certificate.subject.rfc4514_string()
    # DTLS 1.2, like TLS 1.2, shows the device's certificate (its serial number)
    assert any("device-0001" in s for s in client_flight.certificates)
    assert [e for e, _ in client_flight.dtls][-1] == 1  # Finished: epoch 1, not read
    line = first.one_line()
    assert "DTLS records" in line and "epoch.seq 0.0" in line
    records = first.to_dict()["records"]
    assert records[0]["epoch"] == 0 and records[0]["seq"] == 0


def test_dtls_application_data_shows_epoch_and_sequence(pki):
    client, server, _ = _transcript(pki)
    client.send(b"a")
    client.send(b"b")
    body = b"".join(client.data_to_send())
    summary = summarize(body)
    assert [t for t, _ in summary.records] == ["application_data"] * 2
    assert summary.dtls[0][0] == 1 and summary.dtls[1][1] == summary.dtls[0][1] + 1
    assert summary.client_hello is None and not summary.handshake


def test_hostile_dtls_fragments_never_raise(pki):
    header = bytes([ContentType.HANDSHAKE, 0xFE, 0xFD]) + b"\0\0" + b"\0" * 6
    # a fragment claiming a 16 MB message, and garbage fragment headers
    for payload in (b"\x01\xff\xff\xff\0\0\0\0\0\0\0\x04abcd", b"\x01" * 40, b"\x03\0\0\x01" * 8):
        summary = summarize(header + len(payload).to_bytes(2) + payload)
        assert summary.client_hello is None


def test_policies_match_dtls_sessions(pki):
    from atls_policy.policy import FlightContext, PolicyState, parse_policy

    policy = parse_policy(
        "rules:\n  - {id: no-dtls, action: block, match: {tls_versions: [dtls1.2]}}\n"
    )
    _, _, flights = _transcript(pki)
    offered = frozenset(summarize(flights[0]).offered_versions)
    assert offered == {"DTLS 1.2"}
    base = {"client": "10.0.0.5", "host": "svc", "port": 443, "path": "/.well-known/atls"}
    dtls = FlightContext(**base, variant="current", direction="request", flight=1,
                         offered_versions=offered)  # fmt: skip
    tls = FlightContext(**base, variant="current", direction="request", flight=1,
                        offered_versions=frozenset({"1.3", "1.2"}))  # fmt: skip
    assert policy.decide(dtls, PolicyState()).rule == "no-dtls"
    assert policy.decide(tls, PolicyState()).rule == "default"


async def test_the_addon_sees_and_marks_dtls_flights(pki, tmp_path):
    import json

    from tests.unit.test_addon import atls_flow, chain, with_response, write_policy

    _, _, flights = _transcript(pki)
    policy = write_policy(
        tmp_path,
        "rules:\n  - {id: dtls, action: mark, mark: ':eyes:', match: {tls_versions: [dtls1.2]}}\n",
    )
    audit_log = tmp_path / "audit.jsonl"
    with chain() as (a, tctx):
        tctx.configure(a.enforcer, atls_policy=str(policy), atls_audit_log=str(audit_log))
        flow = atls_flow(flights[0])
        await a.request(flow)
        assert flow.response is None
        with_response(flow, flights[1])  # HelloVerifyRequest: no session cookie yet
        await a.response(flow)
        assert flow.marked == ":eyes:"
        assert "ClientHello[DTLS 1.2 sni=atls-service" in flow.comment
        assert "DTLS records" in flow.comment
        smuggled = atls_flow(flights[2], path="/upload", content_type="application/octet-stream")
        await a.request(smuggled)
        assert smuggled.metadata["atls"]["variant"] == "unlabelled"
    lines = [json.loads(line) for line in audit_log.read_text().splitlines()]
    first = lines[0]["summary"]
    assert first["cookie_length"] == 0 and first["records"][0]["epoch"] == 0
    assert lines[1]["summary"]["handshake"] == ["hello_verify_request"]
