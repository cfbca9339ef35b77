"""The policy addon with mitmproxy's own test helpers (taddons, tflow)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from mitmproxy import exceptions, http
from mitmproxy.proxy.layers.http import HttpRequestHook, HttpResponseHook
from mitmproxy.test import taddons, tflow

from atls.http_binding import LEGACY_MEDIA_TYPE, MEDIA_TYPE
from atls.loopback import run_handshake
from atls.records import parse_records
from atls.session import ATLSSession, TLSVersion
from atls_policy import default_addons
from atls_policy import faults as faults_module
from atls_policy.detect import classify_request, classify_response
from atls_policy.observe import summarize
from atls_policy.policy import PolicyError, parse_policy
from tests.conftest import client_config


@pytest.fixture(scope="module")
def flights(pki, server_context) -> dict[str, list[bytes]]:
    out = {}
    for version in (TLSVersion.TLS1_2, TLSVersion.TLS1_3):
        client = ATLSSession(client_config(pki, version).build())
        transcript = run_handshake(client, ATLSSession(server_context))
        out[version.name] = [f for _, f in transcript.flights]
    return out


def atls_flow(
    body: bytes,
    *,
    path: str = "/.well-known/atls",
    content_type: str = MEDIA_TYPE,
    cookie: str | None = None,
    client: str = "127.0.0.1",
) -> http.HTTPFlow:
    flow = tflow.tflow()
    flow.request.method = "POST"
    flow.request.path = path
    flow.request.host = "atls-service"
    flow.request.port = 443
    flow.request.headers["content-type"] = content_type
    if cookie:
        flow.request.headers["cookie"] = f"atls_session={cookie}"
    flow.request.content = body
    flow.client_conn.peername = (client, 40000)
    return flow


def with_response(flow: http.HTTPFlow, body: bytes, set_cookie: str | None = None) -> None:
    headers = {"content-type": MEDIA_TYPE}
    if set_cookie:
        headers["set-cookie"] = f"atls_session={set_cookie}; Path=/.well-known/atls"
    flow.response = http.Response.make(200, body, headers)


class Chain:
    """The four ATLS addons as mitmproxy runs them: each hook through the addon manager."""

    def __init__(self, tctx: taddons.context, addons: list) -> None:
        self.tctx = tctx
        self.tracker, self.enforcer, self.faults, self.audit, self.view = addons

    async def request(self, flow: http.HTTPFlow) -> None:
        await self.tctx.master.addons.handle_lifecycle(HttpRequestHook(flow))

    async def response(self, flow: http.HTTPFlow) -> None:
        await self.tctx.master.addons.handle_lifecycle(HttpResponseHook(flow))

    def metrics(self) -> str:
        return self.audit.metrics()


@contextlib.contextmanager
def chain() -> Iterator[tuple[Chain, taddons.context]]:
    addons = default_addons()
    with taddons.context(*addons) as tctx:
        yield Chain(tctx, addons), tctx


def write_policy(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


# -- detection ------------------------------------------------------------------


def test_detection_by_label_and_path(flights):
    hello = flights["TLS1_3"][0]
    assert classify_request("POST", "/x", MEDIA_TYPE, b"") == "current"
    assert classify_request("POST", "/x", "Application/ATLS; q=1", b"") == "current"
    assert classify_request("POST", "/x", LEGACY_MEDIA_TYPE, b"") == "draft-00"
    assert classify_request("POST", "/.well-known/atls?x=1", None, b"") == "current"
    assert classify_request("POST", "/atls", "text/plain", b"") == "draft-00"
    assert classify_request("POST", "/upload", "application/octet-stream", hello) == "unlabelled"
    assert classify_request("POST", "/upload", "image/png", hello, False) is None
    assert classify_response(MEDIA_TYPE, b"") == "current"
    assert classify_response("application/octet-stream", flights["TLS1_3"][1]) == "unlabelled"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"hello",
        b"\x89PNG\r\n\x1a\n" + bytes(100),
        b"\x1f\x8b\x08\x00" + bytes(50),
        b'{"a": 1}',
        b"\x16\x03\x03\x00\x05abc",
        b"\x17\x03\x03\x00\x02ab" + b"!",
        bytes(4096),
        b"\x16\x03\x01",
    ],
    ids=[
        "empty",
        "text",
        "png",
        "gzip",
        "json",
        "short-record",
        "trailing-byte",
        "zeros",
        "header-only",
    ],
)
def test_binary_that_is_not_tls_is_not_atls(body):
    assert classify_request("POST", "/upload", "application/octet-stream", body) is None
    assert classify_request("GET", "/.well-known/atls", "text/html", body) is None


def test_random_binary_is_never_unlabelled_atls():
    rng = random.Random(3)
    hits = sum(
        classify_request(
            "POST", "/u", "application/octet-stream", rng.randbytes(rng.randrange(6, 3000))
        )
        is not None
        for _ in range(3000)
    )
    assert hits == 0


# -- what the middlebox sees ----------------------------------------------------------


def test_summaries_of_real_flights(flights, pki):
    hello = summarize(flights["TLS1_3"][0])
    assert hello.client_hello is not None
    assert hello.client_hello.versions == ["1.3"]  # the fixture pins 1.3
    assert hello.client_hello.sni == "atls-service"
    assert "X25519MLKEM768" in hello.client_hello.key_share_groups
    assert "TLS_AES_256_GCM_SHA384" in hello.client_hello.cipher_suites
    server13 = summarize(flights["TLS1_3"][1])
    assert server13.server_hello is not None
    assert (server13.server_hello.version, server13.server_hello.cipher_suite) == (
        "1.3",
        "TLS_AES_256_GCM_SHA384",
    )
    assert server13.certificates == [], "TLS 1.3 certificates are encrypted"
    server12 = summarize(flights["TLS1_2"][1])
    assert server12.server_hello and server12.server_hello.version == "1.2"
    assert server12.certificates[0] == "CN=atls-service"
    client12 = summarize(flights["TLS1_2"][2])
    assert "device-0001" in client12.certificates[0], "TLS 1.2 shows the device certificate"
    assert client12.handshake[-1] == "certificate_verify"
    assert [t for t, _ in client12.records].count("change_cipher_spec") == 1


def test_protected_messages_show_only_the_header():
    from atls.keys import AES_128_GCM, ExportedKeys, ExporterSettings
    from atls.protection import ClientProtector

    keys = ExportedKeys("x", AES_128_GCM, b"k" * 16, b"s" * 16, ExporterSettings())
    client = ClientProtector(keys)
    client.seal_request(b"first")
    _, body = client.seal_request(b"CANARY-SECRET")
    summary = summarize(body, "aes128gcm")
    assert summary.protected is not None
    assert summary.protected["coding"] == "aes128gcm" and summary.protected["seq"] == 1
    assert summary.protected["record_size"] == int.from_bytes(body[16:20])
    assert "CANARY" not in json.dumps(summary.to_dict())


def test_hostile_bodies_never_raise(flights):
    rng = random.Random(11)
    for _ in range(500):
        base = bytearray(rng.choice(flights["TLS1_2"] + flights["TLS1_3"]))
        for _ in range(rng.randrange(1, 8)):
            base[rng.randrange(len(base))] = rng.randrange(256)
        summarize(bytes(base[: rng.randrange(1, len(base) + 1)]))
    assert summarize(b"\x16\x03\x01\x00\x04\x01\x00\x00\x00").client_hello is None


# -- policy validation ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules: 5", "rules: must be a list"),
        ("rules:\n  - action: allow", "rules[0].id: every rule needs a non-empty string id"),
        ("rules:\n  - {id: a, action: explode}", "rules[0].action: 'explode' is not one of"),
        (
            "rules:\n  - {id: a, action: allow, match: {client: 10.0.0.0/33}}",
            "rules[0].match.client: '10.0.0.0/33' is not an IP address or network",
        ),
        (
            "rules:\n  - {id: a, action: allow, match: {port: [443, 70000]}}",
            "rules[0].match.port[1]: 70000 is not a port",
        ),
        (
            "rules:\n  - {id: a, action: allow, match: {variant: smuggled}}",
            "is not one of current, draft-00, unlabelled",
        ),
        (
            "rules:\n  - {id: a, action: allow, match: {tls_versions: ['1.4']}}",
            "is not a TLS version",
        ),
        ("rules:\n  - {id: a, action: allow, match: {colour: red}}", "unknown key 'colour'"),
        (
            "rules:\n  - {id: a, action: allow}\n  - {id: a, action: block}",
            "rules[1].id: duplicate rule id 'a'",
        ),
        ("rules:\n  - {id: a, action: block, status: 200}", "is not an HTTP error status"),
        ("rules:\n  - {id: a, action: limit}", "a limit rule needs limits"),
        (
            "rules:\n  - {id: a, action: limit, limits: {flights_per_session: -1}}",
            "rules[0].limits.flights_per_session: -1 is not a positive number",
        ),
        ("rules:\n  - {id: a, action: fault, fault: {type: melt}}", "'melt' is not one of"),
        ("rules:\n  - {id: a, action: fault, fault: {type: delay, seconds: 0}}", "is not a delay"),
        (
            "rules:\n  - {id: a, action: fault, fault: {type: bitflip, offset: 1, seed: 2}}",
            "either an offset or a seed",
        ),
        (
            "rules:\n  - {id: a, action: fault, fault: {type: truncate, seconds: 1}}",
            "unknown key 'seconds'",
        ),
        ("rules:\n  - {id: a, action: allow, fault: drop}", "only a 'fault' rule takes a fault"),
        ("default: audit", "default.action: the default is 'allow' or 'block'"),
        ("version: 2", "unsupported version 2"),
        ("rules: [", "not valid YAML"),
    ],
)
def test_invalid_policies_say_exactly_what_is_wrong(text, message):
    with pytest.raises(PolicyError) as error:
        parse_policy(text, "p.yaml")
    assert message in str(error.value)
    assert str(error.value).startswith("p.yaml")


def test_empty_policy_allows_everything():
    policy = parse_policy("")
    assert policy.rules == () and policy.default.action.value == "allow"


# -- the addon --------------------------------------------------------------------------


async def test_allow_audit_and_mark(tmp_path, flights):
    policy = write_policy(
        tmp_path,
        """
