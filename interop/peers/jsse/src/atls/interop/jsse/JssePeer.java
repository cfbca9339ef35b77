package atls.interop.jsse;

import atls.interop.Certs;
import atls.interop.DtlsRecords;
import atls.interop.Peer;
import atls.interop.Stack;
import atls.interop.TestCase;
import atls.interop.TlsEngine;
import atls.interop.TlsFailure;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.security.KeyStore;
import java.security.cert.Certificate;
import java.util.ArrayDeque;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SNIHostName;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLEngine;
import javax.net.ssl.SSLEngineResult;
import javax.net.ssl.SSLEngineResult.HandshakeStatus;
import javax.net.ssl.SSLException;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.TrustManagerFactory;

/**
 * Java 17 JSSE peer: SSLEngine wrap/unwrap over byte buffers, as in the
 * draft-00 Appendix B.2 proof of concept. JDK 17 has no keying material
 * exporter, so exporter test cases exit 127 and EXPORT_FILE is never written.
 * dtls12: a "DTLS" SSLContext's SSLEngine, fed one record (datagram) per
 * unwrap; its server always answers a ClientHello without a valid cookie with
 * a HelloVerifyRequest (JSSE has no switch for that), keyed by the context's
 * cookie secret, so one SSLContext serves every session of the process.
 */
public final class JssePeer implements Stack {
    private static final char[] PASSWORD = "atls".toCharArray();
    private static final String DTLS12 = "DTLSv1.2";

    // one DTLS context for the whole process: a server's HelloVerifyRequest cookies
    // are made and checked with the context's secret (TLS: a fresh context per engine)
    private SSLContext dtlsContext;

    public static void main(String[] args) {
        Peer.main(new JssePeer());
    }

    @Override
    public String name() {
        return "jsse";
    }

    @Override
    public String unsupported(TestCase tc, boolean client) {
        if (tc.exporterCase) {
            return "JDK 17 JSSE has no keying material exporter (no RFC 5705/8446 export in javax.net.ssl SSLSession/ExtendedSSLSession)";
        }
        return null;
    }

    private synchronized SSLContext context(Certs certs, boolean dtls) throws Exception {
        if (!dtls) return newContext(certs, "TLS");
        if (dtlsContext == null) dtlsContext = newContext(certs, "DTLS");
        return dtlsContext;
    }

    /** An SSLContext holding CERTS: our identity (if any) and the one trust anchor. */
    private static SSLContext newContext(Certs certs, String protocol) throws Exception {
        KeyStore trust = KeyStore.getInstance("PKCS12");
        trust.load(null, null);
        trust.setCertificateEntry("ca", certs.ca);
        TrustManagerFactory tmf = TrustManagerFactory.getInstance("PKIX");
        tmf.init(trust);
        KeyManagerFactory kmf = null;
        if (certs.hasIdentity()) {
            KeyStore keys = KeyStore.getInstance("PKCS12");
            keys.load(null, null);
            keys.setKeyEntry("id", certs.privateKey(), PASSWORD, new Certificate[] {certs.cert});
            kmf = KeyManagerFactory.getInstance("PKIX");
            kmf.init(keys, PASSWORD);
        }
        SSLContext ctx = SSLContext.getInstance(protocol);
        ctx.init(kmf == null ? null : kmf.getKeyManagers(), tmf.getTrustManagers(), null);
        return ctx;
    }

    private static void configure(SSLParameters p, TestCase tc) {
        if (tc.dtls) {
            p.setProtocols(new String[] {DTLS12});
            p.setMaximumPacketSize(DtlsRecords.MTU); // fragment handshake messages to the contract's MTU
            p.setEnableRetransmissions(false);       // HTTP answers every flight
            return;
        }
        p.setProtocols(tc.minVersion.equals(tc.maxVersion)
            ? new String[] {tc.minVersion} : new String[] {TestCase.TLS13, TestCase.TLS12});
        if (tc.chacha) p.setCipherSuites(new String[] {TestCase.CHACHA});
    }

