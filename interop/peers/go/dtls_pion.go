//go:build atls_pion

package main

// dtls12 with pion/dtls v2 (Debian golang-github-pion-dtls.v2-dev): the same
// HTTP carrier as TLS, over a datagram-mode memConn (one DTLS record per Read).

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/pion/dtls/v2"
)

const dtlsMissing = "" // built with pion

const (
	// pion fragments handshake messages to MTU bytes of body, so records stay
	// under 1,225 bytes (the contract allows a path MTU of up to 1,400).
	dtlsMTU = 1200
	// server: a handshake nobody finishes ends after this
	dtlsHandshakeTimeout = 30 * time.Second
	maxRecordBytes       = 1 << 16 // a record's length field is 16 bits
)

// dtlsConfig maps what baseConfig loaded from CERTS (certificate, CA pool,
// server name, keylog) onto pion's Config. pion offers the extended master
// secret by default (RequestExtendedMasterSecret) and keeps its own flight
// retransmission timer (FlightInterval, 1 s); the carrier leaves the copies out.
func dtlsConfig(cfg *tls.Config, server bool) *dtls.Config {
	d := &dtls.Config{
		Certificates:         cfg.Certificates,
		RootCAs:              cfg.RootCAs,
		ClientCAs:            cfg.ClientCAs,
		ServerName:           cfg.ServerName,
		KeyLogWriter:         cfg.KeyLogWriter, // CLIENT_RANDOM lines, both roles
		ExtendedMasterSecret: dtls.RequestExtendedMasterSecret,
		MTU:                  dtlsMTU,
	}
	if server {
		d.ClientAuth = dtls.RequireAndVerifyClientCert
		// pion's HelloVerifyRequest cookie is random per dtls.Conn (checked
		// against that Conn's state), so a server that keeps nothing after the
		// HelloVerifyRequest cannot verify the second ClientHello. Over HTTP the
		// TCP connection already proves the return path, so the go server skips
		// it and answers the first ClientHello with its ServerHello flight and
		// a Set-Cookie, as the contract allows.
		d.InsecureSkipVerifyHello = true
	}
	return d
}

// runDTLS is one dtls12 attempt as a client: handshake, export, inner request.
func (s *clientSession) runDTLS() error {
	conn := newDatagramConn()
	defer conn.kill()
	ctx, cancel := context.WithDeadline(context.Background(), s.deadline)
	defer cancel()
	var dconn *dtls.Conn
	var hsErr error
	ended := make(chan struct{})
	go func() {
		dconn, hsErr = dtls.ClientWithContext(ctx, conn, dtlsConfig(s.cfg, false))
		close(ended)
	}()
	failed := func(err error) error { // pion's own reason beats the carrier's echo of it
		select {
		case <-ended:
			if hsErr != nil {
				return fmt.Errorf("DTLS handshake: %w (%v)", hsErr, err)
			}
		case <-time.After(100 * time.Millisecond):
		}
		return err
	}
	var hello helloInfo
	for handshaking := true; handshaking; {
		select {
		case <-ended:
			handshaking = false
		case <-conn.flights: // pion wrote a whole flight: post it, feed the answer
			out := conn.takeOut()
			if len(out) == 0 {
				continue
			}
			in, err := s.post(out)
			if err != nil {
				return failed(err)
			}
			if len(in) == 0 {
				return errors.New("the server answered a handshake flight with an empty body")
			}
			recs, err := splitRecords(in)
			if err != nil {
				return fmt.Errorf("the server's answer is not DTLS records: %w", err)
			}
			if h := serverHello(recs); h.seen {
				hello = h
			}
			if err := feedDTLS(ctx, conn, in, ended); err != nil {
				return err
			}
		case <-ctx.Done():
			return &carrierError{errors.New("DTLS handshake timed out")}
		}
	}
	if hsErr != nil {
		return fmt.Errorf("DTLS handshake: %w", hsErr)
	}
	state := dconn.ConnectionState()
	ekm, err := state.ExportKeyingMaterial(exporterLabel, nil, exportLength)
	if err != nil {
		return fmt.Errorf("exporter: %w", err)
	}
	if err := writeExportHex(ekm); err != nil {
		return err
	}
	fmt.Printf("handshake ok: DTLS 1.2 %s\n", hello)
	if !s.tc.records {
		return nil
	}
	err = s.innerRequestDTLS(ctx, conn, dconn)
	if _, copies := conn.flightStats(); copies > 0 {
		logf("left %d retransmitted record(s) of pion's out of the carrier bodies", copies)
	}
	return err
}

