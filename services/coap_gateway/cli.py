"""``atls-gateway``: run the CoAP gateway."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    raise SystemExit("atls-gateway: not built yet")
