#!/bin/sh
# Build the Go peer offline, no module downloads: crypto/tls from the standard
# library, and pion/dtls v2 for dtls12 from Debian's golang-github-pion-dtls.v2-dev
# and its dependencies (golang-*-dev sources under /usr/share/gocode/src, built
# in GOPATH mode as Debian's dh-golang does; pion's /v2 import paths resolve
# there by the go tool's minimal module compatibility).
# Without pion the peer still builds, without the atls_pion tag: every TLS test
# case works and dtls12 exits 127 naming the missing package.
set -eu
cd "$(dirname "$0")"
out=../../.build/go
mkdir -p "$out"
gocode=${ATLS_GOCODE:-/usr/share/gocode}
tags=
if [ -f "$gocode/src/github.com/pion/dtls/v2/conn.go" ]; then
  tags=atls_pion
else
  echo "build.sh: no pion/dtls v2 under $gocode/src (apt-get install golang-github-pion-dtls.v2-dev):" \
    "building without DTLS, dtls12 will exit 127" >&2
fi
GO111MODULE=off GOPATH="$gocode" GOFLAGS= GOPROXY=off CGO_ENABLED=0 \
  go build -trimpath -tags "$tags" -o "$out/atls-go" .
echo "build.sh: built $out/atls-go${tags:+ with pion/dtls ($tags)}"
