"""Bad input is rejected by the API server itself, with a message a person understands.

The CRD's schema and CEL rules do the work, so no operator runs here: every test
applies an EphemeralVolumeClaim with kubectl, as a user would, and reads what kubectl
printed. A rejected change must leave the stored object as it was.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from tests.integration.support import Kubectl


def evc(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "zalando.org/v1", "kind": "EphemeralVolumeClaim",
            "metadata": {"name": name}, "spec": spec}


def apply(kubectl: Kubectl, obj: dict[str, Any], *flags: str) -> subprocess.CompletedProcess[str]:
    return kubectl.run("apply", *flags, "-f", "-", input=json.dumps(obj))


def create(kubectl: Kubectl, obj: dict[str, Any]) -> dict[str, Any]:
    """Apply what must be admitted; return it as stored."""
    result = apply(kubectl, obj)
    assert result.returncode == 0, result.stderr
    stored = kubectl.get("evc", obj["metadata"]["name"])
    assert stored is not None
    return stored


def assert_rejected(result: subprocess.CompletedProcess[str], field: str,
                    *phrases: str) -> None:
    """kubectl failed, and its message names the field and says what is wrong."""
    assert result.returncode != 0, f"admitted, but should not be:\n{result.stdout}"
    assert f"{field}: " in result.stderr, result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr


def assert_not_created(kubectl: Kubectl, name: str) -> None:
    assert kubectl.get("evc", name) is None


def assert_unchanged(kubectl: Kubectl, before: dict[str, Any]) -> None:
    after = kubectl.get("evc", before["metadata"]["name"])
    assert after is not None
    assert after["spec"] == before["spec"]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


# --- size -------------------------------------------------------------------------------

def test_negative_size_string(kubectl: Kubectl) -> None:
    result = apply(kubectl, evc("neg", size="-1Gi"))
    assert_rejected(result, "spec.size", "spec.size must be greater than zero, got -1Gi")
    assert_not_created(kubectl, "neg")


def test_negative_size_integer(kubectl: Kubectl) -> None:
    result = apply(kubectl, evc("neg", size=-5))
    assert_rejected(result, "spec.size",
                    "spec.size must be at least 1 (an integer size is a number of bytes), "
                    "got -5")
    assert_not_created(kubectl, "neg")


def test_malformed_size(kubectl: Kubectl) -> None:
    result = apply(kubectl, evc("lots", size="lots"))
    assert_rejected(result, "spec.size",
                    'spec.size "lots" is not a quantity: use a number with an optional unit, '
                    "such as 1Gi, 500Mi or 10G")
    assert_not_created(kubectl, "lots")


@pytest.mark.parametrize("size", ["0", "0Gi", "0.0"])
def test_zero_size_string(kubectl: Kubectl, size: str) -> None:
    result = apply(kubectl, evc("zero", size=size))
    assert_rejected(result, "spec.size", f"spec.size must be greater than zero, got {size}")
    assert_not_created(kubectl, "zero")


@pytest.mark.parametrize("size", ["8Ei", "10Ei", "1e19"])
def test_size_beyond_what_a_pvc_can_request(kubectl: Kubectl, size: str) -> None:
    result = apply(kubectl, evc("huge", size=size))
    assert_rejected(result, "spec.size", "spec.size must be less than 8Ei")
    assert_not_created(kubectl, "huge")


def test_zero_size_integer(kubectl: Kubectl) -> None:
    result = apply(kubectl, evc("zero", size=0))
    assert_rejected(result, "spec.size", "spec.size must be at least 1")
    assert_not_created(kubectl, "zero")


def test_size_too_long(kubectl: Kubectl) -> None:
    result = apply(kubectl, evc("long", size="1" * 65))
    assert_rejected(result, "spec.size", "Too long: may not be more than 64 bytes")


def test_missing_size(kubectl: Kubectl) -> None:
    result = apply(kubectl, evc("nosize", storageClassName="fast"))
    assert_rejected(result, "spec.size", "Required value")
    assert_not_created(kubectl, "nosize")


def test_size_cannot_shrink(kubectl: Kubectl) -> None:
    before = create(kubectl, evc("shrink", size="2Gi"))
    result = apply(kubectl, evc("shrink", size="1Gi"))
    assert_rejected(result, "spec.size",
                    "spec.size cannot shrink (was 2Gi, requested 1Gi): volumes can only grow")
    assert_unchanged(kubectl, before)


def test_size_cannot_shrink_across_units(kubectl: Kubectl) -> None:
    """Compared as quantities, not as text: 1G is less than 1Gi."""
    before = create(kubectl, evc("shrink", size="1Gi"))
    result = apply(kubectl, evc("shrink", size="1G"))
    assert_rejected(result, "spec.size", "spec.size cannot shrink (was 1Gi, requested 1G)")
    assert_unchanged(kubectl, before)


def test_size_can_grow(kubectl: Kubectl) -> None:
    create(kubectl, evc("grow", size="1Gi"))
    grown = create(kubectl, evc("grow", size="2Gi"))
    assert grown["spec"]["size"] == "2Gi"
    same = create(kubectl, evc("grow", size=2 * 1024**3))  # the same quantity, in bytes
    assert same["spec"]["size"] == 2 * 1024**3


# --- immutable fields -------------------------------------------------------------------

def test_storage_class_cannot_change(kubectl: Kubectl) -> None:
    before = create(kubectl, evc("sc", size="1Gi", storageClassName="slow"))
    result = apply(kubectl, evc("sc", size="1Gi", storageClassName="fast"))
    assert_rejected(result, "spec.storageClassName",
                    'spec.storageClassName is immutable (was "slow", requested "fast"): '
                    "delete and recreate the EphemeralVolumeClaim to change it")
    assert_unchanged(kubectl, before)


def test_storage_class_cannot_be_added_later(kubectl: Kubectl) -> None:
    before = create(kubectl, evc("sc", size="1Gi"))
    result = apply(kubectl, evc("sc", size="1Gi", storageClassName="fast"))
    assert_rejected(result, "spec.storageClassName",
                    'spec.storageClassName is immutable (was unset, requested "fast")')
    assert_unchanged(kubectl, before)


def test_storage_class_cannot_be_removed(kubectl: Kubectl) -> None:
    before = create(kubectl, evc("sc", size="1Gi", storageClassName="slow"))
    result = apply(kubectl, evc("sc", size="1Gi"))
    assert_rejected(result, "spec.storageClassName",
                    'spec.storageClassName is immutable (was "slow", requested unset)')
    assert_unchanged(kubectl, before)


def test_access_modes_cannot_change(kubectl: Kubectl) -> None:
    before = create(kubectl, evc("am", size="1Gi", accessModes=["ReadWriteOnce"]))
    result = apply(kubectl, evc("am", size="1Gi", accessModes=["ReadWriteMany"]))
    assert_rejected(result, "spec.accessModes",
                    "spec.accessModes is immutable (was [ReadWriteOnce], requested "
                    "[ReadWriteMany]): delete and recreate the EphemeralVolumeClaim")
    assert_unchanged(kubectl, before)


def test_access_modes_may_be_reordered(kubectl: Kubectl) -> None:
    """A set: the same modes in another order are no change."""
    create(kubectl, evc("am", size="1Gi", accessModes=["ReadWriteOnce", "ReadOnlyMany"]))
    create(kubectl, evc("am", size="1Gi", accessModes=["ReadOnlyMany", "ReadWriteOnce"]))


def test_volume_mode_cannot_change(kubectl: Kubectl) -> None:
    before = create(kubectl, evc("vm", size="1Gi", volumeMode="Filesystem"))
    result = apply(kubectl, evc("vm", size="1Gi", volumeMode="Block"))
    assert_rejected(result, "spec.volumeMode",
                    'spec.volumeMode is immutable (was "Filesystem", requested "Block")')
    assert_unchanged(kubectl, before)


def test_data_source_ref_cannot_change(kubectl: Kubectl) -> None:
    source = {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "nightly"}
    before = create(kubectl, evc("ds", size="1Gi", dataSourceRef=source))
    result = apply(kubectl, evc("ds", size="1Gi", dataSourceRef={**source, "name": "weekly"}))
    assert_rejected(result, "spec.dataSourceRef",
                    "spec.dataSourceRef is immutable (was VolumeSnapshot nightly, requested "
                    "VolumeSnapshot weekly)")
    assert_unchanged(kubectl, before)


def test_other_fields_may_change_alongside(kubectl: Kubectl) -> None:
    """Immutability is per field: periods and the selector stay editable."""
    create(kubectl, evc("edit", size="1Gi", storageClassName="slow", gracePeriod="1m"))
    edited = create(kubectl, evc("edit", size="1Gi", storageClassName="slow",
                                 gracePeriod="1h", selector={"matchLabels": {"app": "x"}}))
    assert edited["spec"]["gracePeriod"] == "1h"


# --- periods ----------------------------------------------------------------------------

@pytest.mark.parametrize("field", ["expiryPeriod", "gracePeriod"])
@pytest.mark.parametrize("value", ["soon", "-5s", "1h 30m", ""])
def test_bad_duration_string(kubectl: Kubectl, field: str, value: str) -> None:
    result = apply(kubectl, evc("period", size="1Gi", **{field: value}))
    assert_rejected(result, f"spec.{field}",
                    f'spec.{field} "{value}" is not a duration: use seconds (30, 2.5) or '
                    "number-unit pairs with units ms, s, m, h, d (90s, 15m, 1h30m, 1d)")
    assert_not_created(kubectl, "period")


@pytest.mark.parametrize("field", ["expiryPeriod", "gracePeriod"])
def test_negative_duration_integer(kubectl: Kubectl, field: str) -> None:
    result = apply(kubectl, evc("period", size="1Gi", **{field: -1}))
    assert_rejected(result, f"spec.{field}", f"spec.{field} cannot be negative, got -1")
    assert_not_created(kubectl, "period")


@pytest.mark.parametrize("field", ["expiryPeriod", "gracePeriod"])
@pytest.mark.parametrize("value", [3153600001, "4000000000", "36501d", "36500d1ms",
                                   "1000000h", "3153600000.5"])
def test_a_period_above_the_maximum(kubectl: Kubectl, field: str, value: int | str) -> None:
    result = apply(kubectl, evc("period", size="1Gi", **{field: value}))
    assert_rejected(result, f"spec.{field}",
                    f'spec.{field} "{value}" is too long: the maximum is 100 years '
                    "(36500d, or 3153600000 seconds)")
    assert_not_created(kubectl, "period")


@pytest.mark.parametrize("value", [90, 0, "90s", "1h30m", "2.5", "1d", "500ms",
                                   3153600000, "36500d", "3153600000", "876000h"])
def test_good_durations_are_accepted(kubectl: Kubectl, value: int | str) -> None:
    stored = create(kubectl, evc("period", size="1Gi", expiryPeriod=value, gracePeriod=value))
    assert stored["spec"]["expiryPeriod"] == value
    assert stored["spec"]["gracePeriod"] == value


# --- what Kubernetes refuses in a PVC, refused with the claim ----------------------------

@pytest.mark.parametrize("name", ["Fast_SSD", "fast/ssd", "-fast", "fast."])
def test_storage_class_must_be_a_class_name(kubectl: Kubectl, name: str) -> None:
    result = apply(kubectl, evc("sc", size="1Gi", storageClassName=name))
    assert_rejected(result, "spec.storageClassName",
                    f'spec.storageClassName "{name}" is not a StorageClass name: use lowercase '
                    "letters, digits, '-' and '.', starting and ending with a letter or digit")
    assert_not_created(kubectl, "sc")


@pytest.mark.parametrize("name", ["", "fast", "fast-ssd.example.com", "a" * 253])
def test_storage_class_names_kubernetes_takes_are_accepted(kubectl: Kubectl,
                                                           name: str) -> None:
    """"" is Kubernetes' own: no class, no dynamic provisioning; it reaches the PVC as is."""
    stored = create(kubectl, evc("sc", size="1Gi", storageClassName=name))
    assert stored["spec"]["storageClassName"] == name


