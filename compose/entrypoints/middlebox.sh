#!/bin/sh
# The middlebox: mitmdump (or mitmweb with MIDDLEBOX_UI=1) with the ATLS policy addon.
# MIDDLEBOX_MODE=explicit (devices use it as their proxy) or transparent (the
# devices' default route points here; TLS to the service port is redirected).
set -eu
MODE="${MIDDLEBOX_MODE:-explicit}"
atls-testbed scenario-policy "${ATLS_SCENARIO:-bootstrap}" > /tmp/atls-policy.yaml
set -- -s "$(atls-testbed addon-path)" \
  --set confdir=/mitm \
  --set atls_policy=/tmp/atls-policy.yaml \
  --set atls_audit_log=/reports/audit.jsonl \
  --set ssl_verify_upstream_trusted_ca=/pki/vendor-ca.pem \
  --set termlog_verbosity=info --listen-port 8080
if [ "$MODE" = "transparent" ]; then
  # Devices reach the service at a LAN-side address (SERVICE_VIP) routed via
  # this box (Docker's internal networks drop packets addressed outside their
  # subnet, so the WAN address cannot be the devices' destination). TLS to it
  # goes to mitmproxy's transparent listener; mitmproxy's own onward
  # connection to SERVICE_VIP is NATed to the service's WAN address.
  # Subnets are Docker's choice per project (runs coexist), so the addresses
  # are found here: the service by name on the WAN, the LAN by this box's
  # LAN-only alias `middlebox-lan`, the VIP as the LAN's last host address
  # (the devices derive the same one).
  port="${SERVICE_PORT:-8443}"
  SERVICE_WAN_IP="${SERVICE_WAN_IP:-$(getent ahostsv4 atls-service | awk '{print $1; exit}')}"
  lan_ip="$(getent ahostsv4 middlebox-lan | awk '{print $1; exit}')"
  if [ -z "$SERVICE_WAN_IP" ] || [ -z "$lan_ip" ]; then
    echo "middlebox: cannot resolve atls-service ($SERVICE_WAN_IP) or middlebox-lan ($lan_ip)" >&2
    exit 2
  fi
  lan="$(python3 /opt/atls-compose/netinfo.py "$lan_ip")"
  LAN_SUBNET="${lan% *}" SERVICE_VIP="${lan#* }"
  echo "middlebox: transparent, LAN $LAN_SUBNET (this box $lan_ip, service VIP $SERVICE_VIP)," \
    "service WAN $SERVICE_WAN_IP"
  iptables -t nat -A PREROUTING -s "$LAN_SUBNET" -d "$SERVICE_VIP" -p tcp --dport "$port" \
    -j REDIRECT --to-port 8080
  iptables -t nat -A OUTPUT -d "$SERVICE_VIP" -p tcp --dport "$port" \
    -j DNAT --to-destination "$SERVICE_WAN_IP:$port"
  # The socket picked its LAN source address before the DNAT: answer from the WAN side.
  iptables -t nat -A POSTROUTING -d "$SERVICE_WAN_IP" -p tcp --dport "$port" -j MASQUERADE
  set -- "$@" --mode transparent --showhost
elif [ "$MODE" != "explicit" ]; then
  echo "middlebox: MIDDLEBOX_MODE must be explicit or transparent, not $MODE" >&2
  exit 2
fi
if [ "${MIDDLEBOX_UI:-0}" = "1" ]; then
  exec mitmweb --web-host 0.0.0.0 --web-port 8081 --no-web-open-browser \
    --set web_password="${MITMWEB_PASSWORD:-atls}" "$@"
fi
exec mitmdump "$@"
