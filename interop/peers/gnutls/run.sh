#!/bin/sh
# Interop entry point (interop/CONTRACT.md): runs the gnutls peer with the contract's environment.
# Build first: make -C interop/peers/gnutls
BIN="$(cd "$(dirname "$0")/../.." && pwd)/.build/gnutls/atls-peer-gnutls"
if [ ! -x "$BIN" ]; then
    echo "gnutls peer not built: run make -C interop/peers/gnutls" >&2
    exit 1
fi
exec "$BIN" "$@"
