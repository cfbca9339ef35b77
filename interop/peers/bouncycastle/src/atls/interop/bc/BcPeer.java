package atls.interop.bc;

import atls.interop.Certs;
import atls.interop.Peer;
import atls.interop.Stack;
import atls.interop.TestCase;
import atls.interop.TlsEngine;
import atls.interop.TlsFailure;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.SecureRandom;
import java.security.cert.CertPathValidatorException;
import java.security.cert.X509Certificate;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Vector;
import org.bouncycastle.crypto.params.AsymmetricKeyParameter;
import org.bouncycastle.crypto.util.PrivateKeyFactory;
import org.bouncycastle.tls.AlertDescription;
import org.bouncycastle.tls.Certificate;
import org.bouncycastle.tls.CertificateEntry;
import org.bouncycastle.tls.CertificateRequest;
import org.bouncycastle.tls.CipherSuite;
import org.bouncycastle.tls.ClientCertificateType;
import org.bouncycastle.tls.DefaultTlsClient;
import org.bouncycastle.tls.DefaultTlsServer;
import org.bouncycastle.tls.HashAlgorithm;
import org.bouncycastle.tls.NameType;
import org.bouncycastle.tls.ProtocolVersion;
import org.bouncycastle.tls.ServerName;
import org.bouncycastle.tls.SignatureAlgorithm;
import org.bouncycastle.tls.SignatureAndHashAlgorithm;
import org.bouncycastle.tls.TlsAuthentication;
import org.bouncycastle.tls.TlsClientProtocol;
import org.bouncycastle.tls.TlsContext;
import org.bouncycastle.tls.TlsCredentialedSigner;
import org.bouncycastle.tls.TlsCredentials;
import org.bouncycastle.tls.TlsFatalAlert;
import org.bouncycastle.tls.TlsFatalAlertReceived;
import org.bouncycastle.tls.TlsProtocol;
import org.bouncycastle.tls.TlsServerCertificate;
import org.bouncycastle.tls.TlsServerProtocol;
import org.bouncycastle.tls.TlsUtils;
import org.bouncycastle.tls.crypto.TlsCertificate;
import org.bouncycastle.tls.crypto.TlsCryptoParameters;
import org.bouncycastle.tls.crypto.impl.bc.BcDefaultTlsCredentialedSigner;
import org.bouncycastle.tls.crypto.impl.bc.BcTlsCrypto;

/**
 * Bouncy Castle TLS API peer: TlsClientProtocol / TlsServerProtocol in
 * non-blocking mode (offerInput / readOutput), BC's own crypto (BcTlsCrypto).
 * BC leaves certificate checks to the application: chains are PKIX-validated
 * against CERTS/ca.der with the JDK's validator (see {@link Certs#verifyPeer}).
 */
