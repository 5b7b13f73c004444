"""The Helm chart in charts/evc-operator, without a cluster or helm: its copies of config/
are current, and its values are documented and typed.

Rendering, linting and installing the chart: tests/integration/test_helm.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from evc_operator import customkinds

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "evc-operator"
HEADER = re.compile(r"# Generated from (?P<source>\S+) by 'make manifests'; edit that file\.")

# Every file the chart copies from config/ (`make manifests` writes them), and its source.
COPIES = {
    "crds/ephemeralvolumeclaims.yaml": "config/crd/ephemeralvolumeclaims.yaml",
    "files/rbac/cluster_role.yaml": "config/rbac/cluster_role.yaml",
    "files/rbac/leader_election_role.yaml": "config/rbac/leader_election_role.yaml",
    "files/rbac/users/evc_view.yaml": "config/rbac/users/evc_view.yaml",
    "files/rbac/users/evc_edit.yaml": "config/rbac/users/evc_edit.yaml",
    "files/rbac-namespaced/role.yaml": "config/rbac-namespaced/role.yaml",
    "files/rbac-namespaced/discovery_cluster_role.yaml":
        "config/rbac-namespaced/discovery_cluster_role.yaml",
    "files/admission/label_size_policy.yaml": "config/admission/label_size_policy.yaml",
    "files/signing-key/role.yaml": "config/signing-key/role.yaml",
}


def load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def test_chart_metadata() -> None:
    chart = load(CHART / "Chart.yaml")
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "evc-operator"
    assert chart["type"] == "application"
    assert chart["version"] == "0.1.0"
    assert chart["kubeVersion"] == ">=1.30.0-0"
    assert chart["description"]


def test_app_version_is_the_operators_and_the_image_tag_of_config() -> None:
    project = re.search(r'^version = "([^"]+)"$', (REPO / "pyproject.toml").read_text(), re.M)
    assert project
    [image] = load(REPO / "config/default/kustomization.yaml")["images"]
    assert load(CHART / "Chart.yaml")["appVersion"] == project.group(1) == image["newTag"]


@pytest.mark.parametrize(("copy", "source"), COPIES.items())
def test_copies_of_config_are_up_to_date(copy: str, source: str) -> None:
    header, _, body = (CHART / copy).read_text().partition("\n")
    match = HEADER.fullmatch(header)
    assert match, f"{copy} starts with {header!r}, not the generated-file header"
    assert match["source"] == source
    assert body == (REPO / source).read_text(), "run `make manifests` after editing config/"


def test_the_chart_crd_is_the_one_in_config() -> None:
    [crd] = [path.relative_to(CHART).as_posix() for path in (CHART / "crds").iterdir()]
    assert COPIES[crd] == "config/crd/ephemeralvolumeclaims.yaml"
    assert load(CHART / crd) == load(REPO / "config/crd/ephemeralvolumeclaims.yaml")


def test_every_file_under_files_is_a_copy_and_every_copy_is_read() -> None:
    """No hand-written rules hide in files/; no copy is left unused by the templates."""
    copied = {path.relative_to(CHART).as_posix()
              for path in (CHART / "files").rglob("*") if path.is_file()}
    assert copied == {copy for copy in COPIES if copy.startswith("files/")}
    templates = "".join(path.read_text() for path in (CHART / "templates").iterdir())
    read = set(re.findall(r'"(files/[^"]+)"', templates))
    assert read == copied


def test_the_makefile_writes_every_copy() -> None:
    """`make manifests` depends on each copy; its pattern rules map it to its source."""
    makefile = (REPO / "Makefile").read_text()
    listed = re.search(r"^CHART_COPIES :=((?:.*\\\n)*.*)$", makefile, re.M)
    assert listed
    copies = set(listed.group(1).replace("\\\n", " ").split())
    assert copies == {f"$(CHART)/{copy}" for copy in COPIES}
    assert re.search(r"^manifests: crd\.yaml \$\(CHART_COPIES\)", makefile, re.M)
    assert "CHART := charts/evc-operator" in makefile


def _helper(name: str) -> str:
    """The text of one `define` of templates/_helpers.tpl."""
    text = (CHART / "templates" / "_helpers.tpl").read_text()
    define = re.escape(f'{{{{- define "{name}" -}}}}\n')
    found = re.search(define + r"(.*?)\n\{\{- end \}\}\n\n", text, re.S)
    assert found, name
    return found.group(1)


USER_KIND_RULES = "evc-operator.userKindRules"


def test_the_templates_never_write_rbac_rules_themselves() -> None:
    """Rules come from files/ only: a rule written in a template could drift from config/.
    But userKinds' (USER_KINDS), which config/ cannot know: one helper writes them, and they
    grant list and watch, nothing more."""
    rules = _helper(USER_KIND_RULES)
    for path in (CHART / "templates").iterdir():
        text = path.read_text().replace(rules, "")
        assert "verbs" not in text, path.name
        assert "apiGroups" not in text, path.name
    assert rules.count('"verbs"') == 1
    assert '"verbs" (list "list" "watch")' in rules
    assert "resourceNames" not in rules


def test_user_kinds_are_granted_where_the_operator_watches() -> None:
    """In the ClusterRole, or in each served namespace's Role: where the operator lists
    pods, it lists the listed kinds' objects."""
    rbac = (CHART / "templates" / "rbac.yaml").read_text()
    for source, root in (("files/rbac/cluster_role.yaml", "."),
                         ('files/rbac-namespaced/role.yaml" "withoutLeases', "$")):
        rules = re.escape(f'include "evc-operator.rules" (list $ "{source}") | nindent 2 }}}}')
        grant = re.escape(f'{{{{- with include "{USER_KIND_RULES}" {root} }}}}')
        assert re.search(rf"{rules}\n *{grant}\n", rbac), source
    assert rbac.count(USER_KIND_RULES) == 3  # the two and the comment


