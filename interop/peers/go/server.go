package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	maxFlightBytes  = 64 << 10
	maxSessions     = 512
	idleTTL         = 60 * time.Second
	exchangeTimeout = 10 * time.Second
	// DTLS: how long an answer waits for a complete flight once the stack has
	// read all input; it runs out only for input that needs no answer.
	dtlsIdleGrace = time.Second
	innerResponse = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nhello from go"
)

type server struct {
	tc  testCase
	cfg *tls.Config

	mu       sync.Mutex
	sessions map[string]*serverSession
}

// serverSession is one ATLS session: a tls.Server (or pion dtls.Server)
// goroutine over a memConn, driven one carrier message at a time.
type serverSession struct {
	mu       sync.Mutex // serialises carrier messages of this session
	conn     *memConn
	exited   chan error // the TLS goroutine's result
	over     bool
	parked   bool // the goroutine has asked for input (want) and waits on feed
	lastUsed time.Time
}

func runServer(tc testCase) int {
	cfg, err := baseConfig(tc)
	if err != nil {
		logf("configuration: %v", err)
		return exitFailed
	}
	if len(cfg.Certificates) == 0 {
		logf("configuration: CERTS has no cert.pem for the server")
		return exitFailed
	}
	cfg.ClientAuth = tls.RequireAndVerifyClientCert // every test case is mutual
	host := os.Getenv("HOST")
	if host == "" {
		host = "127.0.0.1"
	}
	sv := &server{tc: tc, cfg: cfg, sessions: map[string]*serverSession{}}
	srv := &http.Server{
		Addr:              net.JoinHostPort(host, os.Getenv("PORT")),
		Handler:           sv,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
	ln, err := net.Listen("tcp", srv.Addr)
	if err != nil {
		logf("listen: %v", err)
		return exitFailed
	}
	go sv.janitor()
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}()
	logf("listening on %s (%s)", ln.Addr(), os.Getenv("TESTCASE"))
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		logf("serve: %v", err)
		return exitFailed
	}
	return exitOK
}

func (sv *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/.well-known/atls" && r.URL.Path != "/atls" {
		problem(w, http.StatusNotFound, "not-found", "Not Found", "no such resource", nil)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		problem(w, http.StatusMethodNotAllowed, "method-not-allowed", "Method Not Allowed", "ATLS messages are POSTs", nil)
		return
	}
	media := bareMediaType(r.Header.Get("Content-Type"))
	if media != "application/atls" && media != "application/atls+octet-stream" {
		problem(w, http.StatusUnsupportedMediaType, "unsupported-media-type", "Unsupported Media Type", "expected application/atls", nil)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxFlightBytes))
	if err != nil {
		problem(w, http.StatusRequestEntityTooLarge, "flight-too-large", "Flight Too Large", err.Error(), nil)
		return
	}
	if _, err := r.Cookie("atls_session"); err != nil && len(body) == 0 {
		problem(w, http.StatusBadRequest, "session", "No ClientHello", "a POST without the session cookie must carry a ClientHello", nil)
		return
	}
	if sv.tc.dtls {
		if _, err := splitRecords(body); err != nil {
			problem(w, http.StatusBadRequest, "not-dtls", "Not DTLS Records", err.Error(), nil)
			return
		}
	}
	token, s, isNew, err := sv.session(r)
	if err != nil {
		status := http.StatusBadRequest
		if errors.Is(err, errFull) {
			status = http.StatusServiceUnavailable
		}
		problem(w, status, "session", "No Such Session", err.Error(), nil)
		return
	}
	out, err := s.exchange(body)
	if err != nil {
		sv.drop(token)
		logf("session %s: %v", token[:8], err)
		extra := map[string]any{}
		if name := alertName(err, out); name != "" {
			extra["tls_alert"] = name
		}
		if len(out) > 0 {
			extra["tls_flight"] = base64.StdEncoding.EncodeToString(out)
		}
		problem(w, http.StatusBadRequest, "tls-alert", "TLS rejected the flight", err.Error(), extra)
		return
	}
	if isNew {
		w.Header().Set("Set-Cookie", "atls_session="+token+"; Path=/")
	}
	w.Header().Set("Content-Type", media) // answer in the form we were asked in
	w.WriteHeader(http.StatusOK)
	w.Write(out)
}

