"""Fail closed: an unexpected exception in an ATLS hook blocks that flow.

mitmproxy logs an exception raised by a hook and carries on with the flow, so
a bug in the tracker, the enforcer, the faults or the audit would let a flight
through that the policy never judged (fail open). ``fail_closed`` wraps a hook:
the exception is logged with the flow, and the flow is answered with the
core's problem document (``middlebox-error``, 502) instead of being forwarded.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from mitmproxy import http

from atls.errors import Reason, Refusal
from atls.http_binding import PROBLEM_MEDIA_TYPE, Problem

logger = logging.getLogger("atls_policy")


def _block(addon: object, hook: str, flow: http.HTTPFlow, exc: BaseException) -> None:
    direction = "response" if flow.response is not None and hook == "response" else "request"
    logger.error(
        "ATLS addon %s.%s failed on %s %s (%s): %s: %s; flow blocked (fail closed)",
        type(addon).__name__,
        hook,
        flow.request.method,
        flow.request.pretty_url,
        direction,
        type(exc).__name__,
        exc,
        exc_info=exc,
    )
    refusal = Refusal(
        Reason.MIDDLEBOX_ERROR,
        f"the middlebox's ATLS policy failed on this {direction} "
        f"({type(addon).__name__}.{hook}); the flow is blocked (fail closed)",
        title="middlebox policy error",
    )
    problem = Problem.from_refusal(refusal)
    flow.response = http.Response.make(
        problem.status, problem.to_json(), {"content-type": PROBLEM_MEDIA_TYPE}
    )
    meta = flow.metadata.get("atls")
    if isinstance(meta, dict):
        meta["answered_by_policy"] = True
        meta["failed_closed"] = f"{type(addon).__name__}.{hook}"


def fail_closed[Hook: Callable[..., Any]](hook: Hook) -> Hook:
    """Wrap a ``(self, flow)`` hook, sync or async, so that it fails closed."""
    if inspect.iscoroutinefunction(hook):
        coroutine: Callable[[Any, http.HTTPFlow], Awaitable[None]] = hook

        @functools.wraps(hook)
        async def guarded_async(self: Any, flow: http.HTTPFlow) -> None:
            try:
                await coroutine(self, flow)
            except Exception as exc:
                _block(self, hook.__name__, flow, exc)

        return guarded_async  # type: ignore[return-value]

    @functools.wraps(hook)
    def guarded(self: Any, flow: http.HTTPFlow) -> None:
        try:
            hook(self, flow)
        except Exception as exc:
            _block(self, hook.__name__, flow, exc)

    return guarded  # type: ignore[return-value]
