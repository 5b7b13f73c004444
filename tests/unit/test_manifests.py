"""The CRD: one source, the root crd.yaml generated from it, and a structural schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "config" / "crd" / "ephemeralvolumeclaims.yaml"


def load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def test_root_crd_yaml_is_generated_from_config() -> None:
    generated = (REPO / "crd.yaml").read_text()
    header, _, body = generated.partition("\n")
    assert header.startswith("# Generated from config/crd/ephemeralvolumeclaims.yaml")
    assert body == SOURCE.read_text(), "run `make manifests` after editing config/crd/"


def test_crd_names_match_the_seed() -> None:
    crd = load(SOURCE)
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["spec"]["group"] == "zalando.org"
    assert crd["spec"]["names"]["kind"] == "EphemeralVolumeClaim"
    assert crd["spec"]["names"]["shortNames"] == ["evc", "evcs"]
    [version] = crd["spec"]["versions"]
    assert version["name"] == "v1"
    assert version["subresources"] == {"status": {}}


def _assert_structural(schema: dict[str, Any], path: str) -> None:
    """Every node has a type; every field a person writes or reads has a description."""
    assert "type" in schema or schema.get("x-kubernetes-int-or-string"), f"{path} has no type"
    assert schema.get("description"), f"{path} has no description for `kubectl explain`"
    for name, child in schema.get("properties", {}).items():
        _assert_structural(child, f"{path}.{name}")
    if "items" in schema and "properties" in schema["items"]:
        _assert_structural(schema["items"], f"{path}[]")


def test_schema_is_structural_and_documented() -> None:
    [version] = load(SOURCE)["spec"]["versions"]
    schema = version["schema"]["openAPIV3Schema"]
    assert schema["type"] == "object"
    assert schema["description"]
    for field in ("spec", "status"):
        _assert_structural(schema["properties"][field], f"evc.{field}")
    assert schema["properties"]["spec"]["required"] == ["size"]


def test_seed_examples_are_kept() -> None:
    evc = load(REPO / "evc.yaml")
    assert evc == {"kind": "EphemeralVolumeClaim", "apiVersion": "zalando.org/v1",
                   "metadata": {"name": "my-claim-1"}, "spec": {"size": "1Gi"}}
    pod = load(REPO / "pod.yaml")
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "my-claim-1"
