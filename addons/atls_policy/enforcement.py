"""Policy decision: the rules file, reloaded when it changes, applied to every ATLS flight.

Reads the tracker's record in ``flow.metadata["atls"]``, asks the policy
(``Policy.decide``) and stores the decision beside it for the fault and
audit addons. A block is answered here, with the core's problem document.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from mitmproxy import command, ctx, exceptions, http

from atls.errors import Reason, Refusal
from atls.http_binding import PROBLEM_MEDIA_TYPE, Problem

from .guard import fail_closed
from .policy import Action, Decision, FlightContext, Policy, PolicyError, PolicyState, load_policy
from .tracking import atls_meta

logger = logging.getLogger("atls_policy")


def flight_context(flow: http.HTTPFlow, meta: dict[str, Any], direction: str) -> FlightContext:
    """What a rule can match on, from the flow and the tracker's record."""
    peer = flow.client_conn.peername
    message = flow.request if direction == "request" else flow.response
    assert message is not None
    hello, cert = meta.get("hello") or {}, meta.get("client_cert") or {}
    return FlightContext(
        client=peer[0] if peer else "",
        host=flow.request.host,  # pretty_host parses the Host header each time (profiled)
        port=flow.request.port,
        path=flow.request.path.split("?", 1)[0],
        variant=meta["variant"],
        direction=direction,
        flight=meta["flight"],
        offered_versions=frozenset(hello.get("versions") or ()),
        sni=hello.get("sni"),
        cipher_suites=tuple(hello.get("cipher_suites") or ()),
        groups=tuple(hello.get("groups") or ()),
        key_shares=tuple(hello.get("key_shares") or ()),
        alpn=tuple(hello.get("alpn") or ()),
        extensions=tuple(hello.get("extensions") or ()),
        client_cert_subjects=tuple(cert.get("subjects") or ()),
        client_cert_serials=tuple(cert.get("serials") or ()),
        body_bytes=len(message.raw_content or b""),
        session_bytes=meta.get(direction, {}).get("session_bytes", 0),
        records=meta.get(direction, {}).get("records", "valid"),
    )


class ATLSEnforcer:
    def __init__(self) -> None:
        self.policy = Policy.allow_all()
        self.state = PolicyState()
        self.loads = 0
        self.reload_errors = 0
        self._policy_mtime: float | None = None
        self._reload_task: asyncio.Task[None] | None = None
        self._running = False

    def load(self, loader: Any) -> None:
        loader.add_option("atls_policy", str, "", "ATLS policy file (YAML); empty allows all.")
        loader.add_option(
            "atls_reload_interval",
            float,
            1.0,
            "Seconds between checks of the policy file for changes (0: never).",
        )

    def configure(self, updated: set[str]) -> None:
        if "atls_policy" not in updated:
            return
        path = ctx.options.atls_policy
        if not path:
            self.policy, self._policy_mtime = Policy.allow_all(), None
            return
        try:
            self._install(load_policy(path), Path(path))
        except PolicyError as exc:
            if self._running:  # a new value while running: refused, the old policy stays
                raise exceptions.OptionsError(f"invalid ATLS policy: {exc}") from None
            # At start: one line with the place and the problem, and no traceback
            # (mitmproxy prints one for any exception while it loads a script);
            # mitmdump stops on an error logged during startup, and until then (or
            # if something keeps it running) every ATLS flight is refused.
            logger.error("invalid ATLS policy: %s", exc)
            self.policy, self._policy_mtime = Policy.refuse_all(str(exc)), None

    def _install(self, policy: Policy, path: Path) -> None:
        self.policy = policy
        with contextlib.suppress(OSError):
            self._policy_mtime = path.stat().st_mtime
        self.state.reset()
        self.loads += 1
        logger.info(
            "ATLS policy %s: %d rules, default %s",
            policy.source,
            len(policy.rules),
            policy.default.action.value,
        )

    def running(self) -> None:
        self._running = True
        if self._reload_task is None and ctx.options.atls_reload_interval > 0:
            self._reload_task = asyncio.get_running_loop().create_task(self._watch_policy())

    async def _watch_policy(self) -> None:
        while True:
            await asyncio.sleep(max(0.1, ctx.options.atls_reload_interval))
            try:
                self.check_policy_file()
            except Exception:  # the watcher must outlive anything: a dead one fails open
                logger.exception("ATLS policy watcher: unexpected error; still watching")

    def done(self) -> None:
        if self._reload_task:
            self._reload_task.cancel()

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
        except Exception as exc:  # noqa: BLE001 - any failure keeps the old policy
            self._policy_mtime = mtime
            self.reload_errors += 1
            problem = exc if isinstance(exc, PolicyError) else f"{type(exc).__name__}: {exc}"
            logger.error("ATLS policy reload failed, keeping the current policy: %s", problem)
            return False
        return True

    @command.command("atls.reload")
    def reload(self) -> None:
        """Re-read the policy file now."""
        self._policy_mtime = None
        self.check_policy_file()

    @fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        self._enforce(flow, "request")

    @fail_closed
    def response(self, flow: http.HTTPFlow) -> None:
        self._enforce(flow, "response")

    def _enforce(self, flow: http.HTTPFlow, direction: str) -> None:
        meta = atls_meta(flow)
        if meta is None or direction not in meta or meta.get("answered_by_policy"):
            return
        decision = self.policy.decide(flight_context(flow, meta, direction), self.state)
        meta[direction]["decision"] = decision.to_dict()
        if decision.action is Action.BLOCK:
            flow.response = _blocked(decision, direction)
            meta["answered_by_policy"] = True


def _blocked(decision: Decision, direction: str) -> http.Response:
    """The middlebox's answer to a blocked flight: the core's problem document."""
    reason = Reason.LIMIT_EXCEEDED if decision.limit_exceeded else Reason.BLOCKED_BY_POLICY
    detail = (
        decision.detail or f"ATLS {direction} blocked by middlebox policy rule {decision.rule!r}"
    )
    refusal = Refusal(
        reason,
        detail,
        title="blocked by middlebox policy",
        status=decision.status,
        extra={"rule": decision.rule},
    )
    problem = Problem.from_refusal(refusal)
    return http.Response.make(
        problem.status, problem.to_json(), {"content-type": PROBLEM_MEDIA_TYPE}
    )