    @Override
    public TlsEngine newClient(TestCase tc, Certs certs) throws Exception {
        SSLEngine engine = context(certs, tc.dtls).createSSLEngine(certs.serverName, 443);
        engine.setUseClientMode(true);
        SSLParameters p = engine.getSSLParameters();
        configure(p, tc);
        p.setEndpointIdentificationAlgorithm("HTTPS"); // check the name in server-name
        if (certs.serverName != null && !certs.serverName.matches("[0-9.:]+")) {
            p.setServerNames(List.of(new SNIHostName(certs.serverName)));
        }
        engine.setSSLParameters(p);
        Engine e = new Engine(engine, tc.dtls);
        e.start();
        return e;
    }

    @Override
    public TlsEngine newServer(TestCase tc, Certs certs) throws Exception {
        SSLEngine engine = context(certs, tc.dtls).createSSLEngine();
        engine.setUseClientMode(false);
        SSLParameters p = engine.getSSLParameters();
        configure(p, tc);
        p.setNeedClientAuth(true); // every test case is mutual
        engine.setSSLParameters(p);
        Engine e = new Engine(engine, tc.dtls);
        e.start();
        return e;
    }

    /** Drives one SSLEngine: bytes in from the carrier, records out to it. */
    private static final class Engine implements TlsEngine {
        // JSSE names the alert as "(name) why" (ours) or "Received fatal alert: name" (theirs)
        private static final Pattern ALERT = Pattern.compile("^\\(([a-z_]+)\\)|alert: ([a-z_]+)");
        private final SSLEngine engine;
        private final boolean datagram;           // DTLS: one record per unwrap, from datagrams
        private final ArrayDeque<ByteBuffer> datagrams = new ArrayDeque<>();
        private ByteBuffer netIn;                 // TLS: carrier bytes not yet unwrapped (write mode)
        private final ByteArrayOutputStream netOut = new ByteArrayOutputStream();
        private final ByteArrayOutputStream appIn = new ByteArrayOutputStream();
        private boolean finished;

        Engine(SSLEngine engine, boolean datagram) {
            this.engine = engine;
            this.datagram = datagram;
            this.netIn = ByteBuffer.allocate(engine.getSession().getPacketBufferSize());
        }

        void start() throws TlsFailure {
            guard(() -> {
                engine.beginHandshake();
                pump();
            });
        }

        interface Step {
            void run() throws IOException;
        }

        /** Run a step; on failure collect the alert JSSE wants sent, and report it. */
        private void guard(Step step) throws TlsFailure {
            try {
                step.run();
            } catch (SSLException e) {
                try { // JSSE queues its fatal alert: wrap it out
                    for (int i = 0; i < 4 && !engine.isOutboundDone(); i++) wrap(ByteBuffer.allocate(0));
                } catch (IOException | RuntimeException ignored) {
                    // the engine is unusable now; the alert is best effort
                }
                String msg = e.getMessage() == null ? e.toString() : e.getMessage();
                Matcher m = ALERT.matcher(msg);
                String alert = m.find() ? (m.group(1) != null ? m.group(1) : m.group(2)) : null;
                throw new TlsFailure("TLS: " + msg, alert, take(netOut), e);
            } catch (IOException | RuntimeException e) {
                throw new TlsFailure("TLS: " + e, null, take(netOut), e);
            }
        }

        private static byte[] take(ByteArrayOutputStream b) {
            byte[] out = b.toByteArray();
            b.reset();
            return out;
        }

        /** Advance the engine as far as the bytes it has allow. */
        private void pump() throws IOException {
            for (int guard = 0; guard < 1000; guard++) {
                HandshakeStatus hs = engine.getHandshakeStatus();
                if (hs == HandshakeStatus.NEED_TASK) {
                    Runnable task;
                    while ((task = engine.getDelegatedTask()) != null) task.run();
                } else if (hs == HandshakeStatus.NEED_WRAP) {
                    if (wrap(ByteBuffer.allocate(0)).bytesProduced() == 0 && engine.isOutboundDone()) return;
                } else if (datagram && (!datagrams.isEmpty() || hs == HandshakeStatus.NEED_UNWRAP_AGAIN)) {
                    unwrapDatagram(hs);
                } else if (!datagram && (netIn.position() > 0 || hs == HandshakeStatus.NEED_UNWRAP_AGAIN)) {
                    SSLEngineResult r = unwrap();
                    if (r.getStatus() == SSLEngineResult.Status.BUFFER_UNDERFLOW) return; // wait for more bytes
                    if (r.getStatus() == SSLEngineResult.Status.CLOSED) return;
                    if (r.bytesConsumed() == 0 && r.bytesProduced() == 0
                        && r.getHandshakeStatus() == hs && hs != HandshakeStatus.NEED_UNWRAP_AGAIN) return;
                } else {
                    return; // nothing to do until the carrier brings bytes
                }
            }
            throw new IOException("SSLEngine made no progress");
        }

