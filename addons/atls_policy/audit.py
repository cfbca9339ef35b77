"""Audit log and metrics: one JSON line per ATLS flight, counters, and marks in mitmweb.

Runs last, so it records what the tracker saw, what the policy decided and
what a fault did. The audit line holds the observer's summary (record types
and sizes, ClientHello facts), never plaintext, and the session as a hash.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

from mitmproxy import command, ctx, exceptions, http

from .guard import fail_closed
from .tracking import atls_meta

logger = logging.getLogger("atls_policy")


class ATLSAudit:
    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self._audit: IO[str] | None = None
        self._metrics_written = 0.0
        self._logged: dict[str, tuple[float, int]] = {}  # rules -> (last line, flagged since)

    def _log_audited(self, rules: str, line: str) -> None:
        """At most one event-log line per audit rule set and second, with a count.

        Every flight is in the audit file; the event log (kept in memory by
        mitmweb, printed by mitmdump) only needs to show that a rule fires.
        A line per flight was the addons' largest cost under load (profiled).
        """
        now = time.monotonic()
        last, since = self._logged.get(rules, (0.0, 0))
        if now - last < 1.0:
            self._logged[rules] = (last, since + 1)
            return
        more = f" (+{since} more flagged in the last second)" if since else ""
        logger.warning("audit %s: %s%s", rules, line, more)
        self._logged[rules] = (now, 0)

    def load(self, loader: Any) -> None:
        loader.add_option(
            "atls_audit_log", str, "", "Append one JSON line per ATLS flight to this file."
        )
        loader.add_option(
            "atls_metrics_file",
            str,
            "",
            "Keep ATLS counters (per rule and decision) as JSON in this file.",
        )
        loader.add_option("atls_mark", str, ":lock:", "mitmweb mark for ATLS flows.")

    def configure(self, updated: set[str]) -> None:
        if "atls_audit_log" not in updated:
            return
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

    def done(self) -> None:
        self._write_metrics()
        if self._audit:
            self._audit.close()
            self._audit = None

    @fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        self._account(flow, "request")

    @fail_closed
    def response(self, flow: http.HTTPFlow) -> None:
        self._account(flow, "response")

    def error(self, flow: http.HTTPFlow) -> None:
        """A flow that died in a hook (a client that gave up during a delay) is still audited."""
        self._account(flow, "request")
        self._account(flow, "response")

    @command.command("atls.metrics")
    def metrics(self) -> str:
        """ATLS counters as JSON: per rule and decision, per variant and direction."""
        return json.dumps(self.metrics_dict(), sort_keys=True)

    def metrics_dict(self) -> dict[str, Any]:
        per_rule: dict[str, dict[str, int]] = {}
        totals: dict[str, int] = {}
        for key, value in self.counters.items():
            if key.startswith("rule:"):
                _, rule, decision = key.split(":", 2)
                per_rule.setdefault(rule, {})[decision] = value
            else:
                totals[key] = value
        enforcer = ctx.master.addons.get("atlsenforcer")
        tracker = ctx.master.addons.get("atlstracker")
        if enforcer is not None:
            if enforcer.loads:
                totals["policy_loads"] = enforcer.loads
            if enforcer.reload_errors:
                totals["policy_reload_errors"] = enforcer.reload_errors
        return {
            "rules": per_rule,
            "totals": totals,
            "policy": enforcer.policy.source if enforcer is not None else None,
            "sessions_tracked": len(tracker.sessions) if tracker is not None else 0,
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

    def _account(self, flow: http.HTTPFlow, direction: str) -> None:
        meta = atls_meta(flow)
        flight = meta.get(direction) if meta else None
        if meta is None or not flight or "decision" not in flight or flight.get("accounted"):
            return
        flight["accounted"] = True
        decision = flight["decision"]
        summary = flight["summary"]
        fault_note = flight.get("fault")
        self.counters[f"rule:{decision['rule']}:{decision['action']}"] += 1
        self.counters[f"flights:{direction}"] += 1
        self.counters[f"variant:{meta['variant']}"] += 1
        self.counters["bytes"] += summary.get("bytes", 0)
        for rule_id in decision["audit"]:
            self.counters[f"rule:{rule_id}:audit"] += 1
        line = (
            f"ATLS {meta['variant']} {direction} #{meta['flight']}: {flight['line']} "
            f"-> {decision['action']} ({decision['rule']})"
        )
        if fault_note:
            line += f" [{fault_note}]"
        flow.comment = f"{flow.comment} | {line}" if flow.comment else line
        flow.marked = decision["mark"] or ctx.options.atls_mark
        if decision["audit"]:
            self._log_audited(",".join(decision["audit"]), line)
        if self._audit:
            peer = flow.client_conn.peername
            record = {
                "time": time.time(),
                "client": f"{peer[0]}:{peer[1]}" if peer else None,
                "server": f"{flow.request.host}:{flow.request.port}",
                "path": flow.request.path,
                "session": None if meta["session"].startswith("pending:") else meta["session"],
                "direction": direction,
                "flight": meta["flight"],
                "variant": meta["variant"],
                "summary": summary,
                "rule": decision["rule"],
                "decision": decision["action"],
                "audit": decision["audit"],
                "fault": fault_note,
            }
            self._audit.write(json.dumps(record, sort_keys=True) + "\n")
        if ctx.options.atls_metrics_file and time.monotonic() - self._metrics_written > 1.0:
            self._write_metrics()