// innerRequestDTLS sends the inner request in DTLS application data and reads
// the answer; an empty answer means "dropped unserved": send it again, at most twice.
func (s *clientSession) innerRequestDTLS(ctx context.Context, conn *memConn, dconn *dtls.Conn) error {
	rr := &recordReader{c: dconn, buf: make([]byte, maxRecordBytes)}
	for try := 0; ; try++ {
		select { // nothing pion wrote before is part of this request
		case <-conn.flights:
		default:
		}
		if _, err := dconn.Write([]byte(innerRequest)); err != nil {
			return fmt.Errorf("DTLS write: %w", err)
		}
		select {
		case <-conn.flights:
		case <-ctx.Done():
			return errors.New("out of time (20 s budget)")
		}
		in, err := s.post(conn.takeOut())
		if err != nil {
			return err
		}
		if len(in) == 0 {
			if try < 2 {
				logf("the inner request was dropped unserved (empty answer); sending it again")
				continue
			}
			return errors.New("the inner request was dropped unserved three times")
		}
		if _, err := splitRecords(in); err != nil {
			return fmt.Errorf("the server's answer is not DTLS records: %w", err)
		}
		if err := feedDTLS(ctx, conn, in, nil); err != nil {
			return err
		}
		wait := requestTimeout
		if r := s.remaining(); r < wait {
			wait = r
		}
		dconn.SetReadDeadline(time.Now().Add(wait))
		resp, err := http.ReadResponse(bufio.NewReader(rr), nil)
		if err != nil {
			return fmt.Errorf("inner response: %w", err)
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		fmt.Printf("inner response: %s %q\n", resp.Status, body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("inner status %d", resp.StatusCode)
		}
		return nil
	}
}

// feedDTLS hands a carrier answer to pion's reader once it has read all
// earlier input (want); ended (nil after the handshake) stops waiting when
// the handshake is over.
func feedDTLS(ctx context.Context, conn *memConn, in []byte, ended <-chan struct{}) error {
	timedOut := &carrierError{errors.New("DTLS did not read the answer in time")}
	select {
	case <-conn.want:
	case <-ended:
		return nil
	case <-ctx.Done():
		return timedOut
	}
	select {
	case conn.feed <- in:
		return nil
	case <-ended:
		return nil
	case <-ctx.Done():
		return timedOut
	}
}

// serveDTLS is the DTLS side of one server session: handshake, export, then
// answer inner HTTP/1.1 requests in application data with a fixed response.
func (sv *server) serveDTLS(conn *memConn) error {
	ctx, cancel := context.WithTimeout(context.Background(), dtlsHandshakeTimeout)
	dconn, err := dtls.ServerWithContext(ctx, conn, dtlsConfig(sv.cfg, true))
	cancel()
	if err != nil {
		return err
	}
	state := dconn.ConnectionState()
	if ekm, err := state.ExportKeyingMaterial(exporterLabel, nil, exportLength); err != nil {
		logf("export: %v", err)
	} else if err := writeExportHex(ekm); err != nil {
		logf("export: %v", err)
	}
	hello, copies := conn.flightStats()
	logf("handshake ok: DTLS 1.2 %s (%d retransmitted record(s) left out)", hello, copies)
	return serveInner(&recordReader{c: dconn, buf: make([]byte, maxRecordBytes)}, dconn)
}

// recordReader serves pion's whole-record Reads (which fail with "buffer is
// too small" when p is shorter than the record) to readers that ask for less,
// such as bufio.
type recordReader struct {
	c         *dtls.Conn
	buf, rest []byte
}

func (r *recordReader) Read(p []byte) (int, error) {
	for len(r.rest) == 0 {
		n, err := r.c.Read(r.buf)
		if err != nil {
			return 0, err
		}
		r.rest = r.buf[:n]
	}
	n := copy(p, r.rest)
	r.rest = r.rest[n:]
	return n, nil
}
