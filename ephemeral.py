"""Entry point for `kopf run ephemeral.py`: loads the operator's handlers.

The operator itself is the `evc_operator` package (src/evc_operator); this file
only makes the seed's command work from a checkout, installed or not.
"""

import sys
from pathlib import Path

try:
    import evc_operator.handlers  # registers the Kopf handlers
except ModuleNotFoundError as error:
    if error.name != "evc_operator":
        raise
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
    import evc_operator.handlers  # noqa: F401
