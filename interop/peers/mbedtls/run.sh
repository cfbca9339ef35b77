#!/bin/sh
# Interop entry point (interop/CONTRACT.md): runs the mbedtls peer with the contract's environment.
# Build first: make -C interop/peers/mbedtls
BIN="$(cd "$(dirname "$0")/../.." && pwd)/.build/mbedtls/atls-peer-mbedtls"
if [ ! -x "$BIN" ]; then
    echo "mbedtls peer not built: run make -C interop/peers/mbedtls" >&2
    exit 1
fi
exec "$BIN" "$@"
