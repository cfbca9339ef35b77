"""Bootstrap against the real service: APIs, refusals, and nothing installed on any failure.

No middlebox here: the device's factory network anchor is a CA the service does
not use, so its first probe fails validation as behind a middlebox; the operator
registers the vendor CA as the "domain CA", so after bootstrap network TLS validates.
"""

from __future__ import annotations

import base64
import datetime
import os
import ssl

import httpx
import pytest

from atls.pki import CertificateAuthority
from atls.voucher import Voucher, sign_voucher
from atls_client.bootstrap import (
    EXIT_BUNDLE,
    EXIT_NETWORK_TLS,
    EXIT_OK,
    EXIT_VOUCHER,
    Bootstrap,
    BootstrapConfig,
)
from atls_client.truststore import TrustStore
from tests.integration.conftest import atls_client, raw_http

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def operator(pki, service):
    token = (pki.root / "operator-token").read_text().strip()
    context = ssl.create_default_context(cafile=str(pki.vendor_ca_cert))
    client = httpx.Client(
        base_url=service.url, verify=context, headers={"authorization": f"Bearer {token}"}
    )
    answer = client.put(
        "/operator/domains/lab", json={"ca_certs": pki.vendor_ca().cert_pem.decode()}
    )
    assert answer.status_code in (200, 201), answer.text
    assert (
        client.post(
            "/operator/domains/lab/claims", json={"serials": ["device-0001", "device-0002"]}
        ).status_code
        == 200
    )
    yield client
    client.close()


@pytest.fixture(scope="module")
def factory_ca() -> CertificateAuthority:
    return CertificateAuthority.create("Factory network CA")


def _bootstrap(pki, service, tmp_path, factory_ca, serial="device-0001") -> Bootstrap:
    config = BootstrapConfig(
        service_url=service.url,
        identity=pki.device(serial),
        vendor_anchor_pem=pki.vendor_ca().cert_pem,
        store=tmp_path / f"store-{serial}",
        server_name="127.0.0.1",
        retries=0,
        factory_anchors_pem=factory_ca.cert_pem,
    )
    return Bootstrap(config)


def _nothing_installed(bootstrap: Bootstrap) -> None:
    assert bootstrap.report.installed is False
    assert TrustStore(bootstrap.config.store).load() is None


def test_full_bootstrap(pki, service, operator, tmp_path, factory_ca):
    bootstrap = _bootstrap(pki, service, tmp_path, factory_ca)
    report = bootstrap.run()
    assert report.exit_code == EXIT_OK, report.error
    assert [(s.name, s.ok) for s in report.steps] == [
        ("probe", False),
        ("atls", True),
        ("report", True),
        ("voucher", True),
        ("cacerts", True),
        ("install", True),
        ("network_tls", True),
        ("app_request", True),
    ]
    assert report.anchors == [pki.vendor_ca().certificate.subject.rfc4514_string()]
    events = operator.get("/operator/events").json()["events"]
    assert any(e["event"] == "voucher-issued" and e["serial"] == "device-0001" for e in events)
    reports = [e for e in events if e["event"] == "transport-report"]
    assert reports and reports[-1]["matches_domain_ca"] is True


def _patched_voucher(monkeypatch, make):
    def fake(self, client, nonce):
        return make(self, nonce)

    monkeypatch.setattr(Bootstrap, "_fetch_voucher", fake)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("expired", "expired"),
        ("wrong-serial", "voucher is for serial"),
        ("wrong-nonce", "nonce does not match"),
        ("unknown-key", "unknown key"),
        ("bad-signature", "bad voucher signature"),
        # issue #12: a sibling device's own key (vendor-issued, a TLS client identity)
        # pinning an attacker's CA
        ("sibling-device", "not a voucher signer"),
    ],
)
def test_voucher_negatives_install_nothing(
    pki, service, operator, tmp_path, factory_ca, monkeypatch, rogue_ca, case, message
):
    def make(self, nonce):
        # the device verifies against its own clock, so the voucher is made now (not at import)
        now = datetime.datetime.now(datetime.UTC)
        serial, created, signer = self.serial, now, pki.voucher_signer()
        if case == "expired":
            created = now - datetime.timedelta(hours=1)
        if case == "wrong-serial":
            serial = "device-0002"
        if case == "wrong-nonce":
            nonce = base64.b64encode(os.urandom(32)).decode()
        if case == "unknown-key":
            signer = rogue_ca.issue_signer("Rogue Voucher Signer")
        pinned = pki.vendor_ca().certificate
        if case == "sibling-device":
            signer, pinned = pki.device("device-0002"), rogue_ca.certificate
        voucher = Voucher(
            "logged",
            serial,
            nonce,
            created,
            created + datetime.timedelta(minutes=10),
            pinned,
        )
        signed = sign_voucher(voucher, signer)
        if case == "bad-signature":
            sig = signed["signatures"][0]["signature"]
            signed["signatures"][0]["signature"] = ("A" if sig[0] != "A" else "B") + sig[1:]
        return signed

    _patched_voucher(monkeypatch, make)
    bootstrap = _bootstrap(pki, service, tmp_path, factory_ca)
    report = bootstrap.run()
    assert report.exit_code == EXIT_VOUCHER
    assert message in (report.error or "")
    assert report.step("voucher").ok is False  # type: ignore[union-attr]
    assert report.step("install") is None
    _nothing_installed(bootstrap)


