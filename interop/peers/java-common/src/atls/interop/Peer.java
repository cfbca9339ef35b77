package atls.interop;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.HexFormat;

/** Entry point shared by the Java peers: reads the contract's environment and runs a role. */
public final class Peer {
    public static final String EXPORTER_LABEL = "application-layer-tls";
    public static final int EXPORT_LENGTH = 32;
    public static final String INNER_REQUEST = "GET /api/hello HTTP/1.1\r\nHost: atls\r\nContent-Length: 0\r\n\r\n";

    private static String role = "?";
    private static String impl = "java";

    private Peer() {}

    public static void log(String message) {
        System.err.println("atls-" + impl + " " + role + ": " + message);
    }

    /** Run the role named by ROLE; never returns. */
    public static void main(Stack stack) {
        impl = stack.name();
        role = String.valueOf(System.getenv("ROLE"));
        String name = System.getenv("TESTCASE");
        TestCase tc = TestCase.named(name);
        if (tc == null) {
            unsupported("test case " + name + " is not implemented by the " + stack.name() + " peer");
        }
        boolean client = role.equals("client");
        if (!client && !role.equals("server")) {
            System.err.println("ROLE must be client or server, not " + role);
            System.exit(1);
        }
        String why = stack.unsupported(tc, client);
        if (why != null) unsupported(why);
        int code;
        try {
            Certs certs = Certs.load(System.getenv("CERTS"));
            code = client ? new ClientCarrier(stack, tc, certs).run() : new ServerCarrier(stack, tc, certs).run();
        } catch (Exception e) {
            log("failed: " + e);
            code = 1;
        }
        System.exit(code);
    }

    private static void unsupported(String why) {
        System.err.println(why); // one line: the runner shows it in the cell
        System.exit(127);
    }

    /** Write the exporter output after a successful handshake (atomically: retries overwrite). */
    public static void writeExport(TlsEngine engine, TestCase tc) throws IOException {
        String file = System.getenv("EXPORT_FILE");
        if (file == null || file.isEmpty()) return;
        byte[] context = tc.emptyContext ? new byte[0] : null; // null = absent
        byte[] ekm;
        try {
            ekm = engine.exportKeyingMaterial(EXPORTER_LABEL, context, EXPORT_LENGTH);
        } catch (IOException e) {
            // a stack may refuse by policy (BC: no TLS 1.2 export without
            // extended_master_secret); only exporter test cases fail for it
            if (tc.exporterCase) throw e;
            log("no export: " + e.getMessage());
            return;
        }
        if (ekm == null) { // the stack has no exporter at all (JDK 17 JSSE)
            log("no exporter API in this stack: EXPORT_FILE not written");
            return;
        }
        Path path = Path.of(file);
        Path tmp = Path.of(file + ".tmp");
        Files.writeString(tmp, HexFormat.of().formatHex(ekm) + "\n", StandardCharsets.US_ASCII);
        Files.move(tmp, path, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
    }

    public static String bareMediaType(String value) {
        if (value == null) return "";
        int semi = value.indexOf(';');
        return (semi < 0 ? value : value.substring(0, semi)).trim().toLowerCase(java.util.Locale.ROOT);
    }
}
