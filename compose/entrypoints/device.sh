#!/bin/sh
# A bootstrapping device. It picks a free serial from the shared PKI (so
# `--scale device=N` works) and writes its report to /reports/devices/.
# VIA_ROUTER (transparent mode): route the service address (SERVICE_VIP) and
# everything else through the middlebox; the device itself knows no proxy.
set -eu
if [ -n "${VIA_ROUTER:-}" ]; then
  ip route replace "${SERVICE_VIP:?}/32" via "$VIA_ROUTER"
  ip route replace default via "$VIA_ROUTER"
fi
set -- bootstrap --service "${ATLS_SERVICE_URL:-https://atls-service:8443}" \
  --pki /pki --device auto --claim-dir /claims --report-dir /reports/devices \
  --store /store --server-name atls-service
# The scenario's device settings (variant, mode, retries, timeout).
# shellcheck disable=SC2046
set -- "$@" $(atls-testbed scenario-device-args "${ATLS_SCENARIO:-bootstrap}")
if [ -n "${ATLS_PROXY:-}" ]; then
  set -- "$@" --proxy "$ATLS_PROXY"
fi
exec atls-device "$@"
