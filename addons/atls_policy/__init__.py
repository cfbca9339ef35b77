"""mitmproxy addon: recognise ATLS flows and apply a policy (see ``addon.py``)."""

from pathlib import Path

SCRIPT = Path(__file__).with_name("script.py")
"""The file to give ``mitmdump -s``."""
