"""The device's bootstrap state machine (draft section 3.1, BRSKI-like).

    probe ─ok─▶ done (ATLS not needed, draft 6.2)
      │fails validation
      ▼
    atls ─▶ report ─▶ voucher ─▶ cacerts ─▶ install ─▶ network_tls ─▶ app_request

Every step is timed and reported. Carrier failures and flights damaged in
transit are retried (a fresh handshake each time, bounded, with backoff);
security failures (authentication, voucher, bundle) are never retried and
never install anything. Anchors are installed only if an authenticated ATLS
session delivered a voucher that verifies and a bundle that the voucher vouches for.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from atls.cacerts import BundleError, decode_cacerts, vouched_anchors
from atls.dtls import DEFAULT_MTU, DTLSContext
from atls.http_binding import Mode, ServiceRefusedError, Variant
from atls.inner_http import InnerHTTPError
from atls.pki import Identity, device_serial
from atls.session import ATLSError, Role, TLSConfig, TLSVersion
from atls.voucher import VoucherError, verify_voucher

from .client import ATLSClient, CarrierError, CarrierSettings, ResponseTooLargeError
from .probe import ProbeResult, probe
from .truststore import TrustStore, TrustStoreError

EXIT_OK, EXIT_USAGE, EXIT_CARRIER, EXIT_TLS, EXIT_REFUSED = 0, 2, 3, 4, 5
EXIT_VOUCHER, EXIT_BUNDLE, EXIT_INSTALL, EXIT_NETWORK_TLS, EXIT_APP = 7, 8, 9, 10, 11
EXIT_CODES = {
    EXIT_OK: "bootstrapped, or not needed",
    EXIT_USAGE: "usage or configuration",
    EXIT_CARRIER: "the network carrying ATLS failed (after retries)",
    EXIT_TLS: "the ATLS session failed (TLS alert, bad flight)",
    EXIT_REFUSED: "the service or the middlebox refused (HTTP problem)",
    EXIT_VOUCHER: "voucher rejected",
    EXIT_BUNDLE: "CA bundle rejected",
    EXIT_INSTALL: "trust store install failed",
    EXIT_NETWORK_TLS: "network TLS still does not validate after install",
    EXIT_APP: "the application request failed",
}
# A refused bootstrap call fails the step it belongs to.
_REFUSAL_EXIT = {"/bootstrap/voucher": EXIT_VOUCHER, "/bootstrap/cacerts": EXIT_BUNDLE}
STEPS = ("probe", "atls", "report", "voucher", "cacerts", "install", "network_tls", "app_request")


@dataclass
class Step:
    name: str
    ok: bool | None  # None: skipped
    ms: float
    detail: str


@dataclass
class BootstrapConfig:
    service_url: str
    identity: Identity
    vendor_anchor_pem: bytes
    store: Path
    proxy: str | None = None
    server_name: str | None = None
    variant: Variant = Variant.CURRENT
    mode: Mode = Mode.EXPORT
    retries: int = 2
    backoff: float = 0.25
    timeout: float = 10.0
    app_path: str = "/api/hello"
    # Anchors the device ships with for *network* TLS; default: the vendor anchor.
    factory_anchors_pem: bytes | None = None
    # SSLKEYLOGFILE writer for the ATLS sessions (atls.session.open_keylog).
    keylog: Callable[[bytes], None] | None = None
    tls_version: TLSVersion | None = None  # offer only this version (an old device)
    # TLSConfig fields for the ATLS session: suites, groups, ALPN (atls.cli_options)
    tls_options: dict[str, Any] = field(default_factory=dict)
    dtls: bool = False  # the ATLS session is DTLS 1.2 (records in the HTTP bodies)
    mtu: int = DEFAULT_MTU
    # The one certificate allowed to sign vouchers; default: any vendor-issued
    # certificate with the voucher-signing usage.
    voucher_signer_pem: bytes | None = None


@dataclass
class BootstrapReport:
    device: str
    service: str
    result: str = "failed"
    exit_code: int = 1
    installed: bool = False
    handshake_attempts: int = 0
    steps: list[Step] = field(default_factory=list)
    anchors: list[str] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def step(self, name: str) -> Step | None:
        return next((s for s in self.steps if s.name == name), None)


class _Stop(Exception):
    def __init__(self, code: int, message: str) -> None:
        self.code = code
        super().__init__(message)


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


class Bootstrap:
    def __init__(self, config: BootstrapConfig, say: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.say = say or (lambda _: None)
        serial = device_serial(config.identity.certificate)
        if serial is None:
            raise ValueError("the device certificate carries no serial number")
        self.serial = serial
        self.store = TrustStore(config.store)
        self.vendor_anchor = x509.load_pem_x509_certificate(config.vendor_anchor_pem)
        self.signer_pin = (
            x509.load_pem_x509_certificate(config.voucher_signer_pem)
            if config.voucher_signer_pem
            else None
        )
        self.report = BootstrapReport(device=serial, service=config.service_url)

    def _run_step(self, name: str, action: Callable[[], tuple[bool, str]]) -> bool:
        started = time.perf_counter()
        try:
            ok, detail = action()
        except _Stop as stop:
            self._record(name, False, started, str(stop))
            raise
        self._record(name, ok, started, detail)
        return ok

    def _record(self, name: str, ok: bool | None, started: float, detail: str) -> None:
        ms = (time.perf_counter() - started) * 1000
        self.report.steps.append(Step(name, ok, round(ms, 1), detail))
        mark = {True: "ok", False: "FAILED", None: "skipped"}[ok]
        self.say(f"[{self.serial}] {name:<12} {mark:<7} {ms:7.1f} ms  {detail}")

    def run(self) -> BootstrapReport:
        try:
            self.store.initialize(self.config.factory_anchors_pem or self.config.vendor_anchor_pem)
            self._flow()
        except _Stop as stop:
            self.report.exit_code = stop.code
            self.report.error = str(stop)
        except TrustStoreError as exc:
            self.report.exit_code, self.report.error = EXIT_INSTALL, str(exc)
        installed = self.store.load() if self.store.factory_path.exists() else None
        self.report.anchors = (
            [c.subject.rfc4514_string() for c in installed.anchors] if installed else []
        )
        return self.report

    # -- the flow -------------------------------------------------------------------------

    def _probe(self) -> ProbeResult:
        return probe(
            self.config.service_url + "/healthz",
            self.store.network_anchors_pem(),
            proxy=self.config.proxy,
            timeout=self.config.timeout,
        )

    def _flow(self) -> None:
        first: ProbeResult | None = None

        def do_probe() -> tuple[bool, str]:
            nonlocal first
            first = self._probe()
            return first.ok, first.detail

        if self._run_step("probe", do_probe):
            for name in STEPS[1:-1]:
                self._record(name, None, time.perf_counter(), "network TLS already validates")
            self._app_request()
            self.report.result, self.report.exit_code = "not-needed", EXIT_OK
            return
        assert first is not None
        if not first.validation_failed:
            raise _Stop(EXIT_CARRIER, f"network unreachable: {first.detail}")
        with self._atls_client() as client:
            self._run_step("atls", lambda: self._handshake(client))
            self._run_step("report", lambda: self._transport_report(client, first))
            nonce = base64.b64encode(os.urandom(32)).decode()
            signed: dict[str, Any] = {}
            pinned: list[x509.Certificate] = []

            def voucher() -> tuple[bool, str]:
                signed.update(self._fetch_voucher(client, nonce))
                try:
                    accepted = verify_voucher(
                        signed,
                        vendor_anchor=self.vendor_anchor,
                        serial_number=self.serial,
                        nonce=nonce,
                        signer_pin=self.signer_pin,
                    )
                except VoucherError as exc:
                    raise _Stop(EXIT_VOUCHER, f"voucher rejected: {exc}") from None
                pinned.append(accepted.pinned_domain_cert)
                return True, (
                    f"pinned domain CA {accepted.pinned_domain_cert.subject.rfc4514_string()}"
                    f", expires {accepted.expires_on:%H:%M:%S}Z"
                )

            self._run_step("voucher", voucher)
            anchors: list[x509.Certificate] = []

            def cacerts() -> tuple[bool, str]:
                body = self._call(client, "GET", "/bootstrap/cacerts", 200)
                try:
                    anchors.extend(vouched_anchors(decode_cacerts(body), pinned[0]))
                except BundleError as exc:
                    raise _Stop(EXIT_BUNDLE, f"CA bundle rejected: {exc}") from None
                return True, f"{len(anchors)} anchors, all vouched for by the voucher"

            self._run_step("cacerts", cacerts)

        previous = self.store.load()

        def install() -> tuple[bool, str]:
            try:
                installed = self.store.install(
                    anchors, signed, {"serial": self.serial, "service": self.config.service_url}
                )
            except (TrustStoreError, OSError) as exc:
                raise _Stop(EXIT_INSTALL, f"trust store install failed: {exc}") from None
            self.report.installed = True
            return True, f"{installed.generation} in {self.store.root}"

        self._run_step("install", install)

        def network_tls() -> tuple[bool, str]:
            second = self._probe()
            if not second.ok:
                # the new anchors do not do what they were installed for: take them back
                try:
                    back_to = self.store.rollback(previous)
                except (TrustStoreError, OSError) as exc:
                    back_to = f"nothing (rollback failed: {exc})"
                else:
                    self.report.installed = False
                raise _Stop(
                    EXIT_NETWORK_TLS,
                    f"network TLS still fails: {second.detail}; rolled back to {back_to}",
                )
            return True, f"validates with the installed anchors ({second.detail})"

        self._run_step("network_tls", network_tls)
        self._app_request()
        self.report.result, self.report.exit_code = "bootstrapped", EXIT_OK

    def _app_request(self) -> None:
        def app() -> tuple[bool, str]:
            result = probe(
                self.config.service_url + self.config.app_path,
                self.store.network_anchors_pem(),
                proxy=self.config.proxy,
                timeout=self.config.timeout,
            )
            if not result.ok:
                raise _Stop(EXIT_APP, f"GET {self.config.app_path} failed: {result.detail}")
            return True, f"GET {self.config.app_path} over network TLS: {result.detail}"

        self._run_step("app_request", app)

    # -- ATLS pieces ------------------------------------------------------------------------

    def _atls_client(self) -> ATLSClient:
        tls = TLSConfig(
            Role.CLIENT,
            identity=self.config.identity,
            trust_anchors=self.config.vendor_anchor_pem,
            server_name=self.config.server_name,
            keylog=self.config.keylog,
            min_version=self.config.tls_version or TLSVersion.TLS1_2,
            max_version=self.config.tls_version or TLSVersion.TLS1_3,
            **self.config.tls_options,
        )
        carrier = CarrierSettings(
            proxy=self.config.proxy, network_tls_verify=False, timeout=self.config.timeout
        )
        return ATLSClient(
            self.config.service_url,
            DTLSContext(tls, mtu=self.config.mtu) if self.config.dtls else tls,
            mode=self.config.mode,
            variant=self.config.variant,
            carrier=carrier,
            retries=self.config.retries,
            backoff=self.config.backoff,
        )

    def _handshake(self, client: ATLSClient) -> tuple[bool, str]:
        try:
            info = client.handshake()
        except CarrierError as exc:
            raise _Stop(EXIT_CARRIER, str(exc)) from None
        except ServiceRefusedError as exc:
            raise _Stop(EXIT_REFUSED, str(exc)) from None
        except ATLSError as exc:
            raise _Stop(EXIT_TLS, str(exc)) from None
        finally:
            self.report.handshake_attempts = client.handshake_attempts
        return True, (
            f"{info.version} {info.cipher} with {info.peer_subject}, "
            f"{client.handshake_attempts} attempt(s)"
        )

    def _call(
        self, client: ATLSClient, method: str, path: str, want: int, json_body: Any = None
    ) -> bytes:
        try:
            response = client.http.request(method, path, json=json_body)
        except ResponseTooLargeError as exc:
            raise _Stop(_REFUSAL_EXIT.get(path, EXIT_REFUSED), str(exc)) from None
        except CarrierError as exc:
            raise _Stop(EXIT_CARRIER, str(exc)) from None
        except ServiceRefusedError as exc:
            raise _Stop(EXIT_REFUSED, str(exc)) from None
        except (ATLSError, InnerHTTPError) as exc:
            raise _Stop(EXIT_TLS, str(exc)) from None
        if response.status_code != want:
            detail = response.text[:300]
            code = _REFUSAL_EXIT.get(path, EXIT_REFUSED)
            raise _Stop(code, f"{method} {path} -> {response.status_code}: {detail}")
        return response.content

    def _fetch_voucher(self, client: ATLSClient, nonce: str) -> dict[str, Any]:
        body = self._call(
            client,
            "POST",
            "/bootstrap/voucher",
            200,
            {"serial-number": self.serial, "nonce": nonce},
        )
        try:
            signed = json.loads(body)
        except ValueError:
            raise _Stop(EXIT_VOUCHER, "the voucher is not JSON") from None
        if not isinstance(signed, dict):
            raise _Stop(EXIT_VOUCHER, "the voucher is not a JSON object")
        return signed

    def _transport_report(self, client: ATLSClient, first: ProbeResult) -> tuple[bool, str]:
        if not first.presented_chain:
            return True, "nothing to report (no chain captured)"
        try:
            response = client.http.post(
                "/bootstrap/transport-report",
                json={
                    "target": self.config.service_url,
                    "presented_chain": [_pem(c) for c in first.presented_chain],
                },
            )
        except ATLSError as exc:  # reporting is informative, never fatal
            return False, f"could not report: {exc}"
        if response.status_code != 200:
            return False, f"service answered {response.status_code}"
        verdict = response.json().get("matches_domain_ca")
        issuer = first.presented_chain[0].issuer.rfc4514_string()
        return (
            True,
            f"middlebox certificate from {issuer}; service says matches domain CA: {verdict}",
        )
