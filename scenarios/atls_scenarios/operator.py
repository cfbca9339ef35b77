"""The domain operator's side: register the domain CA and claim devices, read events.

Used by the local engine, by the compose operator container
(``atls-testbed operator setup``) and by the compose engine's collection step.
"""

from __future__ import annotations

import ssl
import time
from pathlib import Path
from typing import Any

import httpx


class _Named(httpx.Client):
    """Every request names the service (SNI and certificate check): for one replica by address."""

    def __init__(self, server_name: str | None, **kw: Any) -> None:
        super().__init__(**kw)
        self.server_name = server_name

    def send(self, request: httpx.Request, **kw: Any) -> httpx.Response:
        if self.server_name:
            request.extensions["sni_hostname"] = self.server_name
        return super().send(request, **kw)


def _client(
    verify_ca: Path, token: str | None = None, server_name: str | None = None
) -> httpx.Client:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return _Named(
        server_name,
        verify=ssl.create_default_context(cafile=str(verify_ca)),
        headers=headers,
        timeout=30,
        trust_env=False,
    )


def wait_ready(
    service_url: str, verify_ca: Path, timeout: float = 60.0, server_name: str | None = None
) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with _client(verify_ca, server_name=server_name) as http:
                if http.get(f"{service_url}/healthz").status_code == 200:
                    return
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.5)
    raise RuntimeError(f"service {service_url} not ready after {timeout:.0f}s: {last}")


def operator_setup(
    service_url: str,
    ca_cert: Path,
    token: str,
    serials: list[str],
    verify_ca: Path,
    claim: bool,
    domain: str = "lab",
    server_name: str | None = None,
) -> dict[str, Any]:
    """Register the domain CA and (optionally) claim the serials, as the domain's operator."""
    with _client(verify_ca, token, server_name) as http:
        answer = http.put(
            f"{service_url}/operator/domains/{domain}", json={"ca_certs": ca_cert.read_text()}
        )
        answer.raise_for_status()
        result: dict[str, Any] = answer.json()
        if claim and serials:
            claimed = http.post(
                f"{service_url}/operator/domains/{domain}/claims", json={"serials": serials}
            )
            claimed.raise_for_status()
            result = claimed.json()
    return result


def fetch_events(
    service_url: str, token: str, verify_ca: Path, server_name: str | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    with _client(verify_ca, server_name=server_name) as http:
        events = http.get(
            f"{service_url}/operator/events", headers={"authorization": f"Bearer {token}"}
        ).json()["events"]
        health = http.get(f"{service_url}/healthz").json()
    return events, health


def domain_registered(
    service_url: str, token: str, verify_ca: Path, server_name: str | None, domain: str = "lab"
) -> bool:
    """Whether this service (replica) still knows the domain: a restarted one forgets it."""
    with _client(verify_ca, token, server_name) as http:
        return http.get(f"{service_url}/operator/domains/{domain}").status_code == 200


def replica_urls(host: str, port: int = 8443) -> list[str]:
    """One URL per address ``host`` resolves to (Docker's DNS: one per replica)."""
    import socket

    addresses = sorted({a[4][0] for a in socket.getaddrinfo(host, port, socket.AF_INET)})
    return [f"https://{address}:{port}" for address in addresses]
