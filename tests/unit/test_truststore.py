"""Trust-store installs are atomic: a kill at any step leaves a complete, loadable store."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from atls.pki import CertificateAuthority
from atls_client.truststore import CRASH_ENV, INSTALL_STEPS, TrustStore, TrustStoreError

INSTALL = textwrap.dedent("""
    import sys
    from pathlib import Path
    from cryptography import x509
    from atls_client.truststore import TrustStore
    anchors = x509.load_pem_x509_certificates(Path(sys.argv[2]).read_bytes())
    TrustStore(sys.argv[1]).install(anchors, {"voucher": "new"}, {"serial": "device-0001"})
""")


@pytest.fixture(scope="module")
def cas():
    return (
        CertificateAuthority.create("Vendor"),
        CertificateAuthority.create("Old domain"),
        CertificateAuthority.create("New domain"),
    )


def _store(tmp_path, cas) -> TrustStore:
    vendor, old, _ = cas
    store = TrustStore(tmp_path / "store")
    store.initialize(vendor.cert_pem)
    store.install([old.certificate], {"voucher": "old"}, {"serial": "device-0001"})
    return store


def _install_in_child(store: TrustStore, new_pem_path, crash_at: str | None):
    env = {**os.environ}
    if crash_at:
        env[CRASH_ENV] = crash_at
    return subprocess.run(
        [sys.executable, "-c", INSTALL, str(store.root), str(new_pem_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("step", INSTALL_STEPS)
def test_kill_at_each_step_leaves_old_or_new_store(tmp_path, cas, step):
    vendor, old, new = cas
    store = _store(tmp_path, cas)
    new_pem = tmp_path / "new.pem"
    new_pem.write_bytes(new.cert_pem)
    killed = _install_in_child(store, new_pem, step)
    assert killed.returncode == 137, killed.stderr
    installed = store.load()
    assert installed is not None
    swapped = INSTALL_STEPS.index(step) >= INSTALL_STEPS.index("link-swapped")
    expected, voucher = (new, "new") if swapped else (old, "old")
    assert installed.anchors == [expected.certificate]
    assert installed.voucher == {"voucher": voucher}
    pem = store.network_anchors_pem()
    assert vendor.cert_pem in pem and expected.cert_pem in pem
    # The next install completes and clears what the killed one left behind.
    assert _install_in_child(store, new_pem, None).returncode == 0
    assert store.load().anchors == [new.certificate]  # type: ignore[union-attr]
    leftovers = [p.name for p in store.root.iterdir() if p.name.startswith(".")]
    assert leftovers == []
    assert len(list(store.root.glob("gen-*"))) <= 2


def test_a_crash_on_first_install_leaves_nothing_installed(tmp_path, cas):
    vendor, _, new = cas
    store = TrustStore(tmp_path / "store")
    store.initialize(vendor.cert_pem)
    new_pem = tmp_path / "new.pem"
    new_pem.write_bytes(new.cert_pem)
    assert _install_in_child(store, new_pem, "link-prepared").returncode == 137
    assert store.load() is None
    assert store.network_anchors_pem() == vendor.cert_pem


def test_refusals(tmp_path, cas):
    vendor, _, new = cas
    store = TrustStore(tmp_path / "store")
    with pytest.raises(TrustStoreError, match="no factory anchors"):
        store.install([new.certificate], {}, {})
    store.initialize(vendor.cert_pem)
    with pytest.raises(TrustStoreError, match="empty anchor set"):
        store.install([], {}, {})
    with pytest.raises(ValueError):
        TrustStore(tmp_path / "other").initialize(b"not a certificate")
