package atls.interop;

import java.io.IOException;

/** One TLS endpoint driven with bytes (no socket): what each Java stack implements. */
public interface TlsEngine {
    /** Process bytes from the peer. Throws {@link TlsFailure} when TLS rejects them. */
    void offer(byte[] in) throws IOException;

    /** Bytes TLS wants sent to the peer since the last call (possibly none). */
    byte[] takeOutput() throws IOException;

    boolean handshakeComplete();

    /** Application data decrypted so far, consumed by this call. */
    byte[] takeApplicationData() throws IOException;

    void writeApplicationData(byte[] data) throws IOException;

    /** RFC 5705 / 8446 exporter; a null context means "absent". Null when the stack has no exporter. */
    byte[] exportKeyingMaterial(String label, byte[] context, int length) throws IOException;

    /** Negotiated version and cipher suite, for logs. */
    String describe();

    /** Drop any state (the session is over). */
    void close();
}
