"""Names of the API resources the operator works with."""

from __future__ import annotations

GROUP = "zalando.org"
VERSION = "v1"
PLURAL = "ephemeralvolumeclaims"
KIND = "EphemeralVolumeClaim"
API_VERSION = f"{GROUP}/{VERSION}"
# On an EVC, any value but "false" pauses its deletion (evc.keeps).
KEEP_ANNOTATION = "evc.zalando.org/keep"

# Selectors for Kopf's decorators, fully qualified: @kopf.on.event(*EVC).
EVC = (GROUP, VERSION, PLURAL)
CRD = ("apiextensions.k8s.io", "v1", "customresourcedefinitions")
CRD_NAME = f"{PLURAL}.{GROUP}"