rules:
  - {id: watch, action: audit}
  - {id: flag-13, action: mark, mark: ":eyes:", match: {tls_versions: ["1.3"]}}
  - {id: ok, action: allow, match: {sni: "atls-*"}}
default: block
""",
    )
    audit_log = tmp_path / "audit.jsonl"
    with chain() as (a, tctx):
        tctx.configure(a.enforcer, atls_policy=str(policy), atls_audit_log=str(audit_log))
        flow = atls_flow(flights["TLS1_3"][0])
        await a.request(flow)
        assert flow.response is None, "allowed flights pass"
        with_response(flow, flights["TLS1_3"][1], set_cookie="cookie-1")
        await a.response(flow)
        assert flow.marked == ":eyes:"
        assert "ClientHello[1.3 sni=atls-service" in flow.comment
        assert "-> allow (ok)" in flow.comment
        follow = atls_flow(flights["TLS1_3"][2], cookie="cookie-1")
        await a.request(follow)
        assert follow.metadata["atls"]["flight"] == 2
        metrics = json.loads(a.metrics())
        assert metrics["rules"]["ok"]["allow"] == 3
        assert metrics["rules"]["watch"]["audit"] == 3
    lines = [json.loads(line) for line in audit_log.read_text().splitlines()]
    assert [(x["direction"], x["flight"], x["decision"]) for x in lines] == [
        ("request", 1, "allow"),
        ("response", 1, "allow"),
        ("request", 2, "allow"),
    ]
    assert lines[0]["summary"]["client_hello"]["sni"] == "atls-service"
    assert lines[0]["session"] is None and lines[2]["session"] == lines[1]["session"]
    assert lines[2]["session"] != "cookie-1", "the cookie itself is never logged"


async def test_block_answers_with_a_problem_naming_the_rule(tmp_path, flights):
    policy = write_policy(
        tmp_path,
        """
