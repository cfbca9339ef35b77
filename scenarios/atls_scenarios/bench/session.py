"""ATLSSession pair handshakes against a bare pyOpenSSL memory-BIO loop, in CPU time."""

from __future__ import annotations

from cryptography import x509
from OpenSSL import SSL, crypto

from atls.config import Role, TLSConfig, TLSVersion
from atls.loopback import run_handshake
from atls.pki import PKIDirectory
from atls.session import ATLSSession, TLSContext

from .measure import interleaved


def contexts(pki: PKIDirectory, version: TLSVersion) -> tuple[TLSContext, TLSContext]:
    server = TLSConfig(
        Role.SERVER,
        identity=pki.service(),
        trust_anchors=pki.vendor_ca().cert_pem,
        require_client_certificate=True,
        min_version=version,
        max_version=version,
    ).build()
    client = TLSConfig(
        Role.CLIENT,
        identity=pki.device("device-0001"),
        trust_anchors=pki.vendor_ca().cert_pem,
        server_name="atls-service",
        min_version=version,
        max_version=version,
    ).build()
    return client, server


def _bare_context(config: TLSConfig, method: int, mode: int) -> SSL.Context:
    """The same material and versions with nothing but pyOpenSSL's defaults."""
    ctx = SSL.Context(method)
    ctx.set_min_proto_version(int(config.min_version))
    ctx.set_max_proto_version(int(config.max_version))
    assert config.identity is not None and config.trust_anchors is not None
    ctx.use_certificate(config.identity.certificate)
    ctx.use_privatekey(config.identity.private_key)
    store = ctx.get_cert_store()
    assert store is not None
    for anchor in x509.load_pem_x509_certificates(config.trust_anchors):
        store.add_cert(crypto.X509.from_cryptography(anchor))
    ctx.set_verify(mode)
    return ctx


def bare_pair(client_ctx: SSL.Context, server_ctx: SSL.Context) -> None:
    """The baseline: the same mutual handshake, a tight pyOpenSSL loop."""
    c, s = SSL.Connection(client_ctx, None), SSL.Connection(server_ctx, None)
    c.set_connect_state()
    s.set_accept_state()
    for _ in range(8):
        for a, b in ((c, s), (s, c)):
            try:
                a.do_handshake()
            except SSL.WantReadError:
                pass
            try:
                data = a.bio_read(262144)
            except SSL.WantReadError:
                data = b""
            if data:
                b.bio_write(data)
        try:
            s.do_handshake()
            c.do_handshake()
            return
        except SSL.WantReadError:
            continue
    raise RuntimeError("bare handshake did not finish")


def measure(pki: PKIDirectory, quick: bool) -> dict[str, dict[str, float]]:
    """Per version: CPU seconds per pair handshake, bare and ATLSSession, and the ratio."""
    out = {}
    for version in (TLSVersion.TLS1_3, TLSVersion.TLS1_2):
        client, server = contexts(pki, version)
        bare_c = _bare_context(client.config, SSL.TLS_CLIENT_METHOD, SSL.VERIFY_PEER)
        bare_s = _bare_context(
            server.config,
            SSL.TLS_SERVER_METHOD,
            SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT,
        )

        def baseline(c: SSL.Context = bare_c, s: SSL.Context = bare_s) -> None:
            bare_pair(c, s)

        def ours(c: TLSContext = client, s: TLSContext = server) -> None:
            run_handshake(ATLSSession(c), ATLSSession(s))

        bare, atls = interleaved(
            baseline,
            ours,
            per_block=20 if quick else 50,
            blocks=4 if quick else 8,
        )
        out[version.label] = {"bare_per_s": 1 / bare, "atls_per_s": 1 / atls, "ratio": bare / atls}
    return out
