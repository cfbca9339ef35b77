#!/usr/bin/env python3
"""The LAN's subnet and the service's LAN-side address, found at run time.

Docker assigns each compose project its own subnets (no fixed ones, so runs
coexist). Transparent mode still needs an address on the LAN that stands for
the service (devices route it via the middlebox): both the middlebox and the
devices derive it the same way from the LAN subnet, as its last host address
(Docker hands out addresses from the bottom, so nothing holds it).

    netinfo.py PEER_IP      prints "SUBNET SERVICE_VIP" for the local interface
                            on PEER_IP's subnet (exit 1 if none)
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys


def local_networks(ip_json: str) -> list[ipaddress.IPv4Interface]:
    """This host's IPv4 interfaces, from ``ip -4 -j addr show``."""
    found = []
    for link in json.loads(ip_json):
        for addr in link.get("addr_info", []):
            if addr.get("family") == "inet":
                found.append(ipaddress.IPv4Interface(f"{addr['local']}/{addr['prefixlen']}"))
    return found


def service_vip(network: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    """The last host address of the LAN: the service's stand-in for routed devices."""
    return network.broadcast_address - 1


def lan_for(peer: str, interfaces: list[ipaddress.IPv4Interface]) -> ipaddress.IPv4Network:
    address = ipaddress.IPv4Address(peer)
    for iface in interfaces:
        if address in iface.network and not iface.network.is_loopback:
            return iface.network
    raise LookupError(f"no local interface on the subnet of {peer}")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    ip_json = subprocess.run(
        ["ip", "-4", "-j", "addr", "show"], capture_output=True, text=True, check=True
    ).stdout
    try:
        network = lan_for(argv[0], local_networks(ip_json))
    except LookupError as exc:
        print(f"netinfo: {exc}", file=sys.stderr)
        return 1
    print(network, service_vip(network))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