@pytest.mark.parametrize("modes", [["ReadWriteOncePod", "ReadWriteOnce"],
                                   ["ReadOnlyMany", "ReadWriteOncePod"]])
def test_read_write_once_pod_stands_alone(kubectl: Kubectl, modes: list[str]) -> None:
    result = apply(kubectl, evc("rwop", size="1Gi", accessModes=modes))
    assert_rejected(result, "spec.accessModes",
                    "spec.accessModes cannot combine ReadWriteOncePod with other modes (got "
                    f"[{', '.join(modes)}]): use ReadWriteOncePod alone")
    assert_not_created(kubectl, "rwop")
    stored = create(kubectl, evc("rwop", size="1Gi", accessModes=["ReadWriteOncePod"]))
    assert stored["spec"]["accessModes"] == ["ReadWriteOncePod"]


SNAPSHOT = {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "nightly"}


@pytest.mark.parametrize(("field", "message"), [
    ("kind", "spec.dataSourceRef.kind must not be empty: name the kind of the source"),
    ("name", "spec.dataSourceRef.name must not be empty: name the source object"),
])
def test_data_source_ref_needs_a_kind_and_a_name(kubectl: Kubectl, field: str,
                                                  message: str) -> None:
    result = apply(kubectl, evc("ds", size="1Gi", dataSourceRef={**SNAPSHOT, field: ""}))
    assert_rejected(result, f"spec.dataSourceRef.{field}", message)
    assert_not_created(kubectl, "ds")