var errFull = errors.New("too many sessions")

// session finds the cookie's session, or starts one for a cookieless POST.
func (sv *server) session(r *http.Request) (string, *serverSession, bool, error) {
	if c, err := r.Cookie("atls_session"); err == nil {
		sv.mu.Lock()
		defer sv.mu.Unlock()
		s, ok := sv.sessions[c.Value]
		if !ok {
			return "", nil, false, errors.New("unknown or expired atls_session")
		}
		s.lastUsed = time.Now()
		return c.Value, s, false, nil
	}
	raw := make([]byte, 16)
	if _, err := rand.Read(raw); err != nil {
		return "", nil, false, err
	}
	token := hex.EncodeToString(raw)
	conn := newMemConn()
	if sv.tc.dtls {
		conn = newDatagramConn()
	}
	s := &serverSession{conn: conn, exited: make(chan error, 1), lastUsed: time.Now()}
	sv.mu.Lock()
	if len(sv.sessions) >= maxSessions {
		sv.mu.Unlock()
		return "", nil, false, errFull
	}
	sv.sessions[token] = s
	sv.mu.Unlock()
	go func() { s.exited <- sv.serve(s.conn) }()
	return token, s, true, nil
}

func (sv *server) drop(token string) {
	sv.mu.Lock()
	if s, ok := sv.sessions[token]; ok {
		s.conn.kill()
		delete(sv.sessions, token)
	}
	sv.mu.Unlock()
}

// janitor ends sessions nobody has used for idleTTL (abandoned handshakes).
func (sv *server) janitor() {
	for range time.Tick(5 * time.Second) {
		sv.mu.Lock()
		for token, s := range sv.sessions {
			if time.Since(s.lastUsed) > idleTTL {
				s.conn.kill()
				delete(sv.sessions, token)
			}
		}
		sv.mu.Unlock()
	}
}

// serve is the TLS side of one session: handshake, export, then answer inner
// HTTP/1.1 requests (records mode) with a fixed response.
func (sv *server) serve(conn *memConn) error {
	if sv.tc.dtls {
		return sv.serveDTLS(conn)
	}
	tconn := tls.Server(conn, sv.cfg)
	if err := tconn.Handshake(); err != nil {
		return err
	}
	cs := tconn.ConnectionState()
	if err := writeExport(cs, sv.tc); err != nil {
		logf("export: %v", err)
	}
	logf("handshake ok: %s %s", versionName(cs.Version), tls.CipherSuiteName(cs.CipherSuite))
	return serveInner(tconn, tconn)
}

// serveInner answers the inner HTTP/1.1 requests read from r on w until the
// session ends (TLS and DTLS servers alike).
func serveInner(r io.Reader, w io.Writer) error {
	br := bufio.NewReaderSize(r, 16<<10)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("inner request: %w", err)
		}
		io.Copy(io.Discard, io.LimitReader(req.Body, maxFlightBytes))
		req.Body.Close()
		logf("inner request: %s %s", req.Method, req.URL)
		if _, err := w.Write([]byte(innerResponse)); err != nil {
			return err
		}
	}
}

