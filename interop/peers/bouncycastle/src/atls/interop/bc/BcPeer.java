package atls.interop.bc;

import atls.interop.Certs;
import atls.interop.DatagramBridge;
import atls.interop.DtlsRecords;
import atls.interop.Peer;
import atls.interop.Stack;
import atls.interop.TestCase;
import atls.interop.TlsEngine;
import atls.interop.TlsFailure;
import java.io.ByteArrayOutputStream;
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
import org.bouncycastle.tls.AlertLevel;
import org.bouncycastle.tls.Certificate;
import org.bouncycastle.tls.CertificateEntry;
import org.bouncycastle.tls.CertificateRequest;
import org.bouncycastle.tls.CipherSuite;
import org.bouncycastle.tls.ClientCertificateType;
import org.bouncycastle.tls.DTLSClientProtocol;
import org.bouncycastle.tls.DTLSServerProtocol;
import org.bouncycastle.tls.DTLSTransport;
import org.bouncycastle.tls.DatagramTransport;
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
 *
 * <p>dtls12: BC's DTLS has no non-blocking mode; DTLSClientProtocol.connect /
 * DTLSServerProtocol.accept block on a DatagramTransport, so they run in a
 * thread of their own behind a {@link DatagramBridge} (java-common). The
 * server skips HelloVerifyRequest (it would need DTLSVerifier before accept;
 * the contract allows both), so the matrix also has a server that answers the
 * first ClientHello with its ServerHello flight.
 */
