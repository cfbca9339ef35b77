"""Locust user file: every simulated device is one ``User`` running the real bootstrap.

Loaded only by ``locust -f`` (which monkey-patches with gevent before it imports
this file); never import it elsewhere. Each user claims a device serial (an
atomic ``mkdir`` in a shared claim folder, so local runs and ``--scale``d
workers never share one), runs ``atls_client.bootstrap.Bootstrap`` in-process
with its own trust store, reports every step to Locust's statistics
(request type ``step``) and the whole bootstrap (type ``device``, name
``bootstrap``), writes the same JSON report ``atls-device --report`` writes,
and stops. The master (or the local runner) quits once every device reported.

Configuration: ``ATLS_FLEET_CONFIG`` names a JSON file (see
``atls_scenarios.fleet.FleetConfig``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import gevent
from locust import User, constant, events, task
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import WorkerRunner

from atls.http_binding import Mode, Variant
from atls.pki import PKIDirectory
from atls.session import TLSVersion
from atls_client.bootstrap import Bootstrap, BootstrapConfig

_config: dict[str, Any] | None = None
_serials: list[str] = []
_next = 0  # where this process starts looking for a free serial


def _config_from_compose() -> dict[str, Any]:
    """Under compose (compose/fleet.yml): the device container's paths and the scenario's
    device settings, as ``atls-device`` gets them there."""
    from atls_scenarios.scenario import find_scenario

    devices = find_scenario(os.environ.get("ATLS_SCENARIO", "bootstrap")).devices
    return {
        "service_url": os.environ.get("ATLS_SERVICE_URL", "https://atls-service:8443"),
        "pki": "/pki",
        "devices": int(os.environ.get("ATLS_DEVICES", "1")),
        "claim_dir": "/claims",
        "report_dir": "/reports/devices",
        "results_dir": "/results",  # the collector's inbox
        "store_dir": "/tmp/stores",
        "proxy": os.environ.get("ATLS_PROXY") or None,
        "server_name": "atls-service",
        "variant": devices.variant,
        "mode": devices.mode,
        "retries": devices.retries,
        "backoff": 0.1,
        "timeout": devices.timeout,
        "tls_version": devices.tls_version,
    }


def config() -> dict[str, Any]:
    global _config, _serials
    if _config is None:
        path = os.environ.get("ATLS_FLEET_CONFIG")
        _config = json.loads(Path(path).read_text()) if path else _config_from_compose()
        _serials = PKIDirectory(Path(_config["pki"])).device_serials()[: _config["devices"]]
    return _config


def claim() -> str | None:
    """The next serial nobody took yet (mkdir is atomic across processes and hosts)."""
    global _next
    claims = Path(config()["claim_dir"])
    claims.mkdir(parents=True, exist_ok=True)
    while _next < len(_serials):
        serial = _serials[_next]
        _next += 1
        try:
            (claims / serial).mkdir()
        except FileExistsError:
            continue
        return serial
    return None


def _fire(env: Environment, kind: str, name: str, ms: float, error: str | None) -> None:
    env.events.request.fire(
        request_type=kind,
        name=name,
        response_time=ms,
        response_length=0,
        exception=RuntimeError(error) if error else None,
        context={},
    )


class Device(User):
    """One device: claims a serial, bootstraps once, stops."""

    wait_time = constant(0)

    @task
    def bootstrap(self) -> None:
        cfg = config()
        serial = claim()
        if serial is None:
            raise StopUser()
        pki = PKIDirectory(Path(cfg["pki"]))
        report_path = Path(cfg["report_dir"]) / f"{serial}.json"
        started = time.perf_counter()
        data: dict[str, Any]
        try:
            bootstrap = Bootstrap(
                BootstrapConfig(
                    service_url=cfg["service_url"],
                    identity=pki.device(serial),
                    vendor_anchor_pem=pki.vendor_ca_cert.read_bytes(),
                    store=Path(cfg["store_dir"]) / serial,
                    proxy=cfg.get("proxy"),
                    server_name=cfg.get("server_name"),
                    variant=Variant.DRAFT00 if cfg["variant"] == "draft-00" else Variant.CURRENT,
                    mode=Mode(cfg["mode"]),
                    retries=cfg["retries"],
                    backoff=cfg["backoff"],
                    timeout=cfg["timeout"],
                    tls_version=(
                        TLSVersion.parse(cfg["tls_version"]) if cfg.get("tls_version") else None
                    ),
                )
            )
            data = bootstrap.run().to_dict()
        except Exception as exc:  # a bug, not an outcome: still one report per device
            data = {"device": serial, "result": "failed", "exit_code": -1, "steps": []}
            data["error"] = f"{type(exc).__name__}: {exc}"
        total_ms = (time.perf_counter() - started) * 1000
        data["fleet"] = {"worker": os.environ.get("HOSTNAME", ""), "total_ms": round(total_ms, 1)}
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(json.dumps(data, indent=2))
        if cfg.get("results_dir"):  # compose: what a device container drops for the collector
            results = Path(cfg["results_dir"])
            (results / f"{serial}.json").write_text(json.dumps(data))
            (results / f"{serial}.rc.tmp").write_text(str(data["exit_code"]))
            (results / f"{serial}.rc.tmp").rename(results / f"{serial}.rc")
        steps = data["steps"]
        for i, step in enumerate(steps):
            if step["ok"] is None:
                continue
            # A failed probe is the normal start of a bootstrap; a step fails the device
            # only when the flow stopped there.
            stopped = not step["ok"] and data["exit_code"] != 0 and i == len(steps) - 1
            _fire(
                self.environment,
                "step",
                step["name"],
                step["ms"],
                step["detail"] if stopped else None,
            )
        _fire(
            self.environment,
            "device",
            "bootstrap",
            total_ms,
            None if data["exit_code"] == 0 else f"exit {data['exit_code']}: {data.get('error')}",
        )
        raise StopUser()


def _quit_when_done(env: Environment, devices: int) -> None:
    """Every device reported (the master sees workers' stats every few seconds): stop."""
    while True:
        gevent.sleep(1.0)
        entry = env.stats.entries.get(("bootstrap", "device"))
        if entry is not None and entry.num_requests >= devices:
            gevent.sleep(0.5)
            if env.runner is not None:
                env.runner.quit()
            return


@events.test_start.add_listener
def _on_start(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return
    devices = int(os.environ.get("ATLS_FLEET_DEVICES") or config()["devices"])
    gevent.spawn(_quit_when_done, environment, devices)