rules:
  - {id: no-legacy, action: block, status: 451, match: {variant: legacy}}
  - {id: no-smuggling, action: block, match: {variant: unlabelled}}
  - {id: no-tls12, action: block, match: {tls_versions: ["1.2"], direction: response}}
""",
    )
    with chain() as (a, tctx):
        tctx.configure(a.enforcer, atls_policy=str(policy))
        legacy = atls_flow(flights["TLS1_3"][0], path="/atls", content_type=LEGACY_MEDIA_TYPE)
        await a.request(legacy)
        assert legacy.response is not None and legacy.response.status_code == 451
        problem = json.loads(legacy.response.content)
        assert problem["rule"] == "no-legacy"
        assert problem["type"] == "urn:atls-testbed:problem:blocked-by-policy"
        smuggled = atls_flow(
            flights["TLS1_3"][0], path="/upload", content_type="application/octet-stream"
        )
        await a.request(smuggled)
        assert smuggled.response and json.loads(smuggled.response.content)["rule"] == "no-smuggling"
        ordinary = atls_flow(b"just a file", path="/upload", content_type="text/plain")
        await a.request(ordinary)
        assert ordinary.response is None and "atls" not in ordinary.metadata
        # A response-direction rule replaces the service's answer.
        old = atls_flow(flights["TLS1_2"][0])
        await a.request(old)
        assert old.response is None
        with_response(old, flights["TLS1_2"][1])
        await a.response(old)
        assert old.response.status_code == 403
        assert json.loads(old.response.content)["rule"] == "no-tls12"


async def test_limits(tmp_path, flights):
    policy = write_policy(
        tmp_path,
        """
rules:
  - id: caps
    action: limit
    limits: {flights_per_session: 2, flights_per_second_per_client: 3}
