from __future__ import annotations

from typing import Any

from evc_operator.claims import desired_pvc, is_owned_by, owner_reference


def make_evc(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "zalando.org/v1", "kind": "EphemeralVolumeClaim",
        "metadata": {"name": "scratch", "namespace": "jobs", "uid": "uid-1",
                     "labels": {"team": "data"}},
        "spec": {"size": "1Gi", **spec},
    }


def test_pvc_has_the_evc_name_namespace_labels_and_size() -> None:
    pvc = desired_pvc(make_evc())
    assert pvc["metadata"]["name"] == "scratch"
    assert pvc["metadata"]["namespace"] == "jobs"
    assert pvc["metadata"]["labels"] == {"team": "data"}
    assert pvc["spec"] == {"accessModes": ["ReadWriteOnce"],
                           "resources": {"requests": {"storage": "1Gi"}}}


def test_pvc_is_controlled_by_the_evc() -> None:
    pvc = desired_pvc(make_evc())
    assert pvc["metadata"]["ownerReferences"] == [{
        "apiVersion": "zalando.org/v1", "kind": "EphemeralVolumeClaim", "name": "scratch",
        "uid": "uid-1", "controller": True, "blockOwnerDeletion": True}]
    assert is_owned_by(pvc, "uid-1")
    assert not is_owned_by(pvc, "uid-2")


def test_integer_sizes_become_quantities() -> None:
    assert desired_pvc(make_evc(size=1048576))["spec"]["resources"]["requests"] == {
        "storage": "1048576"}


def test_optional_fields_are_copied_only_when_given() -> None:
    source = {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "snap"}
    spec = desired_pvc(make_evc(storageClassName="fast", accessModes=["ReadWriteMany"],
                                volumeMode="Block", dataSourceRef=source))["spec"]
    assert spec["storageClassName"] == "fast"
    assert spec["accessModes"] == ["ReadWriteMany"]
    assert spec["volumeMode"] == "Block"
    assert spec["dataSourceRef"] == source


def test_labels_are_copied_not_shared() -> None:
    evc = make_evc()
    desired_pvc(evc)["metadata"]["labels"]["extra"] = "x"
    assert evc["metadata"]["labels"] == {"team": "data"}


def test_a_non_controller_reference_does_not_make_it_ours() -> None:
    reference = {**owner_reference(make_evc()), "controller": False}
    assert not is_owned_by({"metadata": {"ownerReferences": [reference]}}, "uid-1")
    assert not is_owned_by({"metadata": {}}, "uid-1")
