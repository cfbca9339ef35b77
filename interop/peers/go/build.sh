#!/bin/sh
# Build the Go crypto/tls peer (standard library only, no module downloads).
set -eu
cd "$(dirname "$0")"
out=../../.build/go
mkdir -p "$out"
GOFLAGS=-mod=mod GOPROXY=off CGO_ENABLED=0 go build -trimpath -o "$out/atls-go" .
