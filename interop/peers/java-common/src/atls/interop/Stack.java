package atls.interop;

/** A TLS stack that can play the contract's roles. */
public interface Stack {
    String name();

    /** Why this stack cannot run the test case in this role (exit 127), or null. */
    String unsupported(TestCase tc, boolean client);

    TlsEngine newClient(TestCase tc, Certs certs) throws Exception;

    TlsEngine newServer(TestCase tc, Certs certs) throws Exception;
}
