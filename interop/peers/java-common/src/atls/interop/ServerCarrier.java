package atls.interop;

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.security.SecureRandom;
import java.util.Base64;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/** The server role: sessions named by cookie over com.sun.net.httpserver. */
final class ServerCarrier {
    private static final int MAX_FLIGHT = 64 * 1024;
    private static final int MAX_SESSIONS = 512;
    private static final long IDLE_MS = 60_000;
    private static final long HELLO_MS = 20_000; // a client answers a HelloVerifyRequest within its 20 s
    private static final Pattern COOKIE = Pattern.compile("(?:^|;\\s*)atls_session=([^;]*)");

    /** One ATLS session: a TLS engine fed one carrier message at a time. */
    private static final class Session {
        final TlsEngine engine;
        final StringBuilder inner = new StringBuilder(); // records mode: request bytes so far
        volatile long lastUsed = System.currentTimeMillis();
        boolean exported;

        Session(TlsEngine engine) {
            this.engine = engine;
        }
    }

    private final Stack stack;
    private final TestCase tc;
    private final Certs certs;
    private final Map<String, Session> sessions = new ConcurrentHashMap<>();
    // DTLS: engines that sent a HelloVerifyRequest, by client random, for the second
    // ClientHello (no session cookie). JSSE needs it: its cookie exchange is stateful
    // (a fresh SSLEngine ignores a ClientHello with message_seq 1).
    private final Map<String, Session> helloVerified = new ConcurrentHashMap<>();
    private final SecureRandom random = new SecureRandom();
    private final String innerResponse;

    ServerCarrier(Stack stack, TestCase tc, Certs certs) throws IOException {
        if (!certs.hasIdentity()) throw new IOException("CERTS has no cert.der/key.der for the server");
        this.stack = stack;
        this.tc = tc;
        this.certs = certs;
        String body = "hello from " + stack.name();
        this.innerResponse = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + body.length()
            + "\r\n\r\n" + body;
    }

