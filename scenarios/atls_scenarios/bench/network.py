"""ATLS over HTTP against network TLS on one service process, both mutually authenticated.

The service is the bound, so the figure is the service's CPU time per
handshake (from /proc): ATLS handshakes over one keep-alive carrier, against
new TCP + TLS connections that present the device's certificate to the same
server (``--network-client-auth optional``). Latencies seen by the client
feed the distribution plot. The service's two HTTP parsers are compared the
same way.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

from atls.config import Role, TLSConfig
from atls.pki import PKIDirectory
from atls_client.client import ATLSClient, CarrierSettings

from ..processes import ServiceProcess
from . import profile as service_profile
from .measure import Samples, process_cpu, run_bounded


def _service_cpu(service: ServiceProcess) -> float:
    assert service.process is not None and service.process.proc is not None
    return process_cpu(service.process.proc.pid)


def _atls(pki: PKIDirectory, service: ServiceProcess, count: int, seconds: float) -> Samples:
    config = TLSConfig(
        Role.CLIENT,
        identity=pki.device("device-0001"),
        trust_anchors=pki.vendor_ca().cert_pem,
        server_name="atls-service",
    )
    carrier = CarrierSettings(network_tls_verify=pki.vendor_ca_cert)
    with ATLSClient(service.url, config, carrier=carrier) as client:
        client.handshake()  # the carrier connection and caches
        return run_bounded(client.handshake, count, seconds, lambda: _service_cpu(service))


def _network_tls(pki: PKIDirectory, service: ServiceProcess, count: int, seconds: float) -> Samples:
    context = ssl.create_default_context(cafile=str(pki.vendor_ca_cert))
    context.load_cert_chain(pki.device_cert("device-0001"), pki.device_key("device-0001"))

    def handshake() -> None:
        with (
            socket.create_connection(("127.0.0.1", service.port)) as raw,
            context.wrap_socket(raw, server_hostname="atls-service") as tls,
        ):
            tls.getpeercert()

    handshake()
    return run_bounded(handshake, count, seconds, lambda: _service_cpu(service))


def measure(
    pki: PKIDirectory, logs: Path, quick: bool, profile_dir: Path | None = None
) -> dict[str, object]:
    """The ratio, both latency distributions, the parsers; with ``profile_dir`` a profile."""
    count, seconds = (150, 12.0) if quick else (600, 40.0)
    out: dict[str, object] = {}
    if profile_dir is not None:
        out["profile_ms_per_handshake"] = _profile(pki, logs, count, seconds, profile_dir)
    for parser in ("httptools", "h11"):
        args = ["--network-client-auth", "optional", "--http", parser]
        with ServiceProcess(pki.root, logs / parser, extra_args=args) as service:
            atls = _atls(pki, service, count, seconds)
            if parser == "h11":
                out["h11_cpu_ms_per_atls_handshake"] = 1000 * atls.cpu / atls.count
                continue
            network = _network_tls(pki, service, count, seconds)
        out["atls_cpu_ms"] = 1000 * atls.cpu / atls.count
        out["network_cpu_ms"] = 1000 * network.cpu / network.count
        out["ratio"] = (network.cpu / network.count) / (atls.cpu / atls.count)
        out["atls_latency_s"] = atls.latencies
        out["network_latency_s"] = network.latencies
        out["atls_p50_ms"] = 1000 * atls.percentile(50)
        out["network_p50_ms"] = 1000 * network.percentile(50)
    return out


def _profile(
    pki: PKIDirectory, logs: Path, count: int, seconds: float, out_dir: Path
) -> dict[str, float]:
    """ATLS handshakes against a service that profiles itself; its CPU per component."""
    stats = out_dir / "service.prof"  # kept: `python -m pstats` reads it
    args = ["--network-client-auth", "optional", "--http", "httptools"]
    env = {"ATLS_SERVICE_PROFILE": str(stats)}
    with ServiceProcess(pki.root, logs / "profile", extra_args=args, env=env) as service:
        samples = _atls(pki, service, count, seconds)
    # +1: the warm-up handshake _atls runs before its timed ones
    return service_profile.summarize(stats, samples.count + 1, out_dir / "service-profile.txt")
