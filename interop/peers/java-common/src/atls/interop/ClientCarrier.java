package atls.interop;

import java.io.IOException;
import java.io.InputStream;
import java.net.InetSocketAddress;
import java.net.ProxySelector;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/** The client role: one ATLS exchange over java.net.http, with the contract's retries. */
final class ClientCarrier {
    private static final long BUDGET_MS = 18_000; // the contract allows 20 s; keep a margin
    private static final long REQUEST_MS = 5_000;
    private static final int MAX_RETRIES = 2;
    private static final int MAX_ANSWER = 256 * 1024;
    private static final Pattern COOKIE = Pattern.compile("^\\s*atls_session=([^;]*)");
    private static final Pattern STATUS = Pattern.compile("^HTTP/1\\.[01] (\\d{3})");

    /** A carrier failure (reset, no answer, 502-504): the only kind retried. */
    static final class CarrierFailure extends IOException {
        CarrierFailure(String message, Throwable cause) {
            super(message, cause);
        }
    }

    private final Stack stack;
    private final TestCase tc;
    private final Certs certs;
    private final HttpClient http;
    private final URI uri;
    private final long deadline = System.currentTimeMillis() + BUDGET_MS;
    private String cookie;

    ClientCarrier(Stack stack, TestCase tc, Certs certs) throws IOException {
        this.stack = stack;
        this.tc = tc;
        this.certs = certs;
        String base = System.getenv("SERVER_URL");
        if (base == null || base.isEmpty()) throw new IOException("SERVER_URL is not set");
        this.uri = URI.create(base.replaceAll("/+$", "") + tc.path());
        HttpClient.Builder builder = HttpClient.newBuilder()
            .version(HttpClient.Version.HTTP_1_1) // no h2c upgrade attempt on plain http
            .connectTimeout(Duration.ofMillis(REQUEST_MS));
        String proxy = System.getenv("PROXY");
        if (proxy != null && !proxy.isEmpty()) {
            URI p = URI.create(proxy);
            // plain-http targets go to the proxy in absolute form
            builder.proxy(ProxySelector.of(new InetSocketAddress(p.getHost(), p.getPort() < 0 ? 80 : p.getPort())));
        }
        this.http = builder.build();
    }

    int run() {
        for (int attempt = 0; ; attempt++) {
            cookie = null; // a fresh handshake starts a new session
            try {
                attempt();
                return 0;
            } catch (CarrierFailure e) {
                if (attempt < MAX_RETRIES && System.currentTimeMillis() < deadline) {
                    Peer.log("attempt " + (attempt + 1) + ": carrier: " + e.getMessage() + "; starting a fresh handshake");
                    continue;
                }
                Peer.log("failed: carrier: " + e.getMessage());
                return 1;
            } catch (Exception e) {
                Peer.log("failed: " + e.getMessage());
                return 1;
            }
        }
    }

    private void attempt() throws Exception {
        TlsEngine engine = stack.newClient(tc, certs);
        try {
            byte[] out = engine.takeOutput();
            while (!engine.handshakeComplete()) {
                if (out.length == 0) throw new IOException("handshake stalled: TLS waits for data but has nothing to send");
                byte[] answer = post(out);
                if (answer.length == 0) throw new IOException("the server answered a handshake flight with an empty body");
                if (tc.dtls && DtlsRecords.isHelloVerifyRequest(answer)) {
                    Peer.log("HelloVerifyRequest" + (cookie == null ? " (no session cookie)" : "")
                        + ": posting the ClientHello again with the DTLS cookie");
                }
                engine.offer(answer);
                out = engine.takeOutput();
            }
            // TLS 1.3: our Finished is still to go; the server accepts it
            // (tickets or an empty body) or refuses it (e.g. certificate_required)
            if (out.length > 0) engine.offer(post(out));
            Peer.writeExport(engine, tc);
            System.out.println("handshake ok: " + engine.describe());
            if (!tc.records) return;
            engine.takeApplicationData();
            byte[] answer;
            for (int sent = 1; ; sent++) {
                engine.writeApplicationData(Peer.INNER_REQUEST.getBytes(StandardCharsets.US_ASCII));
                answer = post(engine.takeOutput());
                // DTLS: an empty answer means the records were dropped unserved;
                // send the request again in fresh records, at most twice
                if (answer.length > 0 || !tc.dtls || sent > 2) break;
                Peer.log("inner request dropped unserved (empty answer): sending it again");
            }
            engine.offer(answer);
            String text = new String(engine.takeApplicationData(), StandardCharsets.ISO_8859_1);
            Matcher m = STATUS.matcher(text);
            if (!m.find()) throw new IOException("inner response is not HTTP/1.1: " + abbreviate(text));
            int split = text.indexOf("\r\n\r\n");
            System.out.println("inner response: " + text.substring(0, text.indexOf("\r\n")) + " "
                + (split < 0 ? "" : abbreviate(text.substring(split + 4))));
            if (!m.group(1).equals("200")) throw new IOException("inner status " + m.group(1));
        } finally {
            engine.close();
        }
    }

    /** POST one flight; returns the peer's answer body. */
    private byte[] post(byte[] body) throws IOException, InterruptedException {
        long timeout = Math.min(REQUEST_MS, deadline - System.currentTimeMillis());
        if (timeout <= 0) throw new IOException("out of time (20 s budget)");
        HttpRequest.Builder req = HttpRequest.newBuilder(uri)
            .timeout(Duration.ofMillis(timeout))
            .header("Content-Type", tc.mediaType())
            .header("Accept", tc.mediaType())
            .POST(HttpRequest.BodyPublishers.ofByteArray(body));
        if (cookie != null) req.header("Cookie", "atls_session=" + cookie);
        HttpResponse<InputStream> resp;
        byte[] data;
        try {
            resp = http.send(req.build(), HttpResponse.BodyHandlers.ofInputStream());
            try (InputStream in = resp.body()) {
                data = in.readNBytes(MAX_ANSWER + 1);
            }
        } catch (IOException e) {
            throw new CarrierFailure(String.valueOf(e.getMessage() != null ? e.getMessage() : e), e);
        }
        if (data.length > MAX_ANSWER) throw new IOException("answer larger than " + MAX_ANSWER + " bytes");
        for (String c : resp.headers().allValues("set-cookie")) {
            Matcher m = COOKIE.matcher(c);
            if (m.find()) cookie = m.group(1);
        }
        int status = resp.statusCode();
        String type = resp.headers().firstValue("content-type").orElse("");
        if (status == 200 && Peer.bareMediaType(type).equals(tc.mediaType())) return data;
        if (status == 200) throw new IOException("200 with Content-Type " + type);
        if (List.of(502, 503, 504).contains(status)) throw new CarrierFailure("HTTP " + status, null);
        throw new IOException("refused: HTTP " + status + " " + type + ": "
            + abbreviate(new String(data, StandardCharsets.UTF_8).trim()));
    }

    private static String abbreviate(String s) {
        return s.length() > 300 ? s.substring(0, 300) + "..." : s;
    }
}
