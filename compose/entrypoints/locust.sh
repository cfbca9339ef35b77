#!/bin/sh
# Locust for a compose fleet (compose/fleet.yml): `locust.sh master` or `locust.sh worker`.
# Every simulated device is a user in a worker (atls_scenarios.fleet_locustfile): it
# claims a serial in /claims, bootstraps through the middlebox, writes its report to
# /reports/devices and its result to /results for the collector. When done, stay up
# (as device.sh does): with `--exit-code-from collector` only the collector may exit.
set -u
role="$1"
shift
file="$(atls-testbed fleet-locustfile)"
if [ "$role" = "master" ]; then
  mkdir -p /reports/fleet
  locust -f "$file" --master --headless --users "${ATLS_DEVICES:-1}" \
    --spawn-rate "${ATLS_FLEET_SPAWN_RATE:-50}" --expect-workers "${ATLS_FLEET_WORKERS:-1}" \
    --expect-workers-max-wait 120 --run-time "${ATLS_FLEET_RUN_TIME:-1800}s" --stop-timeout 30 \
    --csv /reports/fleet/locust --html /reports/fleet/locust-report.html --only-summary \
    --exit-code-on-error 0 "$@"
else
  locust -f "$file" --worker --master-host "${ATLS_FLEET_MASTER:-locust-master}" "$@"
fi
rc=$?
echo "locust $role: finished (exit $rc); staying up until compose stops the stack"
trap 'exit "$rc"' TERM INT
while :; do sleep 1; done
