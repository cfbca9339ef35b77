package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

const (
	clientBudget   = 18 * time.Second // the contract allows 20 s; keep a margin
	requestTimeout = 5 * time.Second
	maxRetries     = 2
	maxAnswerBytes = 256 << 10
	innerRequest   = "GET /api/hello HTTP/1.1\r\nHost: atls\r\nContent-Length: 0\r\n\r\n"
)

// carrierError is a failure of the HTTP carrier (reset, no answer, 502-504):
// the only kind the contract lets a client retry, with a fresh handshake.
type carrierError struct{ err error }

func (e *carrierError) Error() string { return "carrier: " + e.err.Error() }

func runClient(tc testCase) int {
	if tc.chacha {
		unsupported("Go crypto/tls has no API to choose TLS 1.3 cipher suites (Config.CipherSuites ignores TLS 1.3): the client cannot offer only TLS_CHACHA20_POLY1305_SHA256")
	}
	cfg, err := baseConfig(tc)
	if err != nil {
		logf("configuration: %v", err)
		return exitFailed
	}
	name, err := os.ReadFile(filepath.Join(os.Getenv("CERTS"), "server-name"))
	if err != nil {
		logf("configuration: %v", err)
		return exitFailed
	}
	cfg.ServerName = strings.TrimSpace(string(name))
	base := strings.TrimRight(os.Getenv("SERVER_URL"), "/")
	if base == "" {
		logf("SERVER_URL is not set")
		return exitFailed
	}
	transport := &http.Transport{}
	if p := os.Getenv("PROXY"); p != "" {
		proxyURL, err := url.Parse(p)
		if err != nil {
			logf("PROXY: %v", err)
			return exitFailed
		}
		transport.Proxy = http.ProxyURL(proxyURL) // plain-http targets go absolute-form
	}
	deadline := time.Now().Add(clientBudget)
	for attempt := 0; ; attempt++ {
		s := &clientSession{tc: tc, cfg: cfg, url: base + carrierPath(tc), deadline: deadline,
			http: &http.Client{Transport: transport}}
		run := s.run
		if tc.dtls {
			run = s.runDTLS
		}
		err := run()
		if err == nil {
			return exitOK
		}
		var ce *carrierError
		if errors.As(err, &ce) && attempt < maxRetries && time.Now().Before(deadline) {
			logf("attempt %d: %v; starting a fresh handshake", attempt+1, err)
			transport.CloseIdleConnections()
			continue
		}
		logf("failed: %v", err)
		return exitFailed
	}
}

type clientSession struct {
	tc       testCase
	cfg      *tls.Config
	http     *http.Client
	url      string
	cookie   string
	deadline time.Time
}

func (s *clientSession) remaining() time.Duration { return time.Until(s.deadline) }

// post sends one flight and returns the peer's answer body.
func (s *clientSession) post(body []byte) ([]byte, error) {
	timeout := requestTimeout
	if r := s.remaining(); r < timeout {
		timeout = r
	}
	if timeout <= 0 {
		return nil, errors.New("out of time (20 s budget)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", mediaType(s.tc))
	req.Header.Set("Accept", mediaType(s.tc))
	if s.cookie != "" {
		req.Header.Set("Cookie", "atls_session="+s.cookie)
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return nil, &carrierError{err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes+1))
	if err != nil {
		return nil, &carrierError{err}
	}
	if len(data) > maxAnswerBytes {
		return nil, fmt.Errorf("answer larger than %d bytes", maxAnswerBytes)
	}
	for _, c := range resp.Cookies() {
		if c.Name == "atls_session" {
			s.cookie = c.Value
		}
	}
	switch {
	case resp.StatusCode == http.StatusOK && bareMediaType(resp.Header.Get("Content-Type")) == mediaType(s.tc):
		return data, nil
	case resp.StatusCode == http.StatusOK:
		return nil, fmt.Errorf("200 with Content-Type %q", resp.Header.Get("Content-Type"))
	case resp.StatusCode == 502 || resp.StatusCode == 503 || resp.StatusCode == 504:
		return nil, &carrierError{fmt.Errorf("HTTP %d", resp.StatusCode)}
	default:
		return nil, fmt.Errorf("refused: HTTP %d %s: %.300s", resp.StatusCode, resp.Header.Get("Content-Type"), bytes.TrimSpace(data))
	}
}

// run is one attempt: handshake, export, and the inner request in records mode.
func (s *clientSession) run() error {
	conn := newMemConn()
	defer conn.kill()
	tconn := tls.Client(conn, s.cfg)
	done := make(chan error, 1)
	go func() { done <- tconn.Handshake() }()
	timer := time.NewTimer(s.remaining())
	defer timer.Stop()
handshake:
	for {
		select {
		case <-conn.want: // TLS needs the peer's next flight: send ours first
			out := conn.takeOut()
			if len(out) == 0 {
				return errors.New("handshake stalled: TLS waits for data but has nothing to send")
			}
			in, err := s.post(out)
			if err != nil {
				return err
			}
			if len(in) == 0 {
				return errors.New("the server answered a handshake flight with an empty body")
			}
			conn.feed <- in // the TLS goroutine is parked on feed after want
		case err := <-done:
			if err != nil {
				return fmt.Errorf("TLS handshake: %w", err)
			}
			break handshake
		case <-timer.C:
			return &carrierError{errors.New("handshake timed out")}
		}
	}
	conn.setNonBlocking()
	// TLS 1.3: our Finished is still buffered; the server accepts it (with
	// tickets or an empty body) or refuses it (e.g. certificate_required).
	if out := conn.takeOut(); len(out) > 0 {
		in, err := s.post(out)
		if err != nil {
			return err
		}
		if _, err := drain(conn, tconn, in); err != nil {
			return err
		}
	}
	cs := tconn.ConnectionState()
	if err := writeExport(cs, s.tc); err != nil {
		return err
	}
	fmt.Printf("handshake ok: %s %s\n", versionName(cs.Version), tls.CipherSuiteName(cs.CipherSuite))
	if !s.tc.records {
		return nil
	}
	if _, err := tconn.Write([]byte(innerRequest)); err != nil {
		return err
	}
	in, err := s.post(conn.takeOut())
	if err != nil {
		return err
	}
	plain, err := drain(conn, tconn, in)
	if err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(plain)), nil)
	if err != nil {
		return fmt.Errorf("inner response (%d bytes): %w", len(plain), err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	fmt.Printf("inner response: %s %q\n", resp.Status, body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("inner status %d", resp.StatusCode)
	}
	return nil
}

// drain hands carrier bytes to TLS and returns the application data they held
// (post-handshake messages such as NewSessionTicket are consumed by TLS).
func drain(conn *memConn, tconn *tls.Conn, in []byte) ([]byte, error) {
	conn.push(in)
	var plain []byte
	buf := make([]byte, 16<<10)
	for {
		n, err := tconn.Read(buf)
		plain = append(plain, buf[:n]...)
		var wb wouldBlock
		switch {
		case errors.As(err, &wb):
			return plain, nil // everything buffered is consumed
		case err == io.EOF:
			return plain, errors.New("the server closed the TLS session (close_notify)")
		case err != nil:
			return plain, fmt.Errorf("TLS: %w", err)
		}
		if len(plain) > maxAnswerBytes {
			return nil, errors.New("too much application data")
		}
	}
}
