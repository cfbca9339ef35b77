package atls.interop;

import java.io.IOException;

/** TLS rejected a flight (ours or the peer's): never retried. */
public class TlsFailure extends IOException {
    public final String alert;  // alert name when known, else null
    public final byte[] flight; // records TLS wants sent (e.g. our alert), may be empty

    public TlsFailure(String message, String alert, byte[] flight, Throwable cause) {
        super(message, cause);
        this.alert = alert;
        this.flight = flight == null ? new byte[0] : flight;
    }
}