@pytest.mark.parametrize("group", [None, ""])
def test_data_source_ref_without_a_group_is_a_pvc(kubectl: Kubectl,
                                                   group: str | None) -> None:
    """Kubernetes: the core group's one kind a volume can be made from is a PVC."""
    source: dict[str, Any] = {"kind": "VolumeSnapshot", "name": "nightly"}
    if group is not None:
        source["apiGroup"] = group
    result = apply(kubectl, evc("ds", size="1Gi", dataSourceRef=source))
    assert_rejected(result, "spec.dataSourceRef.kind",
                    "spec.dataSourceRef has no apiGroup, so its kind must be "
                    'PersistentVolumeClaim (the one core kind a volume can be made from), got '
                    '"VolumeSnapshot": set apiGroup, e.g. snapshot.storage.k8s.io')
    assert_not_created(kubectl, "ds")
    clone = {"kind": "PersistentVolumeClaim", "name": "template"}
    if group is not None:
        clone["apiGroup"] = group
    stored = create(kubectl, evc("ds", size="1Gi", dataSourceRef=clone))
    assert stored["spec"]["dataSourceRef"] == clone


def test_data_source_ref_group_must_be_an_api_group(kubectl: Kubectl) -> None:
    result = apply(kubectl, evc("ds", size="1Gi",
                                dataSourceRef={**SNAPSHOT, "apiGroup": "Snapshot.Storage"}))
    assert_rejected(result, "spec.dataSourceRef.apiGroup",
                    'spec.dataSourceRef.apiGroup "Snapshot.Storage" is not an API group')
    assert_not_created(kubectl, "ds")


