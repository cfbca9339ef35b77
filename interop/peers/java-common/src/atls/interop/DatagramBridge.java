package atls.interop;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InterruptedIOException;
import java.util.ArrayDeque;
import java.util.List;

/**
 * Drives a blocking datagram handshake (e.g. Bouncy Castle's
 * DTLSClientProtocol.connect / DTLSServerProtocol.accept over a
 * DatagramTransport) one carrier message at a time.
 *
 * <p>The handshake runs in its own daemon thread. The carrier thread
 * {@link #offer offers} the records of a body and {@link #awaitQuiet waits}
 * until the handshake has taken them all and blocks for more, or has ended;
 * what it sent meanwhile is the answer ({@link #takeOutput}). While the
 * handshake thread waits for a datagram it ignores the stack's retransmission
 * timer (HTTP is the reliability) but never longer than {@code idleMs}, and
 * {@link #close} wakes it at once: a session that fails or expires leaves no
 * thread behind. Records the stack sends again on its timer are dropped
 * ({@link DtlsRecords.Retransmissions}).
 *
 * <p>After the handshake the carrier thread itself uses the stack's
 * transport: {@link #receive} then never blocks (null: nothing left).
 */
public final class DatagramBridge<T> {
    /** The blocking handshake; its result (e.g. the DTLS transport) ends the thread. */
    public interface Handshake<T> {
        T run() throws Exception;
    }

    private final long idleMs;
    private final ArrayDeque<byte[]> inbox = new ArrayDeque<>();
    private final ByteArrayOutputStream outbox = new ByteArrayOutputStream();
    private final DtlsRecords.Retransmissions copies = new DtlsRecords.Retransmissions();
    private Thread thread;
    private int dropped; // retransmitted records
    private boolean waiting; // the handshake thread blocks in receive() with nothing to read
    private boolean done, closed;
    private T result;
    private Throwable failure;

    public DatagramBridge(long idleMs) {
        this.idleMs = idleMs;
    }

    public synchronized void start(String name, Handshake<T> handshake) {
        if (thread != null) throw new IllegalStateException("already started");
        thread = new Thread(() -> {
            T r = null;
            Throwable f = null;
            try {
                r = handshake.run();
            } catch (Throwable t) {
                f = t;
            }
            synchronized (this) {
                result = r;
                failure = f;
                done = true;
                notifyAll();
            }
        }, name);
        thread.setDaemon(true); // never keeps the JVM alive
        thread.start();
    }

    // --- the stack's side (its DatagramTransport) -----------------------------

    /**
     * The next datagram for the stack. In the handshake thread: blocks until the
     * carrier offers one (not for the stack's retransmission timer), at most
     * {@code idleMs}; after the handshake: the next one offered, or null.
     */
    public synchronized byte[] receive() throws IOException {
        if (Thread.currentThread() != thread) return inbox.poll();
        long end = System.currentTimeMillis() + idleMs;
        while (inbox.isEmpty()) {
            if (closed) throw new IOException("the ATLS session is closed");
            long left = end - System.currentTimeMillis();
            if (left <= 0) throw new IOException("no flight from the peer for " + idleMs / 1000 + " s");
            if (!waiting) {
                waiting = true;
                notifyAll(); // the carrier thread may take our answer now
            }
            try {
                wait(left);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new InterruptedIOException("interrupted waiting for a datagram");
            }
        }
        waiting = false;
        return inbox.poll();
    }

    /** One datagram (whole records) from the stack; retransmitted handshake records are dropped. */
    public synchronized void send(byte[] buf, int off, int len) {
        if (closed) return;
        int end = off + len;
        while (off < end) {
            int recordEnd = end - off < DtlsRecords.HEADER ? end
                : Math.min(end, off + DtlsRecords.HEADER + ((buf[off + 11] & 0xff) << 8 | (buf[off + 12] & 0xff)));
            byte[] record = java.util.Arrays.copyOfRange(buf, off, recordEnd);
            if (!copies.isCopy(record)) {
                outbox.write(record, 0, record.length);
            } else if (dropped++ == 0) {
                Peer.log("the DTLS stack sent records again on its retransmission timer; dropping the copies");
            }
            off = recordEnd;
        }
    }

    // --- the carrier's side -----------------------------------------------------

    /** Hand the stack the records of one body. */
    public synchronized void offer(List<byte[]> datagrams) {
        inbox.addAll(datagrams);
        if (!datagrams.isEmpty()) {
            waiting = false;
            notifyAll();
        }
    }

    /** Wait until the handshake took every datagram offered and blocks for more, or has ended. */
    public synchronized void awaitQuiet(long timeoutMs) throws IOException {
        long end = System.currentTimeMillis() + timeoutMs;
        while (!done && !(waiting && inbox.isEmpty())) {
            long left = end - System.currentTimeMillis();
            if (left <= 0) throw new IOException("the DTLS stack did not answer within " + timeoutMs / 1000 + " s");
            try {
                wait(left);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new InterruptedIOException("interrupted waiting for the DTLS stack");
            }
        }
    }

    /** Records the stack sent since the last call. */
    public synchronized byte[] takeOutput() {
        byte[] out = outbox.toByteArray();
        outbox.reset();
        return out;
    }

    public synchronized boolean inboxEmpty() {
        return inbox.isEmpty();
    }

    /** The handshake thread has ended (see {@link #result} and {@link #failure}). */
    public synchronized boolean done() {
        return done;
    }

    public synchronized T result() {
        return result;
    }

    public synchronized Throwable failure() {
        return failure;
    }

    /** End the session: a handshake thread waiting for a datagram fails at once. */
    public void close() {
        Thread t;
        synchronized (this) {
            closed = true;
            inbox.clear();
            notifyAll();
            t = thread;
        }
        if (t != null && t != Thread.currentThread()) {
            try {
                t.join(2_000); // it wakes and unwinds; bounded in case the stack is busy computing
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
    }
}