""",
    )
    with chain() as (a, tctx):
        tctx.configure(a.enforcer, atls_policy=str(policy))
        statuses = []
        for _ in range(3):  # one session: the third flight is over the limit
            flow = atls_flow(flights["TLS1_3"][2], cookie="s1", client="10.1.1.1")
            await a.request(flow)
            statuses.append(flow.response.status_code if flow.response else 200)
        assert statuses == [200, 200, 429]
        rate = []
        for i in range(5):  # new sessions from one client: 3 per second
            flow = atls_flow(flights["TLS1_3"][0], client="10.2.2.2", cookie=f"n{i}")
            await a.request(flow)
            rate.append(flow.response.status_code if flow.response else 200)
        assert rate == [200, 200, 200, 429, 429]
        body = json.loads(flow.response.content)
        assert body["type"] == "urn:atls-testbed:problem:limit-exceeded"
        assert "3 flights per second" in body["detail"]


async def test_bytes_per_session_limit(tmp_path, flights):
    policy = write_policy(
        tmp_path, "rules:\n  - {id: b, action: limit, limits: {bytes_per_session: 2000}}\n"
    )
    with chain() as (a, tctx):
        tctx.configure(a.enforcer, atls_policy=str(policy))
        first = atls_flow(flights["TLS1_3"][0], cookie="c")
        await a.request(first)
        assert first.response is None
        second = atls_flow(flights["TLS1_3"][2], cookie="c")
        await a.request(second)
        assert second.response and second.response.status_code == 429


@pytest.mark.parametrize(
    ("fault", "check"),
    [
        (
            "{type: bitflip, offset: 100, bit: 3}",
            lambda old, new, flow: (
                len(new) == len(old)
                and [i for i in range(len(old)) if old[i] != new[i]] == [100]
                and old[100] ^ new[100] == 8
            ),
        ),
        (
            "{type: bitflip, seed: 7}",
            lambda old, new, flow: (
                sum(bin(a ^ b).count("1") for a, b in zip(old, new, strict=True)) == 1
            ),
        ),
        ("{type: truncate, keep: 10}", lambda old, new, flow: new == old[:10]),
        ("{type: truncate, keep: -5}", lambda old, new, flow: new == old[:-5]),
        ("{type: duplicate}", lambda old, new, flow: new == old + old),
        (
            "{type: content-type, set: text/plain}",
            lambda old, new, flow: flow.request.headers["content-type"] == "text/plain",
        ),
        (
            "{type: content-type, strip: true}",
            lambda old, new, flow: "content-type" not in flow.request.headers,
        ),
        ("{type: drop}", lambda old, new, flow: flow.error is not None and not flow.live),
    ],
    ids=[
        "bitflip-offset",
        "bitflip-seed",
        "truncate",
        "truncate-tail",
        "duplicate",
        "content-type-set",
        "content-type-strip",
        "drop",
    ],
)
async def test_request_faults(tmp_path, flights, fault, check):
    policy = write_policy(tmp_path, f"rules:\n  - id: f\n    action: fault\n    fault: {fault}\n")
    with chain() as (a, tctx):
        tctx.configure(a.enforcer, atls_policy=str(policy))
        old = flights["TLS1_3"][0]
        flow = atls_flow(old)
        await a.request(flow)
        assert check(old, flow.request.raw_content, flow)
        assert "-> fault (f)" in flow.comment


async def test_delay_fault_waits(tmp_path, flights, monkeypatch):
    slept = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(faults_module.asyncio, "sleep", fake_sleep)
    policy = write_policy(
        tmp_path,
        "rules:\n  - {id: slow, action: fault, "
        "fault: {type: delay, seconds: 2.5}, "
        "match: {direction: response}}\n",
    )
    with chain() as (a, tctx):
        tctx.configure(a.enforcer, atls_policy=str(policy))
        flow = atls_flow(flights["TLS1_3"][0])
        await a.request(flow)
        assert slept == []
        with_response(flow, flights["TLS1_3"][1])
        await a.response(flow)
        assert slept == [2.5]
        assert "delayed 2.5s" in flow.comment


async def test_replay_fault_and_max_times(tmp_path, flights):
    policy = write_policy(
        tmp_path,
        """
rules:
  - id: replay-first
    action: fault
    fault: {type: replay, flight: 1, max_times: 1}
    match: {flight: 2, direction: request}