# Not `namespace`: a parameter of that name would replace the fixture kubectl runs in.
@pytest.mark.parametrize("source_namespace", ["Backups", "backups.example", "-backups",
                                              "b" * 64])
def test_data_source_ref_namespace_must_be_a_namespace_name(kubectl: Kubectl,
                                                            source_namespace: str) -> None:
    result = apply(kubectl, evc("ds", size="1Gi",
                                dataSourceRef={**SNAPSHOT, "namespace": source_namespace}))
    assert_rejected(result, "spec.dataSourceRef.namespace")
    if len(source_namespace) <= 63:  # longer: the schema's maxLength speaks first
        assert (f'spec.dataSourceRef.namespace "{source_namespace}" is not a namespace name'
                in result.stderr), result.stderr
    assert_not_created(kubectl, "ds")


def test_data_source_ref_namespace_may_be_given_or_empty(kubectl: Kubectl) -> None:
    create(kubectl, evc("ds", size="1Gi", dataSourceRef={**SNAPSHOT, "namespace": "backups"}))
    create(kubectl, evc("ds2", size="1Gi", dataSourceRef={**SNAPSHOT, "namespace": ""}))


# --- selector ---------------------------------------------------------------------------

def selector_evc(*expressions: dict[str, Any]) -> dict[str, Any]:
    return evc("sel", size="1Gi", selector={"matchExpressions": list(expressions)})