public final class BcPeer implements Stack {
    private static final int[] SUITES = {
        CipherSuite.TLS_AES_128_GCM_SHA256, CipherSuite.TLS_AES_256_GCM_SHA384,
        CipherSuite.TLS_CHACHA20_POLY1305_SHA256,
        // TLS 1.2: our certificates are ECDSA, so only ECDHE_ECDSA suites
        CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        CipherSuite.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    };
    private static final int[] DTLS_SUITES = { // DTLS 1.2 is TLS 1.2's suites
        CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        CipherSuite.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    };
    private static final long DTLS_ANSWER_MS = 8_000; // the stack answers a flight within this
    private static final long DTLS_IDLE_MS = 30_000;  // a handshake thread waits this long for a flight at most
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
        if (tc.dtls) {
            DtlsEngine engine = new DtlsEngine(client);
            engine.start("bc-dtls-client", t -> new DTLSClientProtocol().connect(client, t));
            engine.settle(); // the ClientHello is out
            return engine;
        }
        TlsClientProtocol protocol = new TlsClientProtocol(); // no streams: non-blocking mode
        Engine engine = new Engine(protocol, client);
        engine.run(() -> protocol.connect(client)); // queues the ClientHello
        return engine;
    }

    @Override
    public TlsEngine newServer(TestCase tc, Certs certs) throws IOException {
        Server server = new Server(tc, certs);
        if (tc.dtls) {
            DtlsEngine engine = new DtlsEngine(server);
            // no DTLSVerifier: the first ClientHello is answered with the ServerHello flight
            engine.start("bc-dtls-server", t -> new DTLSServerProtocol().accept(server, t));
            return engine; // the first offer brings the ClientHello
        }
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

        /** The last fatal alert the peer sent, or -1 (BC's DTLS reports it as a TlsFatalAlert). */
        short alertReceived();
    }

    /** Turn a failure of BC into a TlsFailure naming the alert; {@code flight} is what BC sent last. */
    private static TlsFailure failure(Throwable e, Endpoint endpoint, byte[] flight) {
        if (e instanceof TlsFailure) return (TlsFailure) e;
        if (e instanceof TlsFatalAlertReceived) {
            String name = AlertDescription.getName(((TlsFatalAlertReceived) e).getAlertDescription());
            return new TlsFailure("the peer sent alert " + name, name, flight, e);
        }
        if (e instanceof TlsFatalAlert) {
            short alert = ((TlsFatalAlert) e).getAlertDescription();
            String name = AlertDescription.getName(alert);
            if (alert == endpoint.alertReceived()) return new TlsFailure("the peer sent alert " + name, name, flight, e);
            String why = e.getCause() != null ? e.getCause().getMessage() : e.getMessage();
            return new TlsFailure("TLS alert " + name + " sent: " + why, name, flight, e);
        }
        return new TlsFailure("TLS: " + e, null, flight, e);
    }

    /** The export taken at completion (label and length are the contract's: only that one exists). */
    private static byte[] exported(Endpoint endpoint, String label, int length) throws IOException {
        Object exported = endpoint.exported();
        if (exported instanceof String) throw new IOException((String) exported);
        if (!label.equals(Peer.EXPORTER_LABEL) || length != Peer.EXPORT_LENGTH || exported == null) {
            throw new IOException("no keying material exported for " + label + "/" + length);
        }
        return ((byte[]) exported).clone();
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
            } catch (IOException | RuntimeException e) {
                throw failure(e, endpoint, drain());
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
            return exported(endpoint, label, length);
        }

        @Override
        public String describe() {
            return BcPeer.describe(endpoint);
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

    private static String describe(Endpoint endpoint) {
        TlsContext c = endpoint.context();
        int suite = c.getSecurityParametersConnection().getCipherSuite();
        return c.getServerVersion().getName() + " " + SUITE_NAMES.getOrDefault(suite, String.format("0x%04x", suite));
    }

    /** BC's DatagramTransport over the bridge: one record per datagram each way. */
    private static final class BridgeTransport implements DatagramTransport {
        private final DatagramBridge<DTLSTransport> bridge;

        BridgeTransport(DatagramBridge<DTLSTransport> bridge) {
            this.bridge = bridge;
        }

        @Override
        public int getReceiveLimit() {
            return DtlsRecords.MAX_RECORD;
        }

        @Override
        public int getSendLimit() {
            return DtlsRecords.MTU; // BC fragments handshake messages to fit
        }

        @Override
        public int receive(byte[] buf, int off, int len, int waitMillis) throws IOException {
            // the stack's retransmission timer (waitMillis) is not honoured: HTTP answers every flight
            byte[] datagram = bridge.receive();
            if (datagram == null) return -1; // after the handshake: nothing more offered
            int n = Math.min(len, datagram.length); // a longer one arrives cut and BC drops it
            System.arraycopy(datagram, 0, buf, off, n);
            return n;
        }

        @Override
        public void send(byte[] buf, int off, int len) {
            bridge.send(buf, off, len);
        }

        @Override
        public void close() {
            // the carrier owns the HTTP side; DatagramBridge.close ends the session
        }
    }

    /**
     * dtls12: BC's blocking DTLS handshake in its own thread ({@link DatagramBridge});
     * afterwards the carrier thread uses the DTLSTransport it returned.
     */
    private static final class DtlsEngine implements TlsEngine {
        interface Handshake {
            DTLSTransport run(DatagramTransport transport) throws Exception;
        }

        private final Endpoint endpoint;
        private final DatagramBridge<DTLSTransport> bridge = new DatagramBridge<>(DTLS_IDLE_MS);
        private final ByteArrayOutputStream appIn = new ByteArrayOutputStream();
        private DTLSTransport transport; // set when the handshake succeeded

        DtlsEngine(Endpoint endpoint) {
            this.endpoint = endpoint;
        }

        void start(String name, Handshake handshake) {
            BridgeTransport t = new BridgeTransport(bridge);
            bridge.start(name, () -> handshake.run(t));
        }

        /** Wait until BC answered what it was offered; a failed handshake becomes a TlsFailure. */
        void settle() throws TlsFailure {
            try {
                bridge.awaitQuiet(DTLS_ANSWER_MS);
            } catch (IOException e) {
                close();
                throw new TlsFailure("DTLS: " + e.getMessage(), null, bridge.takeOutput(), e);
            }
            if (!bridge.done()) return;
            if (bridge.failure() != null) throw failure(bridge.failure(), endpoint, bridge.takeOutput());
            transport = bridge.result();
        }

        @Override
        public void offer(byte[] in) throws IOException {
            bridge.offer(DtlsRecords.split(in));
            if (transport == null) settle();
            if (transport != null) readApplicationData();
        }

        /** After the handshake: decrypt what was offered (BC drops what it cannot use). */
        private void readApplicationData() throws TlsFailure {
            try {
                byte[] buf = new byte[transport.getReceiveLimit()];
                while (true) {
                    int n = transport.receive(buf, 0, buf.length, 1); // our transport never blocks now
                    if (n > 0) appIn.write(buf, 0, n);
                    else if (n < 0 && bridge.inboxEmpty()) return;
                }
            } catch (IOException | RuntimeException e) {
                throw failure(e, endpoint, bridge.takeOutput());
            }
        }

        @Override
        public byte[] takeOutput() {
            return bridge.takeOutput();
        }

        @Override
        public boolean handshakeComplete() {
            return transport != null;
        }

        @Override
        public byte[] takeApplicationData() {
            byte[] data = appIn.toByteArray();
            appIn.reset();
            return data;
        }

        @Override
        public void writeApplicationData(byte[] data) throws IOException {
            if (transport == null) throw new IOException("DTLS handshake not complete");
            try {
                int limit = transport.getSendLimit();
                for (int off = 0; off < data.length; off += limit) {
                    transport.send(data, off, Math.min(limit, data.length - off));
                }
            } catch (IOException | RuntimeException e) {
                throw failure(e, endpoint, bridge.takeOutput());
            }
        }

        @Override
        public byte[] exportKeyingMaterial(String label, byte[] context, int length) throws IOException {
            return exported(endpoint, label, length);
        }

        @Override
        public String describe() {
            return BcPeer.describe(endpoint);
        }

        @Override
        public void close() {
            bridge.close(); // first: close_notify below goes nowhere, a waiting handshake thread ends
            if (transport != null) {
                try {
                    transport.close();
                } catch (IOException | RuntimeException ignored) {
                    // already failed or closed
                }
            }
        }
    }

    // -----------------------------------------------------------------------

    private static ProtocolVersion[] versions(TestCase tc) {
        if (tc.dtls) return ProtocolVersion.DTLSv12.only();
        if (tc.minVersion.equals(tc.maxVersion)) {
            return (tc.minVersion.equals(TestCase.TLS13) ? ProtocolVersion.TLSv13 : ProtocolVersion.TLSv12).only();
        }
        return ProtocolVersion.TLSv13.downTo(ProtocolVersion.TLSv12);
    }

    private static int[] suites(TestCase tc) {
        if (tc.dtls) return DTLS_SUITES.clone();
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
        private volatile short alertReceived = -1;

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

        @Override
        public short alertReceived() {
            return alertReceived;
        }

        @Override
        public void notifyAlertReceived(short alertLevel, short alertDescription) {
            super.notifyAlertReceived(alertLevel, alertDescription);
            if (alertLevel == AlertLevel.fatal) alertReceived = alertDescription;
        }
    }

    private final class Server extends DefaultTlsServer implements Endpoint {
        private final TestCase tc;
        private final Certs certs;
        private volatile boolean done;
        private volatile Object exported;
        private volatile short alertReceived = -1;

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

        @Override
        public short alertReceived() {
            return alertReceived;
        }

        @Override
        public void notifyAlertReceived(short alertLevel, short alertDescription) {
            super.notifyAlertReceived(alertLevel, alertDescription);
            if (alertLevel == AlertLevel.fatal) alertReceived = alertDescription;
        }
    }
}