""",
    )
    with chain() as (a, tctx):
        tctx.configure(a.enforcer, atls_policy=str(policy))
        first = atls_flow(flights["TLS1_3"][0])
        await a.request(first)
        with_response(first, flights["TLS1_3"][1], set_cookie="r")
        await a.response(first)
        second = atls_flow(flights["TLS1_3"][2], cookie="r")
        await a.request(second)
        assert second.request.raw_content == flights["TLS1_3"][0], "flight 1 replayed"
        third = atls_flow(flights["TLS1_3"][2], cookie="other")
        await a.request(third)
        third2 = atls_flow(flights["TLS1_3"][2], cookie="other")
        await a.request(third2)
        assert third2.request.raw_content == flights["TLS1_3"][2], "max_times reached"


async def test_invalid_policy_at_start_says_where_and_fails_closed(tmp_path, flights, caplog):
    """At start: one error line with place and problem (mitmdump stops on it), no traceback."""
    policy = write_policy(tmp_path, "rules:\n  - {id: a, action: nope}\n")
    with chain() as (a, tctx):
        tctx.configure(a.enforcer, atls_policy=str(policy))
        errors = [r for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 1 and "rules[0].action" in errors[0].getMessage()
        assert errors[0].exc_info is None
        flow = atls_flow(flights["TLS1_3"][0])
        await a.request(flow)
        assert flow.response is not None and flow.response.status_code == 503, "fails closed"
        a.enforcer.running()
        try:  # once running, a bad new value is refused and the current policy stays
            with pytest.raises(exceptions.OptionsError, match="rules\\[0\\].action"):
                tctx.configure(a.enforcer, atls_policy=str(policy))
        finally:
            a.enforcer.done()


async def test_reload_keeps_old_policy_when_new_is_invalid(tmp_path, flights):
    import os

    policy = write_policy(tmp_path, "default: allow\n")
    with chain() as (a, tctx):
        tctx.configure(a.enforcer, atls_policy=str(policy))
        policy.write_text("default: block\n")
        os.utime(policy, (1, 1))
        assert a.enforcer.check_policy_file() is True
        flow = atls_flow(flights["TLS1_3"][0])
        await a.request(flow)
        assert flow.response and flow.response.status_code == 403
        policy.write_text("rules: [broken")
        os.utime(policy, (2, 2))
        assert a.enforcer.check_policy_file() is False
        assert a.enforcer.policy.default.action.value == "block", "the old policy stays"
        assert a.enforcer.reload_errors == 1
        assert a.enforcer.check_policy_file() is False, "the same broken file is reported once"
        policy.write_text("default: allow\n")
        os.utime(policy, (3, 3))
        assert a.enforcer.check_policy_file() is True
        assert a.enforcer.policy.default.action.value == "allow"


async def test_metrics_file(tmp_path, flights):
    metrics = tmp_path / "metrics.json"
    with chain() as (a, tctx):
        tctx.configure(a.enforcer, atls_metrics_file=str(metrics))
        await a.request(atls_flow(flights["TLS1_3"][0]))
        a.audit.done()
    data = json.loads(metrics.read_text())
    assert data["rules"]["default"]["allow"] == 1
    assert data["totals"]["variant:current"] == 1


async def test_a_flight_whose_client_gave_up_during_a_delay_is_audited(tmp_path, flights):
    import asyncio

    from mitmproxy.flow import Error as FlowError
    from mitmproxy.proxy.layers.http import HttpErrorHook

    policy = write_policy(
        tmp_path, "rules:\n  - {id: slow, action: fault, fault: {type: delay, seconds: 30}}\n"
    )
    with chain() as (a, tctx):
        tctx.configure(a.enforcer, atls_policy=str(policy))
        flow = atls_flow(flights["TLS1_3"][0])
        with pytest.raises(TimeoutError):  # the client gave up: mitmproxy cancels the hook
            await asyncio.wait_for(a.request(flow), 0.05)
        flow.error = FlowError("client disconnected")
        await tctx.master.addons.handle_lifecycle(HttpErrorHook(flow))
        assert a.audit.counters["rule:slow:fault"] == 1
        assert "delayed 30s" in flow.comment


# -- matches on everything the middlebox sees (ClientHello, TLS 1.2 client certificate) ----


async def test_rules_on_suites_groups_alpn_extensions_and_tls12_client_cert(tmp_path, flights):
    policy = write_policy(
        tmp_path,
        """
rules:
  - {id: gcm, action: audit, match: {cipher_suites: ["*AES_256_GCM*"], extensions: [key_share]}}
  - {id: pq, action: mark, mark: ":atom:", match: {key_shares: [X25519MLKEM768], groups: [x25519]}}
  - {id: no-alpn-h2, action: block, match: {alpn: [h2]}}
  - {id: device-1-on-12, action: block, status: 451,
     match: {client_cert_serial: "device-0001", client_cert_subject: "*serialNumber*",
             direction: request}}
