#!/bin/sh
# Interop entry point (interop/CONTRACT.md): runs the wolfssl peer with the contract's environment.
# Build first: make -C interop/peers/wolfssl
BIN="$(cd "$(dirname "$0")/../.." && pwd)/.build/wolfssl/atls-peer-wolfssl"
if [ ! -x "$BIN" ]; then
    echo "wolfssl peer not built: run make -C interop/peers/wolfssl" >&2
    exit 1
fi
exec "$BIN" "$@"
