"""Entry point for ``mitmdump -s``: works from a checkout and from an installed package.

    mitmdump -s addons/atls_policy/script.py --set atls_policy=policy.yaml
    mitmdump -s "$(atls-testbed addon-path)" --set atls_policy=policy.yaml

mitmproxy loads this file as a standalone script (no package), so it imports
the package absolutely, adding the checkout to sys.path when not installed.
"""

import sys
from pathlib import Path

try:
    import atls_policy  # noqa: F401 - installed
except ImportError:  # running from a checkout without installing
    _here = Path(__file__).resolve().parent
    sys.path[:0] = [str(_here.parent), str(_here.parent.parent)]

from atls_policy.addon import ATLSPolicy  # noqa: E402
from atls_policy.contentview import ATLSView  # noqa: E402 - decoded ATLS in mitmproxy's UIs

addons = [ATLSPolicy(), ATLSView()]
