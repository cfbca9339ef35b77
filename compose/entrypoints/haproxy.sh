#!/bin/sh
# The load balancer in front of the service replicas (compose/replicas.yml).
# It terminates network TLS with the service's own certificate (so devices and
# the middlebox see the service they expect), routes on the ATLS session
# cookie, and re-encrypts to the replicas, which it verifies by the service's
# name. Replicas are found in Docker's DNS (the `service` name has one address
# per replica under --scale service=N); at most ATLS_REPLICAS_MAX slots.
set -eu
cat /pki/service.pem /pki/service.key > /tmp/service.pem
max="${ATLS_REPLICAS_MAX:-8}"
cat > /tmp/haproxy.cfg <<CFG
global
    maxconn 8000  # two FDs per proxied connection: fits the usual 20000-FD limit
resolvers docker
    nameserver dns 127.0.0.11:53
    hold valid 1s
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
frontend atls
    bind :8443 ssl crt /tmp/service.pem
    default_backend replicas
backend replicas
    balance roundrobin
    # Stickiness on the service's own session cookie: HAProxy prefixes the value
    # the service sets with the replica's cookie and strips it from requests, so
    # an ATLS session stays on the replica that holds its TLS state; requests with
    # no session (a first flight, probes, the operator) are spread round-robin.
    # Devices send back only atls_session (no cookie jar), so an inserted cookie
    # of HAProxy's own would never return. server-template servers have no fixed
    # cookie value: "dynamic" derives one from the replica's address and a key.
    cookie atls_session prefix nocache dynamic
    dynamic-cookie-key atls-testbed-replicas
    option httpchk GET /healthz
    server-template replica 1-$max ${ATLS_REPLICAS_HOST:-service}:8443 check inter 1s resolvers docker init-addr none ssl verify required ca-file /pki/vendor-ca.pem verifyhost atls-service sni str(atls-service)
CFG
exec haproxy -W -db -f /tmp/haproxy.cfg