def test_user_kinds_become_the_env_joined_by_commas() -> None:
    deployment = (CHART / "templates" / "deployment.yaml").read_text()
    assert re.search(r'\{\{- with \.Values\.userKinds \}\}\n +- name: USER_KINDS\n'
                     r' +value: \{\{ join "," \. \| quote \}\}\n +\{\{- end \}\}', deployment)


# The form the operator reads (kubectl's fully qualified resource) and examples.
USER_KINDS_ACCEPTED = ["workflows.v1alpha1.argoproj.io", "pipelineruns.v1.tekton.dev",
                       "taskruns.v1beta1.tekton.dev",
                       "sparkapplications.v1beta2.sparkoperator.k8s.io",
                       "scaledjobs.v1alpha1.keda.sh", "pytorchjobs.v1.kubeflow.org",
                       "jobsets.v1alpha2.jobset.x-k8s.io"]
USER_KINDS_REFUSED = ["workflows.argoproj.io", "workflows", "jobs.v1.batch", "pods.v1.",
                      "Workflows.v1alpha1.argoproj.io", "workflows.V1.argoproj.io",
                      "workflows.v1alpha.argoproj.io", "workflows.1.argoproj.io",
                      "workflows.v1alpha1.argoproj.io.", "-workflows.v1.argoproj.io",
                      "workflows.v1.argoproj.io,pipelineruns.v1.tekton.dev", " workflows.v1.a.io",
                      ""]