        private SSLEngineResult wrap(ByteBuffer src) throws IOException {
            ByteBuffer out = ByteBuffer.allocate(engine.getSession().getPacketBufferSize());
            while (true) {
                SSLEngineResult r = engine.wrap(src, out);
                if (r.getStatus() == SSLEngineResult.Status.BUFFER_OVERFLOW) {
                    out = ByteBuffer.allocate(out.capacity() * 2);
                    continue;
                }
                note(r);
                netOut.write(out.array(), 0, out.position());
                return r;
            }
        }

        private SSLEngineResult unwrap() throws IOException {
            ByteBuffer app = ByteBuffer.allocate(engine.getSession().getApplicationBufferSize());
            netIn.flip();
            try {
                while (true) {
                    SSLEngineResult r = engine.unwrap(netIn, app);
                    if (r.getStatus() == SSLEngineResult.Status.BUFFER_OVERFLOW) {
                        app = ByteBuffer.allocate(app.capacity() * 2);
                        continue;
                    }
                    note(r);
                    appIn.write(app.array(), 0, app.position());
                    return r;
                }
            } finally {
                netIn.compact();
            }
        }

        /**
         * DTLS: unwrap the next datagram (one record), or with NEED_UNWRAP_AGAIN
         * let the engine take the messages it buffered. A record the engine
         * cannot use is dropped (DTLS drops, it does not fail), so every call
         * consumes one datagram or makes progress.
         */
        private void unwrapDatagram(HandshakeStatus hs) throws IOException {
            boolean again = hs == HandshakeStatus.NEED_UNWRAP_AGAIN;
            ByteBuffer src = again ? ByteBuffer.allocate(0) : datagrams.peek();
            ByteBuffer app = ByteBuffer.allocate(engine.getSession().getApplicationBufferSize());
            while (true) {
                SSLEngineResult r = engine.unwrap(src, app);
                if (r.getStatus() == SSLEngineResult.Status.BUFFER_OVERFLOW) {
                    app = ByteBuffer.allocate(app.capacity() * 2);
                    continue;
                }
                note(r);
                appIn.write(app.array(), 0, app.position());
                if (!again && (!src.hasRemaining() || r.bytesConsumed() == 0)) datagrams.poll();
                return;
            }
        }

        private void note(SSLEngineResult r) {
            if (r.getHandshakeStatus() == HandshakeStatus.FINISHED) finished = true;
        }

        @Override
        public void offer(byte[] in) throws IOException {
            if (datagram) {
                for (byte[] record : DtlsRecords.split(in)) datagrams.add(ByteBuffer.wrap(record));
                guard(this::pump);
                return;
            }
            if (netIn.remaining() < in.length) { // grow: a flight may hold several records
                ByteBuffer bigger = ByteBuffer.allocate(netIn.position() + in.length);
                netIn.flip();
                bigger.put(netIn);
                netIn = bigger;
            }
            netIn.put(in);
            guard(this::pump);
        }

        @Override
        public byte[] takeOutput() {
            return take(netOut);
        }

        @Override
        public boolean handshakeComplete() {
            return finished;
        }

        @Override
        public byte[] takeApplicationData() {
            return take(appIn);
        }

        @Override
        public void writeApplicationData(byte[] data) throws IOException {
            ByteBuffer src = ByteBuffer.wrap(data);
            guard(() -> {
                while (src.hasRemaining()) wrap(src);
                pump();
            });
        }

        @Override
        public byte[] exportKeyingMaterial(String label, byte[] context, int length) {
            return null; // JDK 17 has no exporter API
        }

        @Override
        public String describe() {
            return engine.getSession().getProtocol() + " " + engine.getSession().getCipherSuite();
        }

        @Override
        public void close() {
            engine.closeOutbound();
        }
    }
}
