package atls.interop;

import java.util.Map;

/** What one TESTCASE (interop/CONTRACT.md) asks of TLS and the carrier. */
public final class TestCase {
    public static final String TLS12 = "TLSv1.2", TLS13 = "TLSv1.3";
    public static final String CHACHA = "TLS_CHACHA20_POLY1305_SHA256";

    public final String name;
    public final String minVersion, maxVersion;
    public final boolean emptyContext, records, draft00, chacha, exporterCase;
    /** DTLS 1.2 records in the bodies (min/max then say TLS 1.2, the version DTLS 1.2 is built on). */
    public final boolean dtls;

    private TestCase(String name, String min, String max, boolean emptyContext, boolean records,
                     boolean draft00, boolean chacha, boolean exporterCase) {
        this(name, min, max, emptyContext, records, draft00, chacha, exporterCase, false);
    }

    private TestCase(String name, String min, String max, boolean emptyContext, boolean records,
                     boolean draft00, boolean chacha, boolean exporterCase, boolean dtls) {
        this.name = name;
        this.minVersion = min;
        this.maxVersion = max;
        this.emptyContext = emptyContext;
        this.records = records;
        this.draft00 = draft00;
        this.chacha = chacha;
        this.exporterCase = exporterCase;
        this.dtls = dtls;
    }

    private static TestCase of(String name, String min, String max) {
        return new TestCase(name, min, max, false, false, false, false, false);
    }

    private static final Map<String, TestCase> CASES = Map.ofEntries(
        Map.entry("handshake-tls13", of("handshake-tls13", TLS13, TLS13)),
        Map.entry("handshake-tls12", of("handshake-tls12", TLS12, TLS12)),
        Map.entry("records", new TestCase("records", TLS12, TLS13, false, true, false, false, false)),
        Map.entry("exporter", new TestCase("exporter", TLS13, TLS13, false, false, false, false, true)),
        Map.entry("exporter-empty-context",
            new TestCase("exporter-empty-context", TLS12, TLS12, true, false, false, false, true)),
        Map.entry("mutual-auth-missing", of("mutual-auth-missing", TLS12, TLS13)),
        Map.entry("wrong-anchor", of("wrong-anchor", TLS12, TLS13)),
        Map.entry("draft00", new TestCase("draft00", TLS12, TLS13, false, false, true, false, false)),
        Map.entry("proxy", of("proxy", TLS12, TLS13)),
        Map.entry("flight-loss", of("flight-loss", TLS12, TLS13)),
        Map.entry("corruption", of("corruption", TLS12, TLS13)),
        Map.entry("chacha20", new TestCase("chacha20", TLS13, TLS13, false, false, false, true, false)),
        // DTLS 1.2, mutual; then one inner request as in records
        Map.entry("dtls12", new TestCase("dtls12", TLS12, TLS12, false, true, false, false, false, true)));

    /** The named test case, or null when unknown. */
    public static TestCase named(String name) {
        return name == null ? null : CASES.get(name);
    }

    public boolean allows(String version) {
        return version.compareTo(minVersion) >= 0 && version.compareTo(maxVersion) <= 0;
    }

    public String path() {
        return draft00 ? "/atls" : "/.well-known/atls";
    }

    public String mediaType() {
        return draft00 ? "application/atls+octet-stream" : "application/atls";
    }
}