@pytest.mark.parametrize("values", [None, []])
@pytest.mark.parametrize("operator", ["In", "NotIn"])
def test_selector_in_needs_values(kubectl: Kubectl, operator: str,
                                  values: list[str] | None) -> None:
    expression: dict[str, Any] = {"key": "app", "operator": operator}
    if values is not None:
        expression["values"] = values
    result = apply(kubectl, selector_evc(expression))
    assert_rejected(result, "spec.selector.matchExpressions[0].values",
                    f"operator {operator} needs at least one entry in values (label app)")
    assert_not_created(kubectl, "sel")


@pytest.mark.parametrize("operator", ["Exists", "DoesNotExist"])
def test_selector_exists_takes_no_values(kubectl: Kubectl, operator: str) -> None:
    good = {"key": "app", "operator": "In", "values": ["web"]}
    result = apply(kubectl, selector_evc(good, {"key": "tier", "operator": operator,
                                                "values": ["db"]}))
    assert_rejected(result, "spec.selector.matchExpressions[1].values",
                    f"operator {operator} takes no values: remove values (label tier)")
    assert_not_created(kubectl, "sel")


def test_selector_unknown_operator(kubectl: Kubectl) -> None:
    result = apply(kubectl, selector_evc({"key": "app", "operator": "Equals",
                                          "values": ["web"]}))
    assert_rejected(result, "spec.selector.matchExpressions[0].operator",
                    'Unsupported value: "Equals": supported values: "In", "NotIn", '
                    '"Exists", "DoesNotExist"')
    assert_not_created(kubectl, "sel")


def test_selector_expression_needs_a_key(kubectl: Kubectl) -> None:
    result = apply(kubectl, selector_evc({"operator": "Exists"}))
    assert_rejected(result, "spec.selector.matchExpressions[0].key", "Required value")


def test_selector_bad_label_key(kubectl: Kubectl) -> None:
    result = apply(kubectl, evc("sel", size="1Gi",
                                selector={"matchLabels": {"app": "web", "bad key!": "x"}}))
    assert_rejected(result, "spec.selector.matchLabels",
                    'spec.selector.matchLabels has an invalid label key "bad key!"')
    assert_not_created(kubectl, "sel")


# A prefix of 253 characters (a DNS subdomain) and a name of 63: the longest label key.
LONGEST_PREFIX = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
LONGEST_KEY = f"{LONGEST_PREFIX}/{'n' * 63}"
KEYS_KUBERNETES_REFUSES = [
    "n" * 64,  # a name longer than 63
    f"{LONGEST_PREFIX}e/app",  # a prefix longer than 253
    "Example.com/app",  # a prefix that is not a DNS subdomain
    "app-",  # a name that ends in '-'
    "example.com/",  # no name
]


@pytest.mark.parametrize("key", KEYS_KUBERNETES_REFUSES)
def test_selector_label_keys_are_kubernetes_label_keys(kubectl: Kubectl, key: str) -> None:
    """No pod can carry such a label, so the selector could never match it."""
    result = apply(kubectl, evc("sel", size="1Gi", selector={"matchLabels": {key: "x"}}))
    assert_rejected(result, "spec.selector.matchLabels",
                    f'spec.selector.matchLabels has an invalid label key "{key}": use a name '
                    "of at most 63 letters")
    result = apply(kubectl, selector_evc({"key": key, "operator": "Exists"}))
    assert_rejected(result, "spec.selector.matchExpressions[0].key",
                    f'spec.selector.matchExpressions has an invalid label key "{key}": use a '
                    "name of at most 63 letters")
    assert_not_created(kubectl, "sel")