""",
    )
    with chain() as (a, tctx):
        tctx.configure(a.enforcer, atls_policy=str(policy))
        hello13 = atls_flow(flights["TLS1_3"][0])
        await a.request(hello13)
        decision = hello13.metadata["atls"]["request"]["decision"]
        assert decision["audit"] == ["gcm"] and decision["mark"] == ":atom:"
        assert hello13.response is None
        hello = hello13.metadata["atls"]["hello"]
        assert "TLS_AES_256_GCM_SHA384" in hello["cipher_suites"]
        assert {"key_share", "supported_versions"} <= set(hello["extensions"])
        assert hello["groups"] and hello["key_shares"]
        # TLS 1.3 encrypts the client certificate: the cert rule can never match
        with_response(hello13, flights["TLS1_3"][1], set_cookie="t13")
        await a.response(hello13)
        second13 = atls_flow(flights["TLS1_3"][2], cookie="t13")
        await a.request(second13)
        assert second13.response is None and second13.metadata["atls"]["client_cert"] == {}
        # TLS 1.2: the device's certificate travels in clear in its second flight
        hello12 = atls_flow(flights["TLS1_2"][0])
        await a.request(hello12)
        with_response(hello12, flights["TLS1_2"][1], set_cookie="t12")
        await a.response(hello12)
        second12 = atls_flow(flights["TLS1_2"][2], cookie="t12")
        await a.request(second12)
        assert second12.metadata["atls"]["client_cert"]["serials"] == ["device-0001"]
        assert second12.response is not None and second12.response.status_code == 451
        assert json.loads(second12.response.content)["rule"] == "device-1-on-12"


@pytest.mark.parametrize(
    ("match", "message"),
    [
        ("{cipher_suites: [TLS_NOPE]}", "match.cipher_suites[0]: 'TLS_NOPE' is not a TLS cipher"),
        ("{groups: [curve9]}", "match.groups[0]: 'curve9' is not a named group"),
        ("{key_shares: 70000}", "match.key_shares: 70000 is not a named group"),
        ("{extensions: [nonsense]}", "match.extensions[0]: 'nonsense' is not a TLS extension"),
        ("{alpn: []}", "match.alpn: an empty list never matches"),
        ("{client_cert_serial: 7}", "match.client_cert_serial: 7 is not a string"),
    ],
)
def test_new_match_fields_say_what_is_wrong(match, message):
    with pytest.raises(PolicyError) as error:
        parse_policy(f"rules:\n  - {{id: r, action: block, match: {match}}}\n", "p.yaml")
    assert f"p.yaml: rules[0].{message}" in str(error.value)


def test_codes_and_names_mean_the_same():
    rule = parse_policy(
        "rules:\n  - {id: r, action: block, match: "
        "{cipher_suites: [0x1303, tls_aes_128_gcm_sha256], groups: ['0x001d'], extensions: [43]}}\n"
    ).rules[0]
    assert rule.match.cipher_suites == ("TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256")
    assert rule.match.groups == ("x25519",) and rule.match.extensions == ("supported_versions",)


# -- issue #12 item 4: the reload never dies, the hooks fail closed -------------------------

HOSTILE_POLICY_FILES = {
    "not-utf8": b"default: \xff\xfe allow\n",
    "deeply-nested": b"rules: " + b"[" * 5000 + b"]" * 5000 + b"\n",
    "deep-mapping": b"default: " + b"{a: " * 3000 + b"1" + b"}" * 3000 + b"\n",
}


@pytest.mark.parametrize("name", sorted(HOSTILE_POLICY_FILES))
def test_hostile_policy_files_are_policy_errors(tmp_path, name):
    from atls_policy.policy import load_policy

    path = tmp_path / "policy.yaml"
    path.write_bytes(HOSTILE_POLICY_FILES[name])
    with pytest.raises(PolicyError, match=str(path)):
        load_policy(path)


@pytest.mark.parametrize("name", sorted(HOSTILE_POLICY_FILES))
async def test_hostile_policy_file_at_start_says_place_and_problem(tmp_path, name, caplog):
    path = tmp_path / "policy.yaml"
    path.write_bytes(HOSTILE_POLICY_FILES[name])
    with chain() as (a, tctx):
        tctx.configure(a.enforcer, atls_policy=str(path))
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert errors and re.search("invalid ATLS policy: .*policy.yaml", errors[0])
        assert a.enforcer.policy.source == "<invalid>", "fails closed"


@pytest.mark.parametrize("name", sorted(HOSTILE_POLICY_FILES))
async def test_reload_survives_hostile_files_and_applies_later_edits(
    tmp_path, flights, name, caplog
):
    import os

    policy = write_policy(tmp_path, "default: allow\n")
    with chain() as (a, tctx):
        tctx.configure(a.enforcer, atls_policy=str(policy), atls_reload_interval=0.1)
        a.enforcer.running()
        try:
            policy.write_bytes(HOSTILE_POLICY_FILES[name])
            os.utime(policy, (1, 1))
            for _ in range(50):  # bounded: the watcher runs every 0.1 s
                if a.enforcer.reload_errors:
                    break
                await asyncio.sleep(0.05)
            assert a.enforcer.reload_errors == 1
            assert a.enforcer.policy.default.action.value == "allow", "the old policy stays"
            failures = [r for r in caplog.records if "keeping the current policy" in r.message]
            assert len(failures) == 1 and failures[0].levelname == "ERROR", "one clear line"
            policy.write_text("default: block\n")
            os.utime(policy, (2, 2))
            for _ in range(50):
                if a.enforcer.policy.default.action.value == "block":
                    break
                await asyncio.sleep(0.05)
            assert a.enforcer.policy.default.action.value == "block", "the watcher died"
        finally:
            a.enforcer.done()


def test_an_unexpected_parse_error_keeps_the_old_policy(tmp_path, monkeypatch):
    from atls_policy import enforcement

    policy = write_policy(tmp_path, "default: block\n")
    with chain() as (a, tctx):
        tctx.configure(a.enforcer, atls_policy=str(policy))

        def boom(path):
            raise MemoryError("simulated")

        monkeypatch.setattr(enforcement, "load_policy", boom)
        import os

        os.utime(policy, (5, 5))
        assert a.enforcer.check_policy_file() is False
        assert a.enforcer.policy.default.action.value == "block"
        assert a.enforcer.reload_errors == 1


@pytest.mark.parametrize("where", ["tracker", "enforcer", "faults", "audit"])
@pytest.mark.parametrize("direction", ["request", "response"])
async def test_an_exception_in_a_hook_blocks_the_atls_flow(
    flights, monkeypatch, caplog, where, direction
):
    """Fail closed: a bug in any addon answers that ATLS flow with a problem, logged."""
    with chain() as (a, tctx):
        addon = {
            "tracker": a.tracker,
            "enforcer": a.enforcer,
            "faults": a.faults,
            "audit": a.audit,
        }[where]
        target = {
            "tracker": "_session",
            "enforcer": "_enforce",
            "faults": "_apply",
            "audit": "_account",
        }[where]

        def broken(*args, **kwargs):
            raise RuntimeError("simulated addon bug")

        flow = atls_flow(flights["TLS1_3"][0], cookie="c1")
        if direction == "response":
            await a.request(flow)
            assert flow.response is None
            with_response(flow, flights["TLS1_3"][1])
        monkeypatch.setattr(addon, target, broken)
        await getattr(a, direction)(flow)
        assert flow.response is not None and flow.response.status_code == 502, where
        problem = json.loads(flow.response.content)
        assert problem["type"] == "urn:atls-testbed:problem:middlebox-error"
        assert "fail closed" in problem["detail"]
        assert any(
            r.levelname == "ERROR" and "simulated addon bug" in r.getMessage()
            for r in caplog.records
        )
        # other flows are unaffected once the bug is gone
        monkeypatch.undo()
        ok = atls_flow(flights["TLS1_3"][0])
        await a.request(ok)
        assert ok.response is None


# -- issue #12 item 5: "not TLS records" is matchable ---------------------------------------


async def test_a_rule_can_block_labelled_bodies_that_are_not_tls(tmp_path, flights):
    policy = write_policy(
        tmp_path,
        """
