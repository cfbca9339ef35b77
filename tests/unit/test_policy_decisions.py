"""Policy decisions without mitmproxy: the rule loop is a method of the policy."""

from __future__ import annotations

import sys

from atls_policy.policy import Action, Decision, FlightContext, PolicyState, parse_policy

POLICY = """
rules:
  - {id: watch, action: audit}
  - {id: eyes, action: mark, mark: ":eyes:", match: {tls_versions: ["1.3"]}}
  - {id: caps, action: limit, limits: {flights_per_session: 3, bytes_per_session: 5000}}
  - {id: flip-once, action: fault, fault: {type: bitflip, offset: 3, max_times: 1},
     match: {direction: response, flight: 1}}
  - {id: old-names, action: block, status: 451, match: {variant: [legacy]}}
  - {id: ok, action: allow, match: {sni: "atls-*"}}
default: block
"""


def ctx(**kw: object) -> FlightContext:
    base: dict[str, object] = {
        "client": "10.0.0.5",
        "host": "atls-service",
        "port": 443,
        "path": "/.well-known/atls",
        "variant": "current",
        "direction": "request",
        "flight": 1,
        "offered_versions": frozenset({"1.3", "1.2"}),
        "sni": "atls-service",
        "body_bytes": 300,
    }
    base.update(kw)
    return FlightContext(**base)  # type: ignore[arg-type]


def test_decisions_without_mitmproxy():
    policy, state = parse_policy(POLICY), PolicyState()
    first = policy.decide(ctx(), state)
    assert (first.action, first.rule, first.audit, first.mark) == (
        Action.ALLOW,
        "ok",
        ["watch"],
        ":eyes:",
    )
    fault = policy.decide(ctx(direction="response"), state)
    assert fault.action is Action.FAULT and fault.fault and fault.fault.offset == 3
    assert policy.decide(ctx(direction="response"), state).action is Action.ALLOW, "max_times"
    over = policy.decide(ctx(flight=4), state)
    assert (over.action, over.limit_exceeded, over.status) == (Action.BLOCK, True, 429)
    assert "3 flights" in (over.detail or "")
    big = policy.decide(ctx(session_bytes=4900), state)
    assert big.action is Action.BLOCK and "5000 bytes" in (big.detail or "")
    legacy = policy.decide(ctx(variant="draft-00"), state)
    assert (legacy.action, legacy.status) == (Action.BLOCK, 451), "'legacy' is draft-00's old name"
    stranger = policy.decide(ctx(sni=None), state)
    assert (stranger.action, stranger.rule) == (Action.BLOCK, "default")


def test_decisions_travel_as_plain_data():
    policy = parse_policy(POLICY)
    decision = policy.decide(ctx(direction="response"), PolicyState())
    again = Decision.from_dict(decision.to_dict())
    assert again == decision and isinstance(decision.to_dict()["action"], str)


def test_the_policy_module_needs_no_mitmproxy():
    import subprocess

    code = (
        "import sys; import atls_policy.policy as p; "
        "p.parse_policy('default: allow'); "
        "sys.exit(1 if any(m.startswith('mitmproxy') for m in sys.modules) else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