// exchange feeds one flight to the session's TLS goroutine and returns what it
// wrote before it wanted more input (or ended).
func (s *serverSession) exchange(body []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.over {
		return nil, errors.New("the session is over")
	}
	timer := time.NewTimer(exchangeTimeout)
	defer timer.Stop()
	// wait until the goroutine is parked in Read (or has ended), then feed it
	if !s.parked {
		select {
		case <-s.conn.want:
		case err := <-s.exited:
			s.over = true
			return s.conn.takeOut(), endError(err)
		case <-timer.C:
			return nil, errors.New("TLS did not ask for input in time")
		}
	}
	if s.conn.tracker != nil {
		select { // a stale signal would end the answer before the input is read
		case <-s.conn.flights:
		default:
		}
	}
	select {
	case s.conn.feed <- body:
		s.parked = false
	case err := <-s.exited: // a DTLS reader can stop between want and feed
		s.over = true
		return s.conn.takeOut(), endError(err)
	case <-timer.C:
		return nil, errors.New("TLS did not take input in time")
	}
	if s.conn.tracker != nil {
		return s.answerDatagrams(timer)
	}
	// the goroutine now either wants more (answer with what it wrote) or ends
	select {
	case <-s.conn.want:
		s.parked = true
		return s.conn.takeOut(), nil
	case err := <-s.exited:
		s.over = true
		return s.conn.takeOut(), endError(err)
	case <-timer.C:
		return nil, errors.New("TLS did not answer in time")
	}
}

// answerDatagrams waits for the DTLS answer to a fed flight: pion's reader
// parks (want) as soon as it has read the input, while its handshake
// goroutine, or the inner server, is still writing the answer; the answer is
// complete when a write completes a flight. When the reader is idle and no
// flight comes within dtlsIdleGrace (input that needs no answer, such as a
// retransmitted copy) the answer is what was written, possibly nothing.
func (s *serverSession) answerDatagrams(timer *time.Timer) ([]byte, error) {
	var idle <-chan time.Time
	for {
		select {
		case <-s.conn.flights:
			out := s.conn.takeOut()
			if _, fatal, _ := dtlsAlert(out); fatal { // the session ends with it
				select {
				case err := <-s.exited:
					s.over = true
					return out, endError(err)
				case <-time.After(time.Second):
				}
			}
			return out, nil
		case <-s.conn.want:
			s.parked = true
			if idle == nil {
				idle = time.After(dtlsIdleGrace)
			}
		case <-idle:
			return s.conn.takeOut(), nil
		case err := <-s.exited:
			s.over = true
			return s.conn.takeOut(), endError(err)
		case <-timer.C:
			return nil, errors.New("DTLS did not answer in time")
		}
	}
}

func endError(err error) error {
	if err == nil {
		return errors.New("the session ended (close_notify)")
	}
	return err
}

func problem(w http.ResponseWriter, status int, slug, title, detail string, extra map[string]any) {
	body := map[string]any{"type": "urn:atls-testbed:problem:" + slug, "title": title, "status": status, "detail": detail}
	for k, v := range extra {
		body[k] = v
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(body)
}

// alertName names the alert behind a handshake error: the peer's (from
// crypto/tls's "remote error" text) or ours, when it went out unencrypted.
func alertName(err error, out []byte) string {
	const remote = "remote error: tls: "
	if msg := err.Error(); strings.HasPrefix(msg, remote) {
		return strings.ReplaceAll(strings.TrimPrefix(msg, remote), " ", "_")
	}
	if m := pionAlert.FindStringSubmatch(err.Error()); m != nil { // pion: "alert: Alert Fatal: BadCertificate"
		return strings.ToLower(camelHump.ReplaceAllString(m[1], "${1}_${2}"))
	}
	if len(out) == 7 && out[0] == 21 && out[1] == 3 && out[3] == 0 && out[4] == 2 {
		if name, ok := alertNames[out[6]]; ok {
			return name
		}
	}
	return dtlsAlertName(out)
}

var (
	pionAlert = regexp.MustCompile(`alert: Alert (?:Fatal|Warning): ([A-Za-z]+)`)
	camelHump = regexp.MustCompile(`([a-z])([A-Z])`)
)

var alertNames = map[byte]string{
	10: "unexpected_message", 20: "bad_record_mac", 40: "handshake_failure", 42: "bad_certificate",
	43: "unsupported_certificate", 44: "certificate_revoked", 45: "certificate_expired",
	41: "no_certificate", 46: "certificate_unknown", 47: "illegal_parameter", 48: "unknown_ca", 50: "decode_error",
	51: "decrypt_error", 70: "protocol_version", 71: "insufficient_security", 80: "internal_error",
	109: "missing_extension", 116: "certificate_required", 120: "no_application_protocol",
}