def test_unclaimed_serial_gets_no_voucher(pki, service, operator, tmp_path, factory_ca):
    bootstrap = _bootstrap(pki, service, tmp_path, factory_ca, serial="device-0003")
    report = bootstrap.run()
    assert report.exit_code == EXIT_VOUCHER
    assert "not claimed by any domain" in (report.error or "")
    _nothing_installed(bootstrap)


def test_bundle_with_unvouched_certificate_installs_nothing(
    pki, service, operator, tmp_path, factory_ca, rogue_ca
):
    both = pki.vendor_ca().cert_pem + rogue_ca.cert_pem
    assert (
        operator.put("/operator/domains/lab", json={"ca_certs": both.decode()}).status_code == 200
    )
    try:
        bootstrap = _bootstrap(pki, service, tmp_path, factory_ca)
        report = bootstrap.run()
    finally:
        operator.put("/operator/domains/lab", json={"ca_certs": pki.vendor_ca().cert_pem.decode()})
    assert report.exit_code == EXIT_BUNDLE
    assert "did not issue" in (report.error or "")
    _nothing_installed(bootstrap)


def test_bootstrap_api_refusals(pki, service, operator):
    nonce = base64.b64encode(os.urandom(16)).decode()
    with raw_http(pki) as http:  # over the network, not ATLS
        answer = http.post(
            service.url + "/bootstrap/voucher",
            json={"serial-number": "device-0001", "nonce": nonce},
        )
        assert answer.status_code == 403 and "atls-required" in answer.text
    with atls_client(pki, service.url) as client:  # identity: device-0001
        client.handshake()
        mismatch = client.http.post(
            "/bootstrap/voucher", json={"serial-number": "device-0002", "nonce": nonce}
        )
        assert mismatch.status_code == 403 and "serial-mismatch" in mismatch.text
        short = client.http.post(
            "/bootstrap/voucher", json={"serial-number": "device-0001", "nonce": "c2hvcnQ="}
        )
        assert short.status_code == 400 and "16 to 64" in short.text
        garbage = client.http.post("/bootstrap/voucher", content=b"{not json")
        assert garbage.status_code == 400
        ok = client.http.post(
            "/bootstrap/voucher", json={"serial-number": "device-0001", "nonce": nonce}
        )
        assert ok.status_code == 200
        assert ok.headers["content-type"] == "application/voucher-jws+json"
        cacerts = client.http.get("/bootstrap/cacerts")
        assert cacerts.headers["content-type"].startswith("application/pkcs7-mime")


def test_operator_api_refusals(pki, service, operator):
    with raw_http(pki) as http:
        url = service.url + "/operator/domains/lab"
        assert http.get(url).status_code == 401
        assert http.get(url, headers={"authorization": "Bearer wrong"}).status_code == 401
    assert operator.get("/operator/domains/nowhere").status_code == 404
    assert operator.put("/operator/domains/x", json={"ca_certs": "junk"}).status_code == 400
    # issue #12: a certificate that is not a CA is no domain CA
    leaf = pki.service().chain_pem.decode()
    not_ca = operator.put("/operator/domains/x", json={"ca_certs": leaf})
    assert not_ca.status_code == 400 and "not a CA" in not_ca.json()["detail"], not_ca.text
    operator.put("/operator/domains/other", json={"ca_certs": pki.vendor_ca().cert_pem.decode()})
    conflict = operator.post("/operator/domains/other/claims", json={"serials": ["device-0001"]})
    assert conflict.status_code == 409 and "device-0001" in conflict.text
    assert (
        operator.post("/operator/domains/other/claims", json={"serials": "device-0001"}).status_code
        == 400
    )


def test_failed_network_tls_after_install_rolls_back(
    pki, service, operator, tmp_path, factory_ca, monkeypatch
):
    """Issue #12: the final network-TLS check fails after install: the previous
    generation is current again, and the report says so."""
    store = TrustStore(tmp_path / "store-device-0001")
    store.initialize(factory_ca.cert_pem)
    before = store.install([factory_ca.certificate], {"earlier": True}, {"serial": "device-0001"})
    real_probe = Bootstrap._probe
    calls = []

    def probe_failing_after_install(self):
        calls.append(1)
        result = real_probe(self)
        if len(calls) == 1:
            assert result.validation_failed, result.detail
            return result
        result.ok, result.detail = False, "simulated: still not valid"
        return result

    monkeypatch.setattr(Bootstrap, "_probe", probe_failing_after_install)
    bootstrap = _bootstrap(pki, service, tmp_path, factory_ca)
    report = bootstrap.run()
    assert report.exit_code == EXIT_NETWORK_TLS, report.error
    assert f"rolled back to {before.generation}" in (report.error or "")
    current = store.load()
    assert current is not None and current.generation == before.generation
    assert report.installed is False


def test_failed_network_tls_on_first_install_rolls_back_to_factory(
    pki, service, operator, tmp_path, factory_ca, monkeypatch
):
    real_probe = Bootstrap._probe
    calls = []

    def probe_failing_after_install(self):
        calls.append(1)
        result = real_probe(self)
        if len(calls) > 1:
            result.ok, result.detail = False, "simulated: still not valid"
        return result

    monkeypatch.setattr(Bootstrap, "_probe", probe_failing_after_install)
    bootstrap = _bootstrap(pki, service, tmp_path, factory_ca)
    report = bootstrap.run()
    assert report.exit_code == EXIT_NETWORK_TLS
    assert "rolled back to the factory anchors" in (report.error or "")
    _nothing_installed(bootstrap)
