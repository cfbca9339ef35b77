#!/bin/sh
# The middlebox on the constrained side: mitmdump in UDP reverse mode in front
# of the CoAP gateway, with the CoAP addon and the scenario's policy file.
set -eu
atls-testbed scenario-policy "${ATLS_SCENARIO:-constrained}" > /tmp/atls-policy.yaml
exec mitmdump --mode "reverse:udp://${GATEWAY_ADDRESS:-gateway:5683}@5683" \
  -s "$(dirname "$(atls-testbed addon-path)")/coap_script.py" \
  --set confdir=/tmp/mitm-udp \
  --set atls_policy=/tmp/atls-policy.yaml \
  --set atls_audit_log=/reports/coap-audit.jsonl \
  --set termlog_verbosity=info
