package main

import (
	"bytes"
	"io"
	"net"
	"sync"
	"time"
)

// memConn is the net.Conn a tls.Conn runs over: writes collect into the next
// carrier body; reads are fed from carrier bodies. A Read with nothing
// buffered either parks the TLS goroutine until the carrier feeds it
// (blocking mode: handshake, server loop) or, in non-blocking mode, returns a
// temporary net.Error, which crypto/tls passes up without poisoning the
// connection (so the caller can drain what arrived and come back later).
type memConn struct {
	mu          sync.Mutex
	in, out     bytes.Buffer
	nonBlocking bool
	closed      bool

	want chan struct{} // a blocked Read asks the carrier for more bytes
	feed chan []byte   // the carrier answers
	dead chan struct{} // closed by kill: a parked Read returns EOF
	once sync.Once
}

func newMemConn() *memConn {
	return &memConn{want: make(chan struct{}), feed: make(chan []byte), dead: make(chan struct{})}
}

// kill ends the conversation: the TLS goroutine sees EOF instead of parking forever.
func (c *memConn) kill() { c.once.Do(func() { close(c.dead) }) }

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "no carrier data buffered" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

func (c *memConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	for c.in.Len() == 0 {
		if c.closed {
			c.mu.Unlock()
			return 0, io.EOF
		}
		if c.nonBlocking {
			c.mu.Unlock()
			return 0, wouldBlock{}
		}
		c.mu.Unlock()
		var data []byte
		ok := false
		select {
		case c.want <- struct{}{}:
			select {
			case data = <-c.feed:
				ok = true
			case <-c.dead:
			}
		case <-c.dead:
		}
		c.mu.Lock()
		if !ok {
			c.closed = true
			continue
		}
		c.in.Write(data)
	}
	defer c.mu.Unlock()
	return c.in.Read(p)
}

func (c *memConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, io.ErrClosedPipe
	}
	return c.out.Write(p)
}

// push buffers carrier bytes without waking anyone (non-blocking use).
func (c *memConn) push(b []byte) {
	c.mu.Lock()
	c.in.Write(b)
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

func (c *memConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	return nil
}

type memAddr struct{}

func (memAddr) Network() string { return "atls" }
func (memAddr) String() string  { return "atls-carrier" }

func (c *memConn) LocalAddr() net.Addr                { return memAddr{} }
func (c *memConn) RemoteAddr() net.Addr               { return memAddr{} }
func (c *memConn) SetDeadline(t time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(t time.Time) error { return nil }
