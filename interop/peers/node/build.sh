#!/bin/sh
# Node needs no compilation: check the syntax and record the versions used.
set -eu
cd "$(dirname "$0")"
out=../../.build/node
mkdir -p "$out"
node --check atls-node.mjs
node -p '"node " + process.version + ", OpenSSL " + process.versions.openssl' > "$out/versions"
