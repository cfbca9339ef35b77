"""Entry point for ``mitmdump -s`` in UDP mode (the middlebox in front of the CoAP gateway).

    mitmdump --mode reverse:udp://GATEWAY:5683@5683 -s addons/atls_policy/coap_script.py \
             --set atls_policy=policy.yaml --set atls_audit_log=coap-audit.jsonl
"""

import sys
from pathlib import Path

try:
    import atls_policy  # noqa: F401 - installed
except ImportError:  # running from a checkout without installing
    _here = Path(__file__).resolve().parent
    sys.path[:0] = [str(_here.parent), str(_here.parent.parent)]

from atls_policy.coap import ATLSCoAP  # noqa: E402

addons = [ATLSCoAP()]
