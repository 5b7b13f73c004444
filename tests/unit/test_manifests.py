"""The CRD: one source, the root crd.yaml generated from it, and a structural schema."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from evc_operator.claims import MAX_LABEL_BYTES
from evc_operator.settings import MAX_DURATION, parse_duration
from evc_operator.status import Reason

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


def _version() -> dict[str, Any]:
    versions: list[dict[str, Any]] = load(SOURCE)["spec"]["versions"]
    [version] = versions
    return version


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = _version()["schema"]["openAPIV3Schema"]
    return schema


def test_printer_columns() -> None:
    columns = [(c["name"].upper(), c["type"], c["jsonPath"])
               for c in _version()["additionalPrinterColumns"]]
    assert columns == [
        ("SIZE", "string", ".spec.size"),
        ("PHASE", "string", ".status.phase"),
        ("REASON", "string", ".status.reason"),
        ("USERS", "integer", ".status.users"),
        # Not `date`: kubectl prints a date in the future as <invalid>.
        ("DELETES-AT", "string", ".status.deletesAt"),
        ("AGE", "date", ".metadata.creationTimestamp"),
    ]


def test_status_fields_are_exact() -> None:
    """A structural schema prunes what it does not declare: the operator's status must fit."""
    status = _schema()["properties"]["status"]["properties"]
    assert set(status) == {"phase", "reason", "users", "userNames", "unusedSince", "deletesAt",
                           "countdown", "observedGeneration", "conditions", "seal"}
    assert status["reason"]["enum"] == [str(reason) for reason in Reason]
    assert status["phase"]["type"] == "string"
    assert status["phase"]["enum"] == ["Pending", "InUse", "Idle", "Deleting"]
    assert status["users"]["type"] == "integer"
    assert status["userNames"]["type"] == "array"
    assert status["userNames"]["items"]["type"] == "string"
    assert "10" in status["userNames"]["description"]
    for timestamp in ("unusedSince", "deletesAt"):
        assert (status[timestamp]["type"], status[timestamp]["format"]) == ("string", "date-time")
    assert status["countdown"]["type"] == "string"
    assert status["countdown"]["enum"] == ["expiry", "grace"]
    assert (status["observedGeneration"]["type"],
            status["observedGeneration"]["format"]) == ("integer", "int64")
    assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]


def test_spec_fields() -> None:
    spec = _schema()["properties"]["spec"]["properties"]
    assert set(spec) == {"size", "storageClassName", "accessModes", "volumeMode",
                         "dataSourceRef", "selector", "expiryPeriod", "gracePeriod"}
    for period in ("expiryPeriod", "gracePeriod"):
        assert spec[period]["x-kubernetes-int-or-string"] is True
        assert spec[period]["pattern"] == DURATION_PATTERN
        assert spec[period]["maxLength"] == 64
    assert spec["accessModes"]["x-kubernetes-list-type"] == "set"
    assert (spec["accessModes"]["minItems"], spec["accessModes"]["maxItems"]) == (1, 4)
    expression = spec["selector"]["properties"]["matchExpressions"]["items"]
    assert expression["required"] == ["key", "operator"]
    assert expression["properties"]["operator"]["enum"] == ["In", "NotIn", "Exists",
                                                            "DoesNotExist"]


def _validations(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for rule in schema.get("x-kubernetes-validations", []):
        yield path, rule
    for name, child in schema.get("properties", {}).items():
        yield from _validations(child, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield from _validations(schema[key], f"{path}[]")


def test_every_rule_explains_itself() -> None:
    rules = list(_validations(_schema(), "evc"))
    assert len(rules) >= 12
    for path, rule in rules:
        assert rule.get("message") or rule.get("messageExpression"), f"{path}: {rule['rule']}"


def test_immutable_fields_are_guarded_on_spec() -> None:
    """On spec, not on the field: adding or removing the field is a change too."""
    rules = [rule for path, rule in _validations(_schema(), "evc") if path == "evc.spec"]
    guarded = {rule["fieldPath"].lstrip("."): rule for rule in rules}
    assert set(guarded) == {"storageClassName", "accessModes", "volumeMode", "dataSourceRef"}
    for field, rule in guarded.items():
        assert f"has(self.{field}) == has(oldSelf.{field})" in rule["rule"]
        assert f"spec.{field} is immutable" in rule["messageExpression"]


DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?|([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+)$"


def test_period_pattern_and_rule_agree() -> None:
    """The CEL rule repeats the pattern (to say what is wrong); they must not drift."""
    spec = _schema()["properties"]["spec"]["properties"]
    for period in ("expiryPeriod", "gracePeriod"):
        form, maximum = spec[period]["x-kubernetes-validations"]
        cel_literal = DURATION_PATTERN.replace("\\", "\\\\")
        assert f"self.matches('{cel_literal}')" in form["rule"]
        # The maximum's rule leaves a malformed value to the first rule's message.
        assert f"!self.matches('{cel_literal}')" in maximum["rule"]
        assert f"{MAX_DURATION:.0f}" in maximum["rule"]


@pytest.mark.parametrize("text", ["0", "30", "2.5", "90s", "15m", "1h30m", "1d", "500ms",
                                  "1.5h", "1d2h3m4s5ms"])
def test_period_pattern_accepts(text: str) -> None:
    assert re.fullmatch(DURATION_PATTERN[1:-1], text)
    assert parse_duration(text) >= 0


@pytest.mark.parametrize("text", ["", "soon", "-5s", "1h 30m", " 30", "30 ", "1e3", "+5",
                                  ".5", "5.", "1w", "h", "1.s", "inf"])
def test_period_pattern_rejects(text: str) -> None:
    assert not re.fullmatch(DURATION_PATTERN[1:-1], text)


UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_seconds(text: str) -> float:
    """A reference reading of the CRD's duration grammar, independent of the operator's."""
    if re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):
        return float(text)
    return sum(float(number) * UNIT_SECONDS[unit]
               for number, unit in re.findall(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)", text))


@given(st.from_regex(DURATION_PATTERN[1:-1], fullmatch=True).filter(lambda s: len(s) <= 64))
def test_what_admission_accepts_the_operator_parses(text: str) -> None:
    """Every period the API server admits (pattern, maxLength 64), the operator can read,
    or refuses as longer than 100 years (then reported in status, deletion paused)."""
    if parse_seconds(text) > MAX_DURATION:
        with pytest.raises(ValueError, match="100 years"):
            parse_duration(text)
    else:
        assert parse_duration(text) == pytest.approx(parse_seconds(text))


def test_the_label_size_policy_refuses_what_the_operator_would_not_copy() -> None:
    """config/admission's limit is the operator's own (claims.MAX_LABEL_BYTES), in the rule and
    in its message; it matches claims, not their status, and the default overlay ships it."""
    policy, binding = yaml.safe_load_all(
        (REPO / "config" / "admission" / "label_size_policy.yaml").read_text())
    [rule] = policy["spec"]["validations"]
    assert f"variables.labelBytes <= {MAX_LABEL_BYTES} ||" in rule["expression"]
    assert f"more than the {MAX_LABEL_BYTES} the operator copies" in rule["messageExpression"]
    [match] = policy["spec"]["matchConstraints"]["resourceRules"]
    assert match["resources"] == ["ephemeralvolumeclaims"]
    assert binding["spec"] == {"policyName": policy["metadata"]["name"],
                               "validationActions": ["Deny"]}
    assert "../admission" in load(REPO / "config" / "default" / "kustomization.yaml")[
        "resources"]
