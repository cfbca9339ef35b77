"""The test cases of interop/CONTRACT.md: what each one sets up and expects.

Faults come from the middlebox's policy file, as the QUIC runner's come from
its network simulator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TestCase:
    """One column of contract behaviour; the runner builds each cell from it."""

    name: str
    description: str
    client_succeeds: bool = True
    # The contract's "exports equal": compared when both ends wrote one...
    compare_exports: bool = False
    # ...and here both must have written one.
    export_required: bool = False
    client_has_cert: bool = True
    wrong_anchor: bool = False
    forward_proxy: bool = False
    policy_rules: tuple[dict[str, Any], ...] = ()
    audit_variant: str = "current"
    # "dtls": every flight the middlebox audited must be DTLS records (epoch and sequence)
    record_layer: str = "tls"
    reserved: bool = False

    def policy(self) -> dict[str, Any]:
        """The middlebox policy for this case: allow, plus the case's fault if any.

        Every flight gets an audit line anyway (``atls_audit_log``).
        """
        rules: list[dict[str, Any]] = [dict(rule) for rule in self.policy_rules]
        return {"version": 1, "default": "allow", "rules": rules}


_DROP_ONCE = {
    "id": "flight-loss",
    "action": "fault",
    "fault": {"type": "drop", "max_times": 1},
    "match": {"direction": "request", "flight": 2},
}
_FLIP = {
    "id": "corruption",
    "action": "fault",
    "fault": {"type": "bitflip", "offset": 300, "bit": 2},
    "match": {"direction": "response", "flight": 1},
}

TESTCASES: dict[str, TestCase] = {
    t.name: t
    for t in (
        TestCase(
            "handshake-tls13",
            "TLS 1.3 only, mutual authentication; exports equal",
            compare_exports=True,
        ),
        TestCase(
            "handshake-tls12",
            "TLS 1.2 only, mutual authentication; exports equal",
            compare_exports=True,
        ),
        TestCase("records", "highest common version; one inner request answered 200"),
        TestCase(
            "exporter",
            "TLS 1.3; application-layer-tls, absent context; exports equal",
            compare_exports=True,
            export_required=True,
        ),
        TestCase(
            "exporter-empty-context",
            "TLS 1.2; exporter with an empty (zero-length) context; exports equal",
            compare_exports=True,
            export_required=True,
        ),
        TestCase(
            "mutual-auth-missing",
            "server demands a client certificate, the client has none: refused cleanly",
            client_succeeds=False,
            client_has_cert=False,
        ),
        TestCase(
            "wrong-anchor",
            "the client pins another CA: it must fail, never succeed",
            client_succeeds=False,
            wrong_anchor=True,
        ),
        TestCase(
            "draft00",
            "draft-00 form: POST /atls, application/atls+octet-stream",
            audit_variant="draft-00",
        ),  # fmt: skip
        TestCase(
            "proxy",
            "the client goes through the middlebox as an HTTP forward proxy",
            forward_proxy=True,
        ),
        TestCase(
            "flight-loss",
            "the middlebox drops the client's second flight once; a fresh handshake succeeds",
            policy_rules=(_DROP_ONCE,),
        ),
        TestCase(
            "corruption",
            "the middlebox flips a bit in the server's first flight, every time; "
            "both ends fail cleanly within the bound",
            client_succeeds=False,
            policy_rules=(_FLIP,),
        ),
        TestCase(
            "chacha20",
            "TLS 1.3, TLS_CHACHA20_POLY1305_SHA256 only; exports equal",
            compare_exports=True,
        ),
        TestCase(
            "dtls12",
            "DTLS 1.2 records in the HTTP bodies, mutual; exports equal, then one inner "
            "request in DTLS application data answered 200",
            compare_exports=True,
            record_layer="dtls",
        ),
    )
}

# Run by default: every case but the reserved ones.
DEFAULT_TESTCASES = [name for name, t in TESTCASES.items() if not t.reserved]
