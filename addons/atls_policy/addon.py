"""The mitmproxy addon: recognise ATLS flights and apply the policy to each.

Options (``--set name=value``):
  atls_policy            policy file (YAML); empty: allow everything
  atls_audit_log         append one JSON line per ATLS flight to this file
  atls_metrics_file      keep counters (per rule and decision) as JSON in this file
  atls_detect_unlabelled also treat TLS records under other content types as ATLS
  atls_reload_interval   seconds between checks of the policy file for changes
  atls_session_cookie    the cookie that names an ATLS session (atls_session)
  atls_mark              mitmweb mark for ATLS flows (":lock:")

Commands: ``atls.metrics`` (counters as JSON), ``atls.reload`` (re-read the policy).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from mitmproxy import command, ctx, exceptions, http

from .detect import classify_request, classify_response
from .observe import FlightSummary, summarize
from .policy import Action, FlightContext, Policy, PolicyError, Rule, load_policy

logger = logging.getLogger("atls_policy")

PROBLEM_TYPE = "urn:atls-testbed:problem:blocked-by-policy"
LIMIT_PROBLEM_TYPE = "urn:atls-testbed:problem:limit-exceeded"
_MAX_SESSIONS = 10000
_HISTORY = 16


@dataclass
class SessionState:
    """What the middlebox remembers of one ATLS session (never plaintext)."""

    flights: int = 0
    byte_count: int = 0
    offered_versions: frozenset[str] = frozenset()
    sni: str | None = None
    history: dict[str, list[bytes]] = field(default_factory=lambda: {"request": [], "response": []})


@dataclass
class Decision:
    action: str
    rule: str
    status: int = 403
    detail: str | None = None
    problem_type: str = PROBLEM_TYPE
    fault: Rule | None = None
    audit: list[str] = field(default_factory=list)
    mark: str | None = None


def hash_cookie(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:12]


class ATLSPolicy:
    def __init__(self) -> None:
        self.policy = Policy.allow_all()
        self._policy_mtime: float | None = None
        self._audit: IO[str] | None = None
        self.counters: Counter[str] = Counter()
        self.sessions: OrderedDict[str, SessionState] = OrderedDict()
        self._client_times: dict[str, deque[float]] = {}
        self._fault_uses: Counter[str] = Counter()
        self._reload_task: asyncio.Task[None] | None = None
        self._metrics_written = 0.0

    # -- options and lifecycle ------------------------------------------------

    def load(self, loader: Any) -> None:
        loader.add_option("atls_policy", str, "", "ATLS policy file (YAML); empty allows all.")
        loader.add_option(
            "atls_audit_log", str, "", "Append one JSON line per ATLS flight to this file."
        )
        loader.add_option(
            "atls_metrics_file",
            str,
            "",
            "Keep ATLS counters (per rule and decision) as JSON in this file.",
        )
        loader.add_option(
            "atls_detect_unlabelled",
            bool,
            True,
            "Also treat well-formed TLS records under other content types as ATLS.",
        )
        loader.add_option(
            "atls_reload_interval",
            float,
            1.0,
            "Seconds between checks of the policy file for changes (0: never).",
        )
        loader.add_option(
            "atls_session_cookie", str, "atls_session", "Cookie that names an ATLS session."
        )
        loader.add_option("atls_mark", str, ":lock:", "mitmweb mark for ATLS flows.")

    def configure(self, updated: set[str]) -> None:
        if "atls_policy" in updated:
            path = ctx.options.atls_policy
            if path:
                try:
                    self._install(load_policy(path), Path(path))
                except PolicyError as exc:
                    raise exceptions.OptionsError(f"invalid ATLS policy: {exc}") from None
            else:
                self.policy, self._policy_mtime = Policy.allow_all(), None
        if "atls_audit_log" in updated:
            if self._audit:
                self._audit.close()
                self._audit = None
            if ctx.options.atls_audit_log:
                try:
                    self._audit = open(ctx.options.atls_audit_log, "a", buffering=1)  # noqa: SIM115
                except OSError as exc:
                    raise exceptions.OptionsError(
                        f"cannot open ATLS audit log {ctx.options.atls_audit_log}: {exc.strerror}"
                    ) from None

    def _install(self, policy: Policy, path: Path) -> None:
        self.policy = policy
        with contextlib.suppress(OSError):
            self._policy_mtime = path.stat().st_mtime
        self._fault_uses.clear()
        self.counters["policy_loads"] += 1
        logger.info(
            "ATLS policy %s: %d rules, default %s",
            policy.source,
            len(policy.rules),
            policy.default.action.value,
        )

    def running(self) -> None:
        if self._reload_task is None and ctx.options.atls_reload_interval > 0:
            self._reload_task = asyncio.get_running_loop().create_task(self._watch_policy())

    async def _watch_policy(self) -> None:
        while True:
            await asyncio.sleep(max(0.1, ctx.options.atls_reload_interval))
            self.check_policy_file()

    def check_policy_file(self) -> bool:
        """Reload the policy if its file changed; keep the old one if the new is invalid."""
        path_text = ctx.options.atls_policy
        if not path_text:
            return False
        path = Path(path_text)
        try:
            mtime = path.stat().st_mtime
        except OSError as exc:
            if self._policy_mtime is not None:
                logger.error(
                    "ATLS policy %s unreadable (%s); keeping the current policy", path, exc.strerror
                )
                self._policy_mtime = None
            return False
        if mtime == self._policy_mtime:
            return False
        try:
            self._install(load_policy(path), path)
        except PolicyError as exc:
            self._policy_mtime = mtime
            self.counters["policy_reload_errors"] += 1
            logger.error("ATLS policy reload failed, keeping the current policy: %s", exc)
            return False
        return True

    def done(self) -> None:
        if self._reload_task:
            self._reload_task.cancel()
        self._write_metrics()
        if self._audit:
            self._audit.close()
            self._audit = None

    @command.command("atls.metrics")
    def metrics(self) -> str:
        """ATLS counters as JSON: per rule and decision, per variant and direction."""
        return json.dumps(self.metrics_dict(), sort_keys=True)

    @command.command("atls.reload")
    def reload(self) -> None:
        """Re-read the policy file now."""
        self._policy_mtime = None
        self.check_policy_file()

    def metrics_dict(self) -> dict[str, Any]:
        per_rule: dict[str, dict[str, int]] = {}
        totals: dict[str, int] = {}
        for key, value in self.counters.items():
            if key.startswith("rule:"):
                _, rule, decision = key.split(":", 2)
                per_rule.setdefault(rule, {})[decision] = value
            else:
                totals[key] = value
        return {
            "rules": per_rule,
            "totals": totals,
            "policy": self.policy.source,
            "sessions_tracked": len(self.sessions),
        }

    def _write_metrics(self) -> None:
        path = ctx.options.atls_metrics_file
        if not path:
            return
        self._metrics_written = time.monotonic()
        tmp = Path(path).with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(self.metrics_dict(), indent=2, sort_keys=True))
            tmp.replace(path)
        except OSError as exc:
            logger.error("cannot write ATLS metrics to %s: %s", path, exc.strerror)

    # -- sessions ---------------------------------------------------------------

    def _cookie(self, flow: http.HTTPFlow) -> str | None:
        value = flow.request.cookies.get(ctx.options.atls_session_cookie)
        return hash_cookie(value) if value else None

    def _session(self, key: str) -> SessionState:
        state = self.sessions.get(key)
        if state is None:
            state = self.sessions[key] = SessionState()
            while len(self.sessions) > _MAX_SESSIONS:
                self.sessions.popitem(last=False)
        else:
            self.sessions.move_to_end(key)
        return state

    # -- hooks --------------------------------------------------------------------

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:  # answered by someone else already
            return
        req = flow.request
        body = req.raw_content or b""
        variant = classify_request(
            req.method,
            req.path,
            req.headers.get("content-type"),
            body,
            ctx.options.atls_detect_unlabelled,
        )
        if variant is None:
            return
        cookie = self._cookie(flow)
        key = cookie or f"pending:{flow.id}"
        state = self._session(key)
        state.flights += 1
        summary = summarize(body, req.headers.get("content-encoding"))
        if summary.client_hello:
            state.offered_versions = frozenset(summary.client_hello.versions)
            state.sni = summary.client_hello.sni
        flow.metadata["atls"] = {"variant": variant, "flight": state.flights, "session": key}
        decision = self._decide(flow, "request", variant, state, summary, body)
        state.byte_count += len(body)
        await self._enforce(flow, "request", decision, state, summary, body)

    async def response(self, flow: http.HTTPFlow) -> None:
        resp = flow.response
        if resp is None:
            return
        meta = flow.metadata.get("atls")
        body = resp.raw_content or b""
        if meta is None:
            variant = classify_response(
                resp.headers.get("content-type"), body, ctx.options.atls_detect_unlabelled
            )
            if variant is None:
                return
            meta = flow.metadata["atls"] = {
                "variant": variant,
                "flight": 1,
                "session": f"pending:{flow.id}",
            }
        if meta.get("answered_by_policy"):
            return
        key = meta["session"]
        set_cookie = resp.cookies.get(ctx.options.atls_session_cookie)
        if key.startswith("pending:") and set_cookie:
            new_key = hash_cookie(set_cookie[0])
            self.sessions[new_key] = self.sessions.pop(key, SessionState(flights=1))
            key = meta["session"] = new_key
        state = self._session(key)
        summary = summarize(body, resp.headers.get("content-encoding"))
        decision = self._decide(flow, "response", meta["variant"], state, summary, body)
        state.byte_count += len(body)
        await self._enforce(flow, "response", decision, state, summary, body)

    # -- deciding -------------------------------------------------------------------

    def _decide(
        self,
        flow: http.HTTPFlow,
        direction: str,
        variant: str,
        state: SessionState,
        summary: FlightSummary,
        body: bytes,
    ) -> Decision:
        peer = flow.client_conn.peername
        context = FlightContext(
            client=peer[0] if peer else "",
            host=flow.request.pretty_host,
            port=flow.request.port,
            path=flow.request.path.split("?", 1)[0],
            variant=variant,
            direction=direction,
            flight=flow.metadata["atls"]["flight"],
            offered_versions=state.offered_versions,
            sni=state.sni,
        )
        audit: list[str] = []
        mark: str | None = None
        for rule in self.policy.rules:
            if not rule.match.matches(context):
                continue
            if rule.action is Action.AUDIT:
                audit.append(rule.id)
            elif rule.action is Action.MARK:
                mark = rule.mark
            elif rule.action is Action.LIMIT:
                exceeded = self._exceeded(rule, context, state, body)
                if exceeded:
                    return Decision(
                        "block",
                        rule.id,
                        rule.status,
                        exceeded,
                        LIMIT_PROBLEM_TYPE,
                        audit=audit,
                        mark=mark,
                    )
            elif rule.action is Action.FAULT:
                assert rule.fault is not None
                if rule.fault.max_times and self._fault_uses[rule.id] >= rule.fault.max_times:
                    continue
                self._fault_uses[rule.id] += 1
                return Decision("fault", rule.id, fault=rule, audit=audit, mark=mark)
            else:
                return Decision(
                    rule.action.value, rule.id, rule.status, rule.detail, audit=audit, mark=mark
                )
        default = self.policy.default
        return Decision(
            default.action.value, default.id, default.status, default.detail, audit=audit, mark=mark
        )

    def _exceeded(
        self, rule: Rule, ctx_: FlightContext, state: SessionState, body: bytes
    ) -> str | None:
        limits = rule.limits
        assert limits is not None
        if (
            limits.flights_per_session
            and ctx_.direction == "request"
            and state.flights > limits.flights_per_session
        ):
            return f"session exceeded {limits.flights_per_session} flights"
        if limits.bytes_per_session and state.byte_count + len(body) > limits.bytes_per_session:
            return f"session exceeded {limits.bytes_per_session} bytes"
        if limits.flights_per_second_per_client and ctx_.direction == "request":
            now = time.monotonic()
            times = self._client_times.setdefault(ctx_.client, deque())
            while times and now - times[0] > 1.0:
                times.popleft()
            if len(times) >= limits.flights_per_second_per_client:
                return (
                    f"client {ctx_.client} exceeded "
                    f"{limits.flights_per_second_per_client:g} flights per second"
                )
            times.append(now)
            if len(self._client_times) > _MAX_SESSIONS:
                self._client_times.pop(next(iter(self._client_times)))
        return None

    # -- enforcing --------------------------------------------------------------------

    async def _enforce(
        self,
        flow: http.HTTPFlow,
        direction: str,
        decision: Decision,
        state: SessionState,
        summary: FlightSummary,
        body: bytes,
    ) -> None:
        fault_note = None
        if decision.action == "block":
            self._answer_block(flow, direction, decision)
        elif decision.action == "fault":
            assert decision.fault is not None
            fault_note = await self._apply_fault(flow, direction, decision.fault, state, body)
        history = state.history[direction]
        history.append(body)
        del history[:-_HISTORY]
        self._account(flow, direction, decision, summary, fault_note)

    def _answer_block(self, flow: http.HTTPFlow, direction: str, decision: Decision) -> None:
        detail = (
            decision.detail
            or f"ATLS {direction} blocked by middlebox policy rule {decision.rule!r}"
        )
        problem = {
            "type": decision.problem_type,
            "title": "blocked by middlebox policy",
            "status": decision.status,
            "detail": detail,
            "rule": decision.rule,
        }
        flow.response = http.Response.make(
            decision.status,
            json.dumps(problem).encode(),
            {"content-type": "application/problem+json"},
        )
        flow.metadata["atls"]["answered_by_policy"] = True

    async def _apply_fault(
        self, flow: http.HTTPFlow, direction: str, rule: Rule, state: SessionState, body: bytes
    ) -> str:
        fault = rule.fault
        assert fault is not None
        message = flow.request if direction == "request" else flow.response
        assert message is not None
        kind = fault.type
        if kind == "delay":
            await asyncio.sleep(fault.seconds)
            return f"delayed {fault.seconds:g}s"
        if kind == "drop":
            flow.kill()
            return "dropped the connection"
        if kind == "content-type":
            if fault.content_type:
                message.headers["content-type"] = fault.content_type
                return f"content type set to {fault.content_type}"
            message.headers.pop("content-type", None)
            return "content type stripped"
        new_body = body
        note = kind
        if kind == "bitflip" and body:
            rng = random.Random(f"{fault.seed}:{self._fault_uses[rule.id]}")
            if fault.offset is not None:
                position = fault.offset % len(body)
            else:
                position = rng.randrange(len(body))
            bit = fault.bit if fault.bit is not None else rng.randrange(8)
            flipped = bytearray(body)
            flipped[position] ^= 1 << bit
            new_body, note = bytes(flipped), f"flipped bit {bit} of byte {position}"
        elif kind == "truncate":
            keep = fault.keep if fault.keep is not None else len(body) // 2
            new_body = body[:keep]
            note = f"truncated {len(body)} to {len(new_body)} bytes"
        elif kind == "duplicate":
            new_body, note = body + body, "duplicated the flight"
        elif kind == "replay":
            history = state.history[direction]
            if fault.replay_flight is not None:
                index = fault.replay_flight - 1
                earlier = history[index] if 0 <= index < len(history) else None
            else:
                earlier = history[-1] if history else None
            if earlier is None:
                return "replay: no earlier flight to replay, passed unchanged"
            new_body, note = earlier, f"replayed an earlier {direction} flight"
        message.raw_content = new_body
        return note

    def _account(
        self,
        flow: http.HTTPFlow,
        direction: str,
        decision: Decision,
        summary: FlightSummary,
        fault_note: str | None,
    ) -> None:
        meta = flow.metadata["atls"]
        self.counters[f"rule:{decision.rule}:{decision.action}"] += 1
        self.counters[f"flights:{direction}"] += 1
        self.counters[f"variant:{meta['variant']}"] += 1
        self.counters["bytes"] += summary.bytes
        for rule_id in decision.audit:
            self.counters[f"rule:{rule_id}:audit"] += 1
        line = (
            f"ATLS {meta['variant']} {direction} #{meta['flight']}: {summary.one_line()} "
            f"-> {decision.action} ({decision.rule})"
        )
        if fault_note:
            line += f" [{fault_note}]"
        flow.comment = f"{flow.comment} | {line}" if flow.comment else line
        flow.marked = decision.mark or ctx.options.atls_mark
        if decision.audit:
            logger.warning("audit %s: %s", ",".join(decision.audit), line)
        if self._audit:
            peer = flow.client_conn.peername
            record = {
                "time": time.time(),
                "client": f"{peer[0]}:{peer[1]}" if peer else None,
                "server": f"{flow.request.pretty_host}:{flow.request.port}",
                "path": flow.request.path,
                "session": None if meta["session"].startswith("pending:") else meta["session"],
                "direction": direction,
                "flight": meta["flight"],
                "variant": meta["variant"],
                "summary": summary.to_dict(),
                "rule": decision.rule,
                "decision": decision.action,
                "audit": decision.audit,
                "fault": fault_note,
            }
            self._audit.write(json.dumps(record, sort_keys=True) + "\n")
        if ctx.options.atls_metrics_file and time.monotonic() - self._metrics_written > 1.0:
            self._write_metrics()
