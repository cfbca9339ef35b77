// Command atls-go is the Go ATLS interop peer (interop/CONTRACT.md): crypto/tls,
// or pion/dtls v2 in dtls12, runs over an in-memory net.Conn whose bytes travel
// in HTTP POST bodies.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

const (
	exporterLabel = "application-layer-tls"
	exportLength  = 32
	implName      = "go"
)

// exit codes of the contract
const (
	exitOK          = 0
	exitFailed      = 1
	exitUnsupported = 127
)

// testCase is what one TESTCASE asks of the TLS configuration and the carrier.
type testCase struct {
	minVersion, maxVersion uint16
	emptyContext           bool // export with a zero-length, present context
	records                bool // send one inner request after the handshake
	draft00                bool
	chacha                 bool
	dtls                   bool // DTLS 1.2 records (pion/dtls) instead of crypto/tls
}

var testCases = map[string]testCase{
	"handshake-tls13":        {minVersion: tls.VersionTLS13, maxVersion: tls.VersionTLS13},
	"handshake-tls12":        {minVersion: tls.VersionTLS12, maxVersion: tls.VersionTLS12},
	"records":                {records: true},
	"exporter":               {minVersion: tls.VersionTLS13, maxVersion: tls.VersionTLS13},
	"exporter-empty-context": {minVersion: tls.VersionTLS12, maxVersion: tls.VersionTLS12, emptyContext: true},
	"mutual-auth-missing":    {},
	"wrong-anchor":           {},
	"draft00":                {draft00: true},
	"proxy":                  {},
	"flight-loss":            {},
	"corruption":             {},
	"chacha20":               {minVersion: tls.VersionTLS13, maxVersion: tls.VersionTLS13, chacha: true},
	"dtls12":                 {dtls: true, records: true},
}

func main() {
	role := os.Getenv("ROLE")
	name := os.Getenv("TESTCASE")
	tc, ok := testCases[name]
	if !ok {
		unsupported(fmt.Sprintf("test case %q is not implemented by the go peer", name))
	}
	if tc.dtls && dtlsMissing != "" {
		unsupported(dtlsMissing)
	}
	if tc.minVersion == 0 {
		tc.minVersion, tc.maxVersion = tls.VersionTLS12, tls.VersionTLS13
	}
	switch role {
	case "client":
		os.Exit(runClient(tc))
	case "server":
		os.Exit(runServer(tc))
	default:
		fmt.Fprintf(os.Stderr, "ROLE must be client or server, not %q\n", role)
		os.Exit(exitFailed)
	}
}

func unsupported(why string) {
	fmt.Fprintln(os.Stderr, why) // one line: the runner shows it in the cell
	os.Exit(exitUnsupported)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "atls-go %s: %s\n", os.Getenv("ROLE"), fmt.Sprintf(format, args...))
}

// baseConfig builds the tls.Config both roles share from CERTS.
func baseConfig(tc testCase) (*tls.Config, error) {
	dir := os.Getenv("CERTS")
	if dir == "" {
		return nil, errors.New("CERTS is not set")
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%s/ca.pem holds no certificate", dir)
	}
	cfg := &tls.Config{MinVersion: tc.minVersion, MaxVersion: tc.maxVersion, RootCAs: pool, ClientCAs: pool}
	certFile := filepath.Join(dir, "cert.pem")
	if _, err := os.Stat(certFile); err == nil {
		pair, err := tls.LoadX509KeyPair(certFile, filepath.Join(dir, "key.pem"))
		if err != nil {
			return nil, fmt.Errorf("own certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	if path := os.Getenv("KEYLOG_FILE"); path != "" {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return nil, fmt.Errorf("KEYLOG_FILE: %w", err)
		}
		cfg.KeyLogWriter = f
	}
	if tc.chacha {
		// crypto/tls has no setting for TLS 1.3 suites; refuse any other choice.
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if cs.CipherSuite != tls.TLS_CHACHA20_POLY1305_SHA256 {
				return fmt.Errorf("negotiated %s, not TLS_CHACHA20_POLY1305_SHA256", tls.CipherSuiteName(cs.CipherSuite))
			}
			return nil
		}
	}
	return cfg, nil
}

// writeExport writes the exporter output for a finished handshake, atomically
// (a retried handshake overwrites an earlier one's export).
func writeExport(cs tls.ConnectionState, tc testCase) error {
	path := os.Getenv("EXPORT_FILE")
	if path == "" {
		return nil
	}
	// Go distinguishes a nil context (absent) from a non-nil empty one
	// (present, zero length; RFC 5705 then adds a 0x0000 length to the seed).
	var context []byte
	if tc.emptyContext {
		context = []byte{}
	}
	ekm, err := cs.ExportKeyingMaterial(exporterLabel, context, exportLength)
	if err != nil {
		return fmt.Errorf("exporter: %w", err)
	}
	return writeExportHex(ekm)
}

// writeExportHex writes exported keying material to EXPORT_FILE, atomically.
func writeExportHex(ekm []byte) error {
	path := os.Getenv("EXPORT_FILE")
	if path == "" {
		return nil
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(hex.EncodeToString(ekm)+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func versionName(v uint16) string {
	switch v {
	case tls.VersionTLS12:
		return "TLS 1.2"
	case tls.VersionTLS13:
		return "TLS 1.3"
	}
	return fmt.Sprintf("0x%04x", v)
}

// paths and media types of the two wire forms
func carrierPath(tc testCase) string {
	if tc.draft00 {
		return "/atls"
	}
	return "/.well-known/atls"
}

func mediaType(tc testCase) string {
	if tc.draft00 {
		return "application/atls+octet-stream"
	}
	return "application/atls"
}

func bareMediaType(v string) string {
	return strings.ToLower(strings.TrimSpace(strings.SplitN(v, ";", 2)[0]))
}
