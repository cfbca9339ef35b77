#!/bin/sh
# Run a one-shot step, mark it done, then idle until stopped. With
# `up --exit-code-from collector`, compose stops everything when any container
# exits; so one-shot steps stay up (healthy once done) and only the collector exits.
set -eu
rm -f /tmp/oneshot-done
"$@"
touch /tmp/oneshot-done
trap 'exit 0' TERM INT
while :; do sleep 1; done
