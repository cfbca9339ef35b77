package main

import (
	"bytes"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// memConn is the net.Conn a TLS or DTLS stack runs over: writes collect into
// the next carrier body; reads are fed from carrier bodies. A Read with nothing
// buffered either parks the reading goroutine until the carrier feeds it
// (blocking mode: handshake, server loop) or, in non-blocking mode, returns a
// temporary net.Error, which crypto/tls passes up without poisoning the
// connection (so the caller can drain what arrived and come back later).
//
// Datagram mode (newDatagramConn, for DTLS): a fed body is cut into its DTLS
// records and each Read returns one record as one datagram (pion reads one
// datagram per call). Writes pass a flightTracker, which leaves out the
// copies pion's retransmission timer writes and signals on flights when a
// write completes a flight. pion's reader goroutine parks in Read as soon as
// it has read everything while its handshake goroutine may still be writing,
// so in this mode want only says "all input is read"; the carrier waits for
// flights to know what to send.
type memConn struct {
	mu          sync.Mutex
	in, out     bytes.Buffer
	inQ         [][]byte // datagram mode: fed records, oldest first
	nonBlocking bool
	closed      bool
	deadline    time.Time     // read deadline (pion aborts a parked Read with one)
	wake        chan struct{} // closed and replaced when deadline or closed change

	tracker *flightTracker // datagram mode only
	flights chan struct{}  // datagram mode: a write completed a flight (nil otherwise)

	want chan struct{} // a blocked Read asks the carrier for more bytes
	feed chan []byte   // the carrier answers
	dead chan struct{} // closed by kill: a parked Read returns EOF
	once sync.Once
}

func newMemConn() *memConn {
	return &memConn{want: make(chan struct{}), feed: make(chan []byte), dead: make(chan struct{}),
		wake: make(chan struct{})}
}

func newDatagramConn() *memConn {
	c := newMemConn()
	c.tracker = &flightTracker{}
	c.flights = make(chan struct{}, 1)
	return c
}

// kill ends the conversation: the TLS goroutine sees EOF instead of parking forever.
func (c *memConn) kill() { c.once.Do(func() { close(c.dead) }) }

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "no carrier data buffered" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

func (c *memConn) buffered() bool {
	if c.tracker != nil {
		return len(c.inQ) > 0
	}
	return c.in.Len() > 0
}

// add buffers carrier bytes (the caller holds mu).
func (c *memConn) add(b []byte) {
	if c.tracker == nil {
		c.in.Write(b)
		return
	}
	recs, err := splitRecords(b)
	used := 0
	for _, r := range recs {
		c.inQ = append(c.inQ, append([]byte(nil), r.raw...))
		used += len(r.raw)
	}
	if err != nil { // the rest is no record: one datagram, for DTLS to discard
		c.inQ = append(c.inQ, append([]byte(nil), b[used:]...))
	}
}

func (c *memConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	for !c.buffered() {
		if c.closed {
			c.mu.Unlock()
			return 0, io.EOF
		}
		if c.nonBlocking {
			c.mu.Unlock()
			return 0, wouldBlock{}
		}
		var expired <-chan time.Time
		var timer *time.Timer
		if !c.deadline.IsZero() {
			wait := time.Until(c.deadline)
			if wait <= 0 {
				c.mu.Unlock()
				return 0, os.ErrDeadlineExceeded
			}
			timer = time.NewTimer(wait)
			expired = timer.C
		}
		wake := c.wake
		c.mu.Unlock()
		var data []byte
		fed, ended := false, false
		select {
		case c.want <- struct{}{}:
			select {
			case data = <-c.feed:
				fed = true
			case <-c.dead:
				ended = true
			case <-wake:
			case <-expired:
			}
		case <-c.dead:
			ended = true
		case <-wake:
		case <-expired:
		}
		if timer != nil {
			timer.Stop()
		}
		c.mu.Lock()
		if ended {
			c.closed = true
		}
		if fed {
			c.add(data)
		}
	}
	defer c.mu.Unlock()
	if c.tracker == nil {
		return c.in.Read(p)
	}
	d := c.inQ[0]
	c.inQ = c.inQ[1:]
	return copy(p, d), nil // a longer datagram is cut, as UDP would
}

func (c *memConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, io.ErrClosedPipe
	}
	if c.tracker == nil {
		return c.out.Write(p)
	}
	keep, complete := c.tracker.add(p)
	c.out.Write(keep)
	if complete {
		select {
		case c.flights <- struct{}{}:
		default: // already signalled; the carrier takes everything at once
		}
	}
	return len(p), nil
}

// push buffers carrier bytes without waking anyone (non-blocking use).
func (c *memConn) push(b []byte) {
	c.mu.Lock()
	c.add(b)
	c.mu.Unlock()
}

// takeOut returns and clears what TLS wrote since the last call.
func (c *memConn) takeOut() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := append([]byte(nil), c.out.Bytes()...)
	c.out.Reset()
	return b
}

func (c *memConn) setNonBlocking() {
	c.mu.Lock()
	c.nonBlocking = true
	c.mu.Unlock()
}

// rouse wakes a parked Read to look at closed and deadline again (the caller holds mu).
func (c *memConn) rouse() {
	close(c.wake)
	c.wake = make(chan struct{})
}

func (c *memConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.rouse()
	c.mu.Unlock()
	return nil
}

type memAddr struct{}

func (memAddr) Network() string { return "atls" }
func (memAddr) String() string  { return "atls-carrier" }

func (c *memConn) LocalAddr() net.Addr  { return memAddr{} }
func (c *memConn) RemoteAddr() net.Addr { return memAddr{} }

// SetDeadline and SetReadDeadline bound a parked Read (pion's connctx aborts
// its reader this way); writes never block, so write deadlines do nothing.
func (c *memConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

func (c *memConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.rouse()
	c.mu.Unlock()
	return nil
}

func (c *memConn) SetWriteDeadline(t time.Time) error { return nil }

// flightStats reports, in datagram mode, the ServerHello this end wrote and
// how many retransmitted records were left out of the carrier bodies.
func (c *memConn) flightStats() (helloInfo, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tracker == nil {
		return helloInfo{}, 0
	}
	return c.tracker.hello, c.tracker.copies
}
