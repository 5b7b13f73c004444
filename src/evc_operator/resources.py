"""Names of the API resources the operator works with."""

from __future__ import annotations

import kopf

GROUP = "zalando.org"
VERSION = "v1"
PLURAL = "ephemeralvolumeclaims"
KIND = "EphemeralVolumeClaim"
API_VERSION = f"{GROUP}/{VERSION}"

EVC = kopf.Resource(GROUP, VERSION, PLURAL)
PVC = kopf.Resource("", "v1", "persistentvolumeclaims")
