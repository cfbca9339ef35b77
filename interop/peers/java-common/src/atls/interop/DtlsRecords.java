package atls.interop;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.HexFormat;
import java.util.List;
import java.util.Set;

/**
 * DTLS 1.2 records in HTTP bodies (interop/CONTRACT.md, {@code dtls12}): a body
 * is whole records (13-byte headers, version 0xFEFD or 0xFEFF) of one flight.
 */
public final class DtlsRecords {
    public static final int HEADER = 13;
    /** The path MTU our stacks fragment handshake messages to (the contract allows up to 1,400; ours uses 1,024). */
    public static final int MTU = 1024;
    /** The largest record a peer may send: 2^14 plaintext plus 2,048 of expansion (RFC 6347 4.1). */
    public static final int MAX_RECORD = HEADER + (1 << 14) + 2048;

    private static final int CHANGE_CIPHER_SPEC = 20, HANDSHAKE = 22;
    private static final int CLIENT_HELLO = 1, HELLO_VERIFY_REQUEST = 3;

    private DtlsRecords() {}

    /** Split a body into its records, one datagram each; a body that is not whole DTLS records is a TLS failure. */
    public static List<byte[]> split(byte[] body) throws TlsFailure {
        List<byte[]> records = new ArrayList<>();
        int off = 0;
        while (off < body.length) {
            if (body.length - off < HEADER) {
                throw new TlsFailure("not DTLS records: " + (body.length - off) + " bytes after the last whole record",
                    null, null, null);
            }
            if ((body[off + 1] & 0xff) != 0xfe) {
                throw new TlsFailure(String.format("not a DTLS record at offset %d (version 0x%02x%02x)",
                    off, body[off + 1] & 0xff, body[off + 2] & 0xff), null, null, null);
            }
            int end = off + HEADER + u16(body, off + 11);
            if (end > body.length) {
                throw new TlsFailure("truncated DTLS record at offset " + off, null, null, null);
            }
            records.add(Arrays.copyOfRange(body, off, end));
            off = end;
        }
        return records;
    }

    /** The flight is a HelloVerifyRequest (RFC 6347 4.2.1): plaintext handshake records of type 3 only. */
    public static boolean isHelloVerifyRequest(byte[] flight) {
        List<byte[]> records;
        try {
            records = split(flight);
        } catch (TlsFailure e) {
            return false;
        }
        if (records.isEmpty()) return false;
        for (byte[] r : records) {
            if (r[0] != HANDSHAKE || epoch(r) != 0 || r.length <= HEADER || r[HEADER] != HELLO_VERIFY_REQUEST) {
                return false;
            }
        }
        return true;
    }

    /**
     * The client random of a body whose first record starts a ClientHello (hex),
     * else null. RFC 6347 4.2.1: the ClientHello after a HelloVerifyRequest
     * repeats the first one's random, so it names the exchange.
     */
    public static String clientRandom(byte[] body) {
        int random = HEADER + 12 + 2; // record header, handshake header, client_version
        if (body.length < random + 32 || body[0] != HANDSHAKE || (body[1] & 0xff) != 0xfe || epoch(body) != 0
            || body[HEADER] != CLIENT_HELLO || u24(body, HEADER + 6) != 0) {
            return null;
        }
        return HexFormat.of().formatHex(body, random, random + 32);
    }

    private static int u24(byte[] b, int off) {
        return (b[off] & 0xff) << 16 | u16(b, off + 1);
    }

    private static int u16(byte[] b, int off) {
        return (b[off] & 0xff) << 8 | (b[off + 1] & 0xff);
    }

    private static int epoch(byte[] record) {
        return u16(record, 3);
    }

    /**
     * Recognises a stack's retransmissions among the records it sends. Over
     * HTTP every flight is answered in the response, so a flight sent again on
     * a retransmission timer is only noise (the contract lets a stack resend;
     * the receiver's replay window drops the copies): a handshake fragment
     * already sent in epoch 0 (same message_seq and fragment range), a second
     * ChangeCipherSpec, or a second encrypted handshake record (the Finished:
     * DTLS 1.2 without renegotiation sends one per connection). Alerts and
     * application data always pass.
     */
    public static final class Retransmissions {
        private final Set<String> fragments = new HashSet<>();
        private boolean ccsSent, finishedSent;

        /** True when the record only repeats one sent before (the caller drops it). */
        public boolean isCopy(byte[] record) {
            if (record.length < HEADER) return false;
            int type = record[0];
            if (type == CHANGE_CIPHER_SPEC) {
                boolean copy = ccsSent;
                ccsSent = true;
                return copy;
            }
            if (type != HANDSHAKE) return false;
            if (epoch(record) != 0) {
                boolean copy = finishedSent;
                finishedSent = true;
                return copy;
            }
            if (record.length < HEADER + 12) return false;
            // message_seq (2), fragment_offset (3), fragment_length (3) of the handshake header
            return !fragments.add(HexFormat.of().formatHex(record, HEADER + 4, HEADER + 12));
        }
    }
}