rules:
  - {id: not-records, action: block, status: 400, match: {records: invalid}}
""",
    )
    with chain() as (a, tctx):
        tctx.configure(a.enforcer, atls_policy=str(policy))
        junk = atls_flow(b"GET / HTTP/1.1\r\nsmuggled: yes\r\n\r\n")
        await a.request(junk)
        assert junk.response is not None and junk.response.status_code == 400
        assert json.loads(junk.response.content)["rule"] == "not-records"
        assert junk.metadata["atls"]["request"]["records"] == "invalid"
        empty = atls_flow(b"")
        await a.request(empty)
        assert empty.response is not None, "an empty body holds no records either"
        hello = atls_flow(flights["TLS1_3"][0])
        await a.request(hello)
        assert hello.response is None
        assert hello.metadata["atls"]["request"]["records"] == "valid"
        protected = atls_flow(b"\x00" * 40)
        protected.request.headers["content-encoding"] = "aes128gcm"
        await a.request(protected)
        assert protected.response is None
        assert protected.metadata["atls"]["request"]["records"] == "protected"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules: [{id: a, action: block, match: {records: broken}}]", "rules[0].match.records"),
        ("rules: [{id: a, action: block, match: {records: [valid, 7]}}]", "rules[0].match.records"),
    ],
)
def test_records_match_field_is_validated(text, message):
    with pytest.raises(PolicyError, match=re.escape(message)):
        parse_policy(text)
    assert parse_policy("rules: [{id: a, action: block, match: {records: invalid}}]")


# -- issue #12: attack faults --------------------------------------------------------------


def test_strip_versions_is_a_downgrade_the_client_detects(pki, server_context, flights):
    from atls.errors import TLSAlertError
    from atls_policy.faults import strip_supported_versions

    hello = flights["TLS1_3"][0]
    stripped = strip_supported_versions(hello)
    assert stripped is not None and len(stripped) < len(hello)
    assert summarize(stripped).client_hello.versions == ["1.2"]  # only the legacy version left
    assert strip_supported_versions(stripped) is None, "nothing left to strip"
    assert strip_supported_versions(b"not tls") is None

    def downgrade(index: int, sender: str, flight: bytes) -> bytes:
        return (strip_supported_versions(flight) or flight) if index == 0 else flight

    client = ATLSSession(client_config(pki).build())  # offers 1.2 and 1.3
    with pytest.raises(TLSAlertError) as failure:
        run_handshake(client, ATLSSession(server_context), downgrade)
    assert client.failed, "the client refuses the downgraded handshake"
    assert failure.value.alert in {"illegal_parameter", "decrypt_error", "handshake_failure"}


@pytest.mark.parametrize(
    ("fault", "check"),
    [
        ("{type: truncate, records: 1}", lambda old, new: len(parse_records(new)) == 1),
        (
            "{type: truncate, records: -1}",
            lambda old, new: len(parse_records(new)) == len(parse_records(old)) - 1,
        ),
        (
            "{type: reorder}",
            lambda old, new: (
                [r.payload for r in parse_records(new)]
                == [r.payload for r in parse_records(old)][::-1]
            ),
        ),
    ],
    ids=["truncate-records", "truncate-records-tail", "reorder"],
)
async def test_record_boundary_faults(tmp_path, flights, fault, check):
    policy = write_policy(tmp_path, f"rules:\n  - id: f\n    action: fault\n    fault: {fault}\n")
    with chain() as (a, tctx):
        tctx.configure(a.enforcer, atls_policy=str(policy))
        old = flights["TLS1_2"][1]  # several records
        assert len(parse_records(old)) > 2
        flow = atls_flow(flights["TLS1_2"][0], cookie="c")
        await a.request(flow)
        with_response(flow, old)
        await a.response(flow)
        assert check(old, flow.response.raw_content)


async def test_swap_cookie_and_replay_from_another_session(tmp_path, flights):
    policy = write_policy(
        tmp_path,
        """
