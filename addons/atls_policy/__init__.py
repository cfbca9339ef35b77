"""mitmproxy addons that recognise ATLS flows and apply a policy to them.

One concern each, as in mitmproxy's own ``addons/``, run in this order on
every flight: ``ATLSTracker`` (detection, sessions), ``ATLSEnforcer`` (the
policy decision), ``ATLSFaults`` (fault injection), ``ATLSAudit`` (audit log,
metrics, marks). They share what they learn through ``flow.metadata["atls"]``.
``ATLSView`` registers the content view that decodes ATLS in mitmproxy's UIs.
"""

from pathlib import Path

SCRIPT = Path(__file__).with_name("script.py")
"""The file to give ``mitmdump -s``."""


def default_addons() -> list[object]:
    """The ATLS addons, in the order their hooks must run."""
    from .audit import ATLSAudit  # noqa: PLC0415 - mitmproxy only where the addons run
    from .contentview import ATLSView  # noqa: PLC0415
    from .enforcement import ATLSEnforcer  # noqa: PLC0415
    from .faults import ATLSFaults  # noqa: PLC0415
    from .tracking import ATLSTracker  # noqa: PLC0415

    return [ATLSTracker(), ATLSEnforcer(), ATLSFaults(), ATLSAudit(), ATLSView()]
