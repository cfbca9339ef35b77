#!/bin/sh
# A bootstrapping device. It picks a free serial from the shared PKI (so
# `--scale device=N` works) and writes its report to /reports/devices/.
# VIA_ROUTER=middlebox (transparent mode): route the service's LAN-side address
# and everything else through the middlebox; the device itself knows no proxy.
# When done it drops its exit code and report in /results for the collector
# and, with ATLS_DEVICE_LINGER=1 (the plain `compose up` path), stays up: with
# `--exit-code-from collector` compose stops everything as soon as any
# container exits, so only the collector may exit.
set -eu
name="$(hostname)"

finish() {
  rc=$?
  trap - EXIT
  for report in /tmp/device-report/*.json; do
    [ -f "$report" ] || continue
    mkdir -p /reports/devices
    cp "$report" /reports/devices/
    [ -d /results ] && cp "$report" "/results/$name.json"
  done
  if [ -d /results ]; then
    echo "$rc" > "/results/$name.rc.tmp" && mv "/results/$name.rc.tmp" "/results/$name.rc"
  fi
  if [ "${ATLS_DEVICE_LINGER:-0}" = "1" ]; then
    echo "device: finished (exit $rc); staying up until compose stops the stack"
    trap 'exit "$rc"' TERM INT
    while :; do sleep 1; done
  fi
  exit "$rc"
}
trap finish EXIT

if [ -n "${VIA_ROUTER:-}" ]; then
  # Subnets are Docker's choice per project: find the router and the service's
  # LAN-side address (the LAN's last host address, as the middlebox does).
  router="$(getent ahostsv4 "$VIA_ROUTER" | awk '{print $1; exit}')"
  if [ -z "$router" ]; then
    echo "device: cannot resolve the router $VIA_ROUTER" >&2
    exit 3
  fi
  lan="$(python3 /opt/atls-compose/netinfo.py "$router")"
  vip="${lan#* }"
  echo "$vip atls-service" >> /etc/hosts
  ip route replace "$vip/32" via "$router"
  ip route replace default via "$router"
  echo "device: transparent, LAN ${lan% *}, service at $vip via $router"
fi
set -- bootstrap --service "${ATLS_SERVICE_URL:-https://atls-service:8443}" \
  --pki /pki --device auto --claim-dir /claims --report-dir /tmp/device-report \
  --store /store --server-name atls-service
# The scenario's device settings (variant, mode, retries, timeout).
# shellcheck disable=SC2046
set -- "$@" $(atls-testbed scenario-device-args "${ATLS_SCENARIO:-bootstrap}")
if [ -n "${ATLS_PROXY:-}" ]; then
  set -- "$@" --proxy "$ATLS_PROXY"
fi
atls-device "$@"