rules:
  - id: swap
    action: fault
    match: {direction: request, flight: 2}
    fault: {type: swap-cookie, wait: 0}
  - id: steal
    action: fault
    match: {direction: response, flight: 2}
    fault: {type: replay, session: other, wait: 0}
""",
    )
    with chain() as (a, tctx):
        tctx.configure(a.enforcer, atls_policy=str(policy))
        first_a = atls_flow(flights["TLS1_3"][0], cookie="cookie-a")
        await a.request(first_a)
        with_response(first_a, flights["TLS1_3"][1])
        await a.response(first_a)
        second_a = atls_flow(flights["TLS1_3"][2], cookie="cookie-a")
        await a.request(second_a)
        assert second_a.request.cookies["atls_session"] == "cookie-a", "no other session yet"
        with_response(second_a, b"\x17\x03\x03\x00\x05AAAAA")
        await a.response(second_a)
        assert "no other session" in second_a.metadata["atls"]["response"]["fault"]
        first_b = atls_flow(flights["TLS1_3"][0], cookie="cookie-b")
        await a.request(first_b)
        second_b = atls_flow(flights["TLS1_3"][2], cookie="cookie-b")
        await a.request(second_b)
        assert second_b.request.cookies["atls_session"] == "cookie-a", "sent as session A"
        with_response(second_b, b"\x17\x03\x03\x00\x05BBBBB")
        await a.response(second_b)
        assert second_b.response.raw_content == b"\x17\x03\x03\x00\x05AAAAA", "A's answer replayed"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{type: truncate, keep: 3, records: 1}", "either to 'keep' bytes or to 'records'"),
        ("{type: truncate, records: x}", "fault.records: 'x' is not a whole number"),
        ("{type: replay, session: elsewhere}", "fault.session: 'elsewhere' is not"),
        ("{type: replay, session: other, flight: 1}", "takes no 'flight'"),
        ("{type: swap-cookie, wait: 99}", "fault.wait: 99 is not a wait"),
        ("{type: reorder, keep: 1}", "unknown key 'keep'"),
        ("{type: strip-versions, seed: 1}", "unknown key 'seed'"),
    ],
)
def test_attack_faults_are_validated(text, message):
    with pytest.raises(PolicyError, match=re.escape(message)):
        parse_policy(f"rules:\n  - id: a\n    action: fault\n    fault: {text}\n")


async def test_a_fault_that_changes_the_length_keeps_content_length_true(tmp_path, flights):
    """A truncated body under its old Content-Length made the receiver wait (a hang)."""
    policy = write_policy(
        tmp_path, "rules:\n  - {id: f, action: fault, fault: {type: truncate, records: 1}}\n"
    )
    with chain() as (a, tctx):
        tctx.configure(a.enforcer, atls_policy=str(policy))
        flow = atls_flow(flights["TLS1_3"][0], cookie="c")
        await a.request(flow)
        with_response(flow, flights["TLS1_3"][1])
        flow.response.headers["content-length"] = str(len(flights["TLS1_3"][1]))
        await a.response(flow)
        body = flow.response.raw_content
        assert len(body) < len(flights["TLS1_3"][1])
        assert flow.response.headers["content-length"] == str(len(body))