def test_the_schema_and_the_template_take_user_kinds_of_one_form() -> None:
    """The schema refuses a malformed entry before rendering; the template refuses the same
    (with --skip-schema-validation) by the same pattern."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    user_kinds = schema["properties"]["userKinds"]
    assert user_kinds["type"] == "array"
    assert user_kinds["uniqueItems"] is True
    pattern = user_kinds["items"]["pattern"]
    helper = re.search(r'regexMatch "((?:[^"\\]|\\.)*)" \.', _helper(USER_KIND_RULES))
    assert helper
    assert json.loads(f'"{helper.group(1)}"') == pattern  # a Go string literal, as JSON's
    for entry in USER_KINDS_ACCEPTED:
        assert re.search(pattern, entry), entry
    for entry in USER_KINDS_REFUSED:
        assert not re.search(pattern, entry), entry


def test_the_chart_takes_the_user_kinds_the_operator_takes() -> None:
    """An entry the schema accepts starts the operator, one it refuses would stop it (but
    the operator's own leniencies: spaces around an entry, an empty one, the comma that the
    chart's join puts in)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    pattern = schema["properties"]["userKinds"]["items"]["pattern"]
    for entry in USER_KINDS_ACCEPTED:
        assert [kind.name for kind in customkinds.parse(entry)] == [entry]
    for entry in USER_KINDS_REFUSED:
        if entry.strip() and entry == entry.strip() and "," not in entry:
            with pytest.raises(customkinds.BadUserKind):
                customkinds.parse(entry)
    assert [kind.name for kind in customkinds.parse(",".join(USER_KINDS_ACCEPTED))] == (
        USER_KINDS_ACCEPTED)
    assert all(re.search(pattern, entry) for entry in USER_KINDS_ACCEPTED)


def _documented_keys(text: str) -> tuple[list[str], list[str]]:
    """(every key in values.yaml as a dotted path, those without a comment right above)."""
    keys: list[str] = []
    undocumented: list[str] = []
    parents: list[tuple[int, str]] = []
    previous = ""
    for line in text.splitlines():
        key = re.match(r"^(?P<indent> *)(?P<key>[A-Za-z][\w.-]*):(?: |$)", line)
        if key and not line.lstrip().startswith("#"):
            indent = len(key["indent"])
            while parents and parents[-1][0] >= indent:
                parents.pop()
            # Keys inside a value the user replaces whole (resources, a map of labels) need
            # no comment each.
            inside_documented_value = any(name in ("resources", "labels")
                                          for _, name in parents)
            path = ".".join([name for _, name in parents] + [key["key"]])
            if not inside_documented_value:
                keys.append(path)
                if not previous.lstrip().startswith("#"):
                    undocumented.append(path)
            parents.append((indent, key["key"]))
        if line.strip():
            previous = line
    return keys, undocumented


def test_values_yaml_documents_every_key() -> None:
    keys, undocumented = _documented_keys((CHART / "values.yaml").read_text())
    assert undocumented == [], "every value needs a comment line right above it"
    values = load(CHART / "values.yaml")
    assert [key for key in keys if "." not in key] == list(values)
    assert set(values) >= {
        "image", "replicas", "leaderElection", "expiryPeriod", "gracePeriod",
        "countdownInterval", "dryRun", "watchNamespaces", "metrics", "logFormat", "resources",
        "nodeSelector", "tolerations", "affinity", "podAnnotations", "serviceAccount"}


def test_the_documentation_check_finds_an_undocumented_key() -> None:
    text = "# the image\nimage:\n  # its name\n  repository: x\n  tag: y\nreplicas: 2\n"
    keys, undocumented = _documented_keys(text)
    assert keys == ["image", "image.repository", "image.tag", "replicas"]
    assert undocumented == ["image.tag", "replicas"]


def test_default_values() -> None:
    values = load(CHART / "values.yaml")
    assert values["image"] == {"repository": "evc-operator", "tag": "",
                               "pullPolicy": "IfNotPresent"}
    assert values["replicas"] == 2
    assert values["leaderElection"] is True
    assert (values["expiryPeriod"], values["gracePeriod"], values["countdownInterval"]) == (
        "30s", "30s", "10s")
    assert values["dryRun"] is False
    assert values["watchNamespaces"] == []
    assert values["userKinds"] == []  # config/ lists no custom kind either
    assert {key: values["metrics"][key] for key in ("enabled", "port", "service")} == {
        "enabled": True, "port": 9090, "service": {"enabled": False}}
    assert values["logFormat"] == "full"  # Kopf's own default
    assert values["serviceAccount"] == {"create": True, "name": "", "annotations": {}}
    assert values["userRoles"] == {"create": True}
    # Everything that needs the Prometheus Operator or Grafana is off until asked for.
    assert not values["metrics"]["serviceMonitor"]["enabled"]
    assert not values["metrics"]["podMonitor"]["enabled"]
    assert not values["prometheusRule"]["enabled"]
    assert not values["grafanaDashboard"]["enabled"]
    assert values["grafanaDashboard"]["labels"] == {"grafana_dashboard": "1"}
    assert not values["podDisruptionBudget"]["enabled"]


def test_default_resources_are_those_of_config() -> None:
    deployment = load(REPO / "config/manager/deployment.yaml")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert load(CHART / "values.yaml")["resources"] == container["resources"]


def test_the_schema_covers_exactly_the_values() -> None:
    """values.schema.json rejects unknown keys, so it must know every documented one."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) - {"global"} == set(load(CHART / "values.yaml"))
    assert schema["properties"]["logFormat"]["enum"] == ["plain", "full", "json"]


def _schema_nodes(schema: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    nodes = [(path, schema)]
    for name, child in schema.get("properties", {}).items():
        nodes += _schema_nodes(child, f"{path}.{name}".lstrip("."))
    return nodes


def test_the_schema_describes_every_value() -> None:
    """`helm show values` comments aside, the schema says what each value is, for editors
    and for tools that read schemas."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    nodes = _schema_nodes(schema, "")[1:]
    assert len(nodes) > 60
    undescribed = [path for path, node in nodes if not node.get("description")]
    assert undescribed == []
    keys, _ = _documented_keys((CHART / "values.yaml").read_text())
    assert {path for path, _ in nodes} - {"global"} == set(keys)


def test_the_schema_duration_pattern_is_the_crds() -> None:
    """Periods the chart accepts are those a claim's spec accepts (and the operator reads)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    [as_text] = [choice for choice in schema["definitions"]["duration"]["oneOf"]
                 if choice["type"] == "string"]
    crd = load(REPO / "config/crd/ephemeralvolumeclaims.yaml")
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert as_text["pattern"] == spec["properties"]["expiryPeriod"]["pattern"]


def test_the_readme_tables_every_value() -> None:
    keys, _ = _documented_keys((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    tabled = re.findall(r"^\| `([^`]+)` \|", readme, re.M)
    # `resources` is one row: its keys are the Kubernetes ones.
    parents = ("image", "metrics", "metrics.service", "metrics.serviceMonitor",
               "metrics.podMonitor", "prometheusRule", "grafanaDashboard", "podDisruptionBudget",
               "serviceAccount", "userRoles", "admissionPolicy")
    assert tabled == [key for key in keys if key not in parents]