    int run() throws Exception {
        // bound slow or stuck carrier requests (seconds; read when the server is created)
        System.setProperty("sun.net.httpserver.maxReqTime", "10");
        System.setProperty("sun.net.httpserver.maxRspTime", "10");
        System.setProperty("sun.net.httpserver.maxReqHeaders", "100");
        String host = System.getenv().getOrDefault("HOST", "127.0.0.1");
        int port = Integer.parseInt(System.getenv().getOrDefault("PORT", "0"));
        HttpServer server = HttpServer.create(new InetSocketAddress(host, port), 64);
        ExecutorService pool = Executors.newFixedThreadPool(4);
        server.setExecutor(pool);
        server.createContext("/", this::handle);
        // The contract wants exit 0 on SIGTERM; a JVM shutting down on a signal
        // exits 143, but halt() from a shutdown hook sets the status.
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            server.stop(0);
            Runtime.getRuntime().halt(0);
        }));
        server.start();
        Peer.log("listening on " + host + ":" + server.getAddress().getPort() + " (" + tc.name + ")");
        while (true) {
            Thread.sleep(5_000);
            expire();
        }
    }

    /** End abandoned sessions. */
    private void expire() {
        long now = System.currentTimeMillis();
        sessions.entrySet().removeIf(e -> {
            boolean old = now - e.getValue().lastUsed > IDLE_MS;
            if (old) e.getValue().engine.close();
            return old;
        });
        helloVerified.entrySet().removeIf(e -> {
            boolean old = now - e.getValue().lastUsed > HELLO_MS;
            if (old) e.getValue().engine.close();
            return old;
        });
    }

    private void handle(HttpExchange ex) throws IOException {
        try (ex) {
            String path = ex.getRequestURI().getPath();
            if (!path.equals("/.well-known/atls") && !path.equals("/atls")) {
                problem(ex, 404, "not-found", "Not Found", "no such resource", null);
                return;
            }
            if (!ex.getRequestMethod().equals("POST")) {
                ex.getResponseHeaders().set("Allow", "POST");
                problem(ex, 405, "method-not-allowed", "Method Not Allowed", "ATLS messages are POSTs", null);
                return;
            }
            String media = Peer.bareMediaType(ex.getRequestHeaders().getFirst("Content-Type"));
            if (!media.equals("application/atls") && !media.equals("application/atls+octet-stream")) {
                problem(ex, 415, "unsupported-media-type", "Unsupported Media Type", "expected application/atls", null);
                return;
            }
            byte[] body;
            try (InputStream in = ex.getRequestBody()) {
                body = in.readNBytes(MAX_FLIGHT + 1);
            }
            if (body.length > MAX_FLIGHT) {
                problem(ex, 413, "flight-too-large", "Flight Too Large", "flight larger than " + MAX_FLIGHT + " bytes", null);
                return;
            }
            String token = null;
            String cookies = ex.getRequestHeaders().getFirst("Cookie");
            if (cookies != null) {
                Matcher m = COOKIE.matcher(cookies);
                if (m.find()) token = m.group(1);
            }
            Session s;
            boolean isNew = token == null;
            String hello = isNew && tc.dtls ? DtlsRecords.clientRandom(body) : null;
            if (isNew) {
                if (body.length == 0) {
                    problem(ex, 400, "session", "No ClientHello", "a POST without the session cookie must carry a ClientHello", null);
                    return;
                }
                if (sessions.size() + helloVerified.size() >= MAX_SESSIONS) {
                    problem(ex, 503, "session", "Too Many Sessions", "try again later", null);
                    return;
                }
                byte[] raw = new byte[16];
                random.nextBytes(raw);
                token = HexFormat.of().formatHex(raw);
                Session verified = hello == null ? null : helloVerified.remove(hello);
                // kept once it answered (below)
                s = verified != null ? verified : new Session(stack.newServer(tc, certs));
            } else {
                s = sessions.get(token);
                if (s == null) {
                    problem(ex, 400, "session", "No Such Session", "unknown or expired atls_session", null);
                    return;
                }
            }
            byte[] out;
            synchronized (s) { // one message at a time per session
                s.lastUsed = System.currentTimeMillis();
                try {
                    out = exchange(s, body);
                } catch (TlsFailure f) {
                    sessions.remove(token);
                    s.engine.close();
                    Peer.log("session " + token.substring(0, 8) + ": " + f.getMessage());
                    Map<String, Object> extra = new LinkedHashMap<>();
                    if (f.alert != null) extra.put("tls_alert", f.alert);
                    if (f.flight.length > 0) extra.put("tls_flight", Base64.getEncoder().encodeToString(f.flight));
                    problem(ex, 400, "tls-alert", "TLS rejected the flight", String.valueOf(f.getMessage()), extra);
                    return;
                } catch (IOException | RuntimeException e) { // the stack failed otherwise (e.g. timed out)
                    sessions.remove(token);
                    s.engine.close();
                    throw e;
                }
            }
            if (isNew && tc.dtls && out.length == 0) { // DTLS drops what it cannot use, silently
                s.engine.close();
                problem(ex, 400, "session", "No ClientHello", "the first flight held no usable DTLS ClientHello", null);
                return;
            }
            if (isNew && tc.dtls && DtlsRecords.isHelloVerifyRequest(out)) {
                // RFC 6347 4.2.1: no session yet (no Set-Cookie); the second ClientHello
                // comes without a session cookie and goes to the engine that asked for it
                if (hello != null && helloVerified.size() < MAX_SESSIONS) {
                    helloVerified.put(hello, s);
                } else {
                    s.engine.close();
                }
                Peer.log("HelloVerifyRequest sent; no session cookie");
            } else if (isNew) {
                sessions.put(token, s);
                ex.getResponseHeaders().set("Set-Cookie", "atls_session=" + token + "; Path=/");
            }
            ex.getResponseHeaders().set("Content-Type", media); // answer in the form we were asked in
            ex.sendResponseHeaders(200, out.length == 0 ? -1 : out.length);
            if (out.length > 0) {
                try (OutputStream os = ex.getResponseBody()) {
                    os.write(out);
                }
            }
        } catch (Exception e) {
            Peer.log("handler: " + e);
            try {
                problem(ex, 500, "internal", "Internal Error", String.valueOf(e.getMessage()), null);
            } catch (IOException | RuntimeException ignored) {
                // headers already sent: nothing more to say
            }
        }
    }

    /** Feed one flight; after the handshake, answer records-mode requests; return what TLS wrote. */
    private byte[] exchange(Session s, byte[] body) throws IOException {
        s.engine.offer(body);
        if (s.engine.handshakeComplete()) {
            if (!s.exported) {
                s.exported = true;
                Peer.log("handshake ok: " + s.engine.describe());
                try {
                    Peer.writeExport(s.engine, tc);
                } catch (IOException | RuntimeException e) {
                    Peer.log("export: " + e.getMessage());
                }
            }
            byte[] data = s.engine.takeApplicationData();
            if (data.length > 0) answerInner(s, data);
        }
        return s.engine.takeOutput();
    }

    /** Records mode: answer each complete inner HTTP/1.1 request with a fixed response. */
    private void answerInner(Session s, byte[] data) throws IOException {
        s.inner.append(new String(data, StandardCharsets.ISO_8859_1));
        if (s.inner.length() > MAX_FLIGHT) throw new TlsFailure("inner request too large", null, null, null);
        int end;
        while ((end = s.inner.indexOf("\r\n\r\n")) >= 0) {
            String head = s.inner.substring(0, end);
            Matcher m = Pattern.compile("\r\ncontent-length:\\s*(\\d{1,6})", Pattern.CASE_INSENSITIVE).matcher(head);
            int length = m.find() ? Integer.parseInt(m.group(1)) : 0;
            if (s.inner.length() < end + 4 + length) break;
            s.inner.delete(0, end + 4 + length);
            Peer.log("inner request: " + head.split("\r\n", 2)[0]);
            s.engine.writeApplicationData(innerResponse.getBytes(StandardCharsets.ISO_8859_1));
        }
    }

    private static void problem(HttpExchange ex, int status, String slug, String title, String detail,
                                Map<String, Object> extra) throws IOException {
        StringBuilder json = new StringBuilder();
        json.append("{\"type\": ").append(quote("urn:atls-testbed:problem:" + slug))
            .append(", \"title\": ").append(quote(title))
            .append(", \"status\": ").append(status)
            .append(", \"detail\": ").append(quote(detail));
        if (extra != null) {
            for (Map.Entry<String, Object> e : extra.entrySet()) {
                json.append(", ").append(quote(e.getKey())).append(": ").append(quote(String.valueOf(e.getValue())));
            }
        }
        byte[] bytes = json.append("}").toString().getBytes(StandardCharsets.UTF_8);
        ex.getResponseHeaders().set("Content-Type", "application/problem+json");
        ex.sendResponseHeaders(status, bytes.length);
        try (OutputStream os = ex.getResponseBody()) {
            os.write(bytes);
        }
    }

    private static String quote(String s) {
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') b.append('\\').append(c);
            else if (c < 0x20) b.append(String.format("\\u%04x", (int) c));
            else b.append(c);
        }
        return b.append('"').toString();
    }
}
