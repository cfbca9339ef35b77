#!/bin/sh
# Local testing aid: build contract CERTS directories from an `atls-testbed pki init` PKI.
#   mkcerts.sh PKI OUT  ->  OUT/server, OUT/client, OUT/client-nocert, OUT/client-wrongca
set -eu
PKI=$1 OUT=$2
mk() { # dir cert key
    d=$OUT/$1; mkdir -p "$d"
    cp "$PKI/vendor-ca.pem" "$d/ca.pem"
    openssl x509 -in "$d/ca.pem" -outform DER -out "$d/ca.der"
    echo atls-service > "$d/server-name"
    if [ -n "$2" ]; then
        cp "$2" "$d/cert.pem"
        openssl pkcs8 -topk8 -nocrypt -in "$3" -out "$d/key.pem"
        openssl x509 -in "$d/cert.pem" -outform DER -out "$d/cert.der"
        openssl pkcs8 -topk8 -nocrypt -in "$3" -outform DER -out "$d/key.der"
        openssl pkcs12 -export -in "$d/cert.pem" -inkey "$d/key.pem" -certfile "$d/ca.pem" \
            -passout pass:atls -out "$d/identity.p12"
    fi
}
dev=$(ls "$PKI"/devices/*.pem | head -1)
mk server "$PKI/service.pem" "$PKI/service.key"
mk client "$dev" "${dev%.pem}.key"
mk client-nocert "" ""
mk client-wrongca "$dev" "${dev%.pem}.key"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=other-ca -days 2 \
    -keyout "$OUT/other-ca.key" -out "$OUT/client-wrongca/ca.pem" 2>/dev/null