def test_the_longest_label_key_is_accepted(kubectl: Kubectl) -> None:
    selector = {"matchLabels": {LONGEST_KEY: "x"},
                "matchExpressions": [{"key": LONGEST_KEY, "operator": "Exists"}]}
    stored = create(kubectl, evc("sel", size="1Gi", selector=selector))
    assert stored["spec"]["selector"] == selector


def test_good_selector_is_accepted(kubectl: Kubectl) -> None:
    selector = {"matchLabels": {"app": "web", "example.com/tier": "db"},
                "matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]},
                                     {"key": "env", "operator": "NotIn", "values": ["prod"]},
                                     {"key": "job", "operator": "Exists"},
                                     {"key": "skip", "operator": "DoesNotExist", "values": []}]}
    stored = create(kubectl, evc("sel", size="1Gi", selector=selector))
    assert stored["spec"]["selector"] == selector


# --- name, types, unknown fields --------------------------------------------------------

def test_name_must_be_a_pvc_name(kubectl: Kubectl) -> None:
    """The API server's own name check comes first; either way the name is named."""
    result = apply(kubectl, evc("Bad_Name", size="1Gi"))
    assert_rejected(result, "metadata.name", '"Bad_Name"')
    assert ("is not a valid PersistentVolumeClaim name" in result.stderr
            or "RFC 1123 subdomain" in result.stderr), result.stderr
    assert_not_created(kubectl, "Bad_Name")


def test_size_of_wrong_type(kubectl: Kubectl) -> None:
    result = apply(kubectl, evc("typed", size=True))
    assert_rejected(result, "spec.size", "must be of type integer,string")
    assert_not_created(kubectl, "typed")


def test_access_modes_of_wrong_type(kubectl: Kubectl) -> None:
    result = apply(kubectl, evc("typed", size="1Gi", accessModes="ReadWriteOnce"))
    assert_rejected(result, "spec.accessModes", "must be of type array")
    assert_not_created(kubectl, "typed")


def test_access_modes_empty_or_repeated(kubectl: Kubectl) -> None:
    result = apply(kubectl, evc("modes", size="1Gi", accessModes=[]))
    assert_rejected(result, "spec.accessModes", "should have at least 1 items")
    result = apply(kubectl, evc("modes", size="1Gi",
                                accessModes=["ReadWriteOnce", "ReadWriteOnce"]))
    assert_rejected(result, "spec.accessModes[1]", 'Duplicate value: "ReadWriteOnce"')
    assert_not_created(kubectl, "modes")


def test_unknown_field_is_an_error_with_strict_validation(kubectl: Kubectl) -> None:
    result = apply(kubectl, evc("typo", size="1Gi", sise="2Gi"), "--validate=strict")
    assert result.returncode != 0, result.stdout
    assert 'unknown field "spec.sise"' in result.stderr, result.stderr
    assert_not_created(kubectl, "typo")


@pytest.mark.parametrize("validate", ["--validate=false", "--validate=warn"])
def test_unknown_field_is_pruned_without_strict_validation(kubectl: Kubectl,
                                                           validate: str) -> None:
    result = apply(kubectl, evc("typo", size="1Gi", sise="2Gi"), validate)
    assert result.returncode == 0, result.stderr
    if validate == "--validate=warn":
        assert 'unknown field "spec.sise"' in result.stderr, result.stderr
    stored = kubectl.get("evc", "typo")
    assert stored is not None
    assert stored["spec"] == {"size": "1Gi"}


def test_printer_columns(kubectl: Kubectl) -> None:
    create(kubectl, evc("cols", size="1Gi"))
    header, row = kubectl("get", "evc").splitlines()
    assert header.split() == ["NAME", "SIZE", "PHASE", "REASON", "USERS", "DELETES-AT", "AGE"]
    assert row.split()[:2] == ["cols", "1Gi"]
