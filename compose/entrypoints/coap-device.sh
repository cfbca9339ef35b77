#!/bin/sh
# A constrained device: ATLS over CoAP to the gateway (through the UDP
# middlebox), then OSCORE readings carrying the run's canary. It picks a free
# serial from the shared PKI and writes its report to /reports/devices/.
set -eu
set -- coap --gateway "${ATLS_GATEWAY:-coap://udp-middlebox:5683}" \
  --pki /pki --device auto --claim-dir /claims --report-dir /reports/devices \
  --server-name atls-service --canary "${ATLS_CANARY:-}"
# The scenario's device settings (mode, profile, dtls, readings, retries, timeout).
# shellcheck disable=SC2046
set -- "$@" $(atls-testbed scenario-device-args "${ATLS_SCENARIO:-constrained}")
exec atls-device "$@"
