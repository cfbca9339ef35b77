//go:build !atls_pion

package main

import "errors"

// This peer was built without pion/dtls (build.sh found no
// golang-github-pion-dtls.v2-dev): dtls12 exits 127 with this line, and every
// TLS test case works as before.
const dtlsMissing = "dtls12: the go peer was built without pion/dtls v2 (apt-get install golang-github-pion-dtls.v2-dev, then ./testbed interop build --force)"

var errNoDTLS = errors.New(dtlsMissing)

func (s *clientSession) runDTLS() error { return errNoDTLS }

func (sv *server) serveDTLS(*memConn) error { return errNoDTLS }
