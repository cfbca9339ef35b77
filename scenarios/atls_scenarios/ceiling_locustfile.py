"""Locust user file for the middlebox's own ceiling: a device's requests, without ATLS.

Loaded only by ``locust -f`` (gevent first). Each iteration sends, through the
middlebox, what one bootstrapping device sends (see ``atls_scenarios.ceiling.MIX``):
new CONNECT + TLS connections for the network-TLS probes, and one keep-alive
connection carrying POSTs of the ATLS flights' sizes, with answers of the
service's sizes, to an upstream that does no work. Iterations per second are
the middlebox's ceiling in bootstraps per second.

Configuration: ``ATLS_CEILING_CONFIG`` names a JSON file (upstream URL, proxy, CA).
"""

from __future__ import annotations

import json
import os
import ssl
import time
from pathlib import Path
from typing import Any

import httpx
from locust import User, constant, task

from atls_scenarios.ceiling import MIX

_config: dict[str, Any] = json.loads(Path(os.environ["ATLS_CEILING_CONFIG"]).read_text())


def _client() -> httpx.Client:
    verify = ssl.create_default_context(cafile=_config["ca"])
    return httpx.Client(verify=verify, proxy=_config["proxy"], timeout=60, trust_env=False)


class DeviceRequests(User):
    wait_time = constant(0)

    def _fire(self, name: str, started: float, size: int, error: Exception | None) -> None:
        self.environment.events.request.fire(
            request_type="mix",
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=size,
            exception=error,
            context={},
        )

    @task
    def one_device(self) -> None:
        url = _config["upstream"]
        whole = time.perf_counter()
        error: Exception | None = None
        try:
            for _ in range(MIX["new_connections"]):
                started = time.perf_counter()
                with _client() as client:
                    answer = client.get(f"{url}/healthz?size={MIX['probe_response']}")
                self._fire("network-tls GET", started, len(answer.content), None)
            with _client() as client:
                for sent, answer_size in MIX["atls_exchanges"]:
                    started = time.perf_counter()
                    answer = client.post(f"{url}/flight?size={answer_size}", content=b"a" * sent)
                    answer.raise_for_status()
                    self._fire("atls POST", started, len(answer.content), None)
        except httpx.HTTPError as exc:
            error = exc
        self._fire("device", whole, 0, error)