public final class BcPeer implements Stack {
    private static final int[] SUITES = {
        CipherSuite.TLS_AES_128_GCM_SHA256, CipherSuite.TLS_AES_256_GCM_SHA384,
        CipherSuite.TLS_CHACHA20_POLY1305_SHA256,
        // TLS 1.2: our certificates are ECDSA, so only ECDHE_ECDSA suites
        CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        CipherSuite.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    };
    private static final Map<Integer, String> SUITE_NAMES = Map.of(
        CipherSuite.TLS_AES_128_GCM_SHA256, "TLS_AES_128_GCM_SHA256",
        CipherSuite.TLS_AES_256_GCM_SHA384, "TLS_AES_256_GCM_SHA384",
        CipherSuite.TLS_CHACHA20_POLY1305_SHA256, "TLS_CHACHA20_POLY1305_SHA256",
        CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        CipherSuite.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256");

    public static void main(String[] args) {
        Peer.main(new BcPeer());
    }

    private final BcTlsCrypto crypto = new BcTlsCrypto(new SecureRandom());

    @Override
    public String name() {
        return "bouncycastle";
    }

    @Override
    public String unsupported(TestCase tc, boolean client) {
        return null; // every test case maps onto the BC TLS API
    }

    @Override
    public TlsEngine newClient(TestCase tc, Certs certs) throws IOException {
        Client client = new Client(tc, certs);
        TlsClientProtocol protocol = new TlsClientProtocol(); // no streams: non-blocking mode
        Engine engine = new Engine(protocol, client);
        engine.run(() -> protocol.connect(client)); // queues the ClientHello
        return engine;
    }

    @Override
    public TlsEngine newServer(TestCase tc, Certs certs) throws IOException {
        Server server = new Server(tc, certs);
        TlsServerProtocol protocol = new TlsServerProtocol();
        Engine engine = new Engine(protocol, server);
        engine.run(() -> protocol.accept(server));
        return engine;
    }

    // -----------------------------------------------------------------------

    /** What both our TlsClient and TlsServer tell the engine. */
    private interface Endpoint {
        TlsContext context();

        boolean done();

        /** The export taken in notifyHandshakeComplete, or the reason BC refused it. */
        Object exported();
    }

    /**
     * BC destroys the secrets an exporter needs once notifyHandshakeComplete
     * returns ("only available from notifyHandshakeComplete()"), so both
     * endpoints export there, with the test case's context.
     */
    private static Object exportAtCompletion(TlsContext context, TestCase tc) {
        byte[] ctx = tc.emptyContext ? new byte[0] : null; // null = absent, empty = present and empty
        try {
            return context.exportKeyingMaterial(Peer.EXPORTER_LABEL, ctx, Peer.EXPORT_LENGTH);
        } catch (RuntimeException e) {
            // e.g. TLS 1.2 without extended_master_secret: RFC 7627 5.4 forbids
            // RFC 5705 exports, and BC enforces it (Go 1.19 does not offer EMS)
            String why = "BC refuses to export keying material: " + e.getMessage();
            return why;
        }
    }

    private static final class Engine implements TlsEngine {
        private final TlsProtocol protocol;
        private final Endpoint endpoint;

        Engine(TlsProtocol protocol, Endpoint endpoint) {
            this.protocol = protocol;
            this.endpoint = endpoint;
        }

        interface Step {
            void run() throws IOException;
        }

        /** Run a protocol step; turn any failure into a TlsFailure naming the alert. */
        void run(Step step) throws TlsFailure {
            try {
                step.run();
            } catch (TlsFatalAlertReceived e) {
                String name = AlertDescription.getName(e.getAlertDescription());
                throw new TlsFailure("the peer sent alert " + name, name, drain(), e);
            } catch (TlsFatalAlert e) {
                String name = AlertDescription.getName(e.getAlertDescription());
                String why = e.getCause() != null ? e.getCause().getMessage() : e.getMessage();
                throw new TlsFailure("TLS alert " + name + " sent: " + why, name, drain(), e);
            } catch (IOException | RuntimeException e) {
                throw new TlsFailure("TLS: " + e, null, drain(), e);
            }
        }

        private byte[] drain() {
            byte[] out = new byte[protocol.getAvailableOutputBytes()];
            protocol.readOutput(out, 0, out.length);
            return out;
        }

        @Override
        public void offer(byte[] in) throws IOException {
            run(() -> protocol.offerInput(in));
        }

        @Override
        public byte[] takeOutput() {
            return drain();
        }

        @Override
        public boolean handshakeComplete() {
            return endpoint.done();
        }

        @Override
        public byte[] takeApplicationData() {
            byte[] data = new byte[protocol.getAvailableInputBytes()];
            protocol.readInput(data, 0, data.length);
            return data;
        }

        @Override
        public void writeApplicationData(byte[] data) throws IOException {
            run(() -> protocol.writeApplicationData(data, 0, data.length));
        }

        @Override
        public byte[] exportKeyingMaterial(String label, byte[] context, int length) throws IOException {
            // only the export taken at completion exists (label and length are the contract's)
            Object exported = endpoint.exported();
            if (exported instanceof String) throw new IOException((String) exported);
            if (!label.equals(Peer.EXPORTER_LABEL) || length != Peer.EXPORT_LENGTH || exported == null) {
                throw new IOException("no keying material exported for " + label + "/" + length);
            }
            return ((byte[]) exported).clone();
        }

        @Override
        public String describe() {
            TlsContext c = endpoint.context();
            int suite = c.getSecurityParametersConnection().getCipherSuite();
            return c.getServerVersion().getName() + " " + SUITE_NAMES.getOrDefault(suite, String.format("0x%04x", suite));
        }

        @Override
        public void close() {
            try {
                protocol.close();
            } catch (IOException | RuntimeException ignored) {
                // already closed or failed: nothing to release
            }
        }
    }

    // -----------------------------------------------------------------------

    private static ProtocolVersion[] versions(TestCase tc) {
        if (tc.minVersion.equals(tc.maxVersion)) {
            return (tc.minVersion.equals(TestCase.TLS13) ? ProtocolVersion.TLSv13 : ProtocolVersion.TLSv12).only();
        }
        return ProtocolVersion.TLSv13.downTo(ProtocolVersion.TLSv12);
    }

    private static int[] suites(TestCase tc) {
        return tc.chacha ? new int[] {CipherSuite.TLS_CHACHA20_POLY1305_SHA256} : SUITES.clone();
    }

    /** Our certificate and key as BC signing credentials for this handshake. */
    private static TlsCredentialedSigner signer(TlsContext context, BcTlsCrypto crypto, Certs certs,
                                                byte[] requestContext) throws IOException {
        TlsCertificate cert = crypto.createCertificate(certs.certDer);
        Certificate chain = TlsUtils.isTLSv13(context)
            ? new Certificate(requestContext, new CertificateEntry[] {new CertificateEntry(cert, null)})
            : new Certificate(new TlsCertificate[] {cert});
        AsymmetricKeyParameter key = PrivateKeyFactory.createKey(certs.keyDer);
        // ecdsa_secp256r1_sha256 (TLS 1.3) is ECDSA with SHA-256 (TLS 1.2)
        SignatureAndHashAlgorithm alg = SignatureAndHashAlgorithm.getInstance(HashAlgorithm.sha256, SignatureAlgorithm.ecdsa);
        return new BcDefaultTlsCredentialedSigner(new TlsCryptoParameters(context), crypto, key, chain, alg);
    }

    /** PKIX-check a peer chain; failures become the alert a TLS stack would send. */
    private static void verify(Certs certs, Certificate chain, String name) throws IOException {
        if (chain == null || chain.isEmpty()) {
            throw new TlsFatalAlert(AlertDescription.certificate_required, "the peer sent no certificate");
        }
        try {
            List<X509Certificate> list = new ArrayList<>();
            for (TlsCertificate c : chain.getCertificateList()) list.add(Certs.parse(c.getEncoded()));
            certs.verifyPeer(list, name);
        } catch (CertPathValidatorException e) {
            throw new TlsFatalAlert(AlertDescription.unknown_ca, "certificate chain: " + e.getMessage(), e);
        } catch (GeneralSecurityException e) {
            throw new TlsFatalAlert(AlertDescription.bad_certificate, "certificate: " + e.getMessage(), e);
        }
    }

    private final class Client extends DefaultTlsClient implements Endpoint {
        private final TestCase tc;
        private final Certs certs;
        private volatile boolean done;
        private volatile Object exported;

        Client(TestCase tc, Certs certs) {
            super(crypto);
            this.tc = tc;
            this.certs = certs;
        }

        @Override
        protected ProtocolVersion[] getSupportedVersions() {
            return versions(tc);
        }

        @Override
        protected int[] getSupportedCipherSuites() {
            return suites(tc);
        }

        @Override
        protected Vector<ServerName> getSNIServerNames() {
            Vector<ServerName> names = new Vector<>();
            if (certs.serverName != null && !certs.serverName.matches("[0-9.:]+")) {
                names.add(new ServerName(NameType.host_name, certs.serverName.getBytes(StandardCharsets.US_ASCII)));
            }
            return names;
        }

        @Override
        public TlsAuthentication getAuthentication() {
            return new TlsAuthentication() {
                @Override
                public void notifyServerCertificate(TlsServerCertificate serverCertificate) throws IOException {
                    verify(certs, serverCertificate.getCertificate(), certs.serverName);
                }

                @Override
                public TlsCredentials getClientCredentials(CertificateRequest request) throws IOException {
                    if (!certs.hasIdentity()) return null; // answer with an empty Certificate
                    return signer(context, crypto, certs, request.getCertificateRequestContext());
                }
            };
        }

        @Override
        public void notifyHandshakeComplete() throws IOException {
            super.notifyHandshakeComplete();
            exported = exportAtCompletion(context, tc);
            done = true;
        }

        @Override
        public TlsContext context() {
            return context;
        }

        @Override
        public Object exported() {
            return exported;
        }

        @Override
        public boolean done() {
            return done;
        }
    }

    private final class Server extends DefaultTlsServer implements Endpoint {
        private final TestCase tc;
        private final Certs certs;
        private volatile boolean done;
        private volatile Object exported;

        Server(TestCase tc, Certs certs) {
            super(crypto);
            this.tc = tc;
            this.certs = certs;
        }

        @Override
        protected ProtocolVersion[] getSupportedVersions() {
            return versions(tc);
        }

        @Override
        protected int[] getSupportedCipherSuites() {
            return suites(tc);
        }

        @Override
        public TlsCredentials getCredentials() throws IOException {
            // one ECDSA identity for TLS 1.3 and the ECDHE_ECDSA 1.2 suites alike
            return signer(context, crypto, certs, TlsUtils.EMPTY_BYTES);
        }

        @Override
        public CertificateRequest getCertificateRequest() throws IOException {
            // every test case is mutual: ask for (and then require) a client certificate
            Vector<?> sigAlgs = TlsUtils.getDefaultSupportedSignatureAlgorithms(context);
            if (TlsUtils.isTLSv13(context)) {
                return new CertificateRequest(TlsUtils.EMPTY_BYTES, sigAlgs, null, null);
            }
            return new CertificateRequest(new short[] {ClientCertificateType.ecdsa_sign}, sigAlgs, null);
        }

        @Override
        public void notifyClientCertificate(Certificate clientCertificate) throws IOException {
            if ((clientCertificate == null || clientCertificate.isEmpty()) && !TlsUtils.isTLSv13(context)) {
                throw new TlsFatalAlert(AlertDescription.handshake_failure, "the client sent no certificate");
            }
            verify(certs, clientCertificate, null);
        }

        @Override
        public void notifyHandshakeComplete() throws IOException {
            super.notifyHandshakeComplete();
            exported = exportAtCompletion(context, tc);
            done = true;
        }

        @Override
        public TlsContext context() {
            return context;
        }

        @Override
        public Object exported() {
            return exported;
        }

        @Override
        public boolean done() {
            return done;
        }
    }
}
