#!/bin/sh
# Interop entry point (interop/CONTRACT.md): runs the openssl peer with the contract's environment.
# Build first: make -C interop/peers/openssl
BIN="$(cd "$(dirname "$0")/../.." && pwd)/.build/openssl/atls-peer-openssl"
if [ ! -x "$BIN" ]; then
    echo "openssl peer not built: run make -C interop/peers/openssl" >&2
    exit 1
fi
exec "$BIN" "$@"
