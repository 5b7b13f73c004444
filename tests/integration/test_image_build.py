"""The operator's image, built for real from the Dockerfile (buildah; see controlplane.image).

Built once per content (the first session on a machine takes a few minutes, then it is
cached), then inspected: its configuration against the Dockerfile, its name against the
chart and manifests, the OCI layout's integrity, the virtualenv inside against
constraints.txt, the SBOM; and its entry point is run inside the image, as its user.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from controlplane.cluster import ControlPlane, free_port
from controlplane.image import Container, Image, container, ensure_image, image_config
from tests.integration.support import Kubectl, eventually
from tests.integration.test_image_command import EVC, healthz_status, with_liveness_port
from tests.unit.test_dockerfile import image_command, image_venv, liveness_url, read_stages

REPO = Path(__file__).resolve().parents[2]
PROJECT: dict[str, Any] = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def constraints() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        name, equals, version = line.partition("==")
        if equals and not line.startswith("#"):
            pins[normal(name)] = version.strip()
    return pins


def normal(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


@pytest.fixture(scope="module")
def image() -> Image:
    return ensure_image()


@pytest.fixture(scope="module")
def in_image(image: Image) -> Iterator[Container]:
    with container(image) as made:
        yield made


def blob(image: Image, digest: str) -> bytes:
    data = (image.layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()
    assert f"sha256:{hashlib.sha256(data).hexdigest()}" == digest, f"blob {digest} is corrupt"
    return data


def test_config_is_the_dockerfiles(image: Image) -> None:
    config = image_config(image)
    assert config["User"] == "65532:65532"
    stages = read_stages()
    final = stages[-1]
    assert config["Entrypoint"] == final.one("ENTRYPOINT").exec_form()
    assert config["Cmd"] == final.one("CMD").exec_form()
    assert [*config["Entrypoint"], *config["Cmd"]] == image_command(stages)
    environment = dict(entry.split("=", 1) for entry in config["Env"])
    assert environment["PATH"].startswith(f"{image_venv(stages)}/bin:")
    assert environment["PYTHONDONTWRITEBYTECODE"] == "1"
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == PROJECT["name"]
    assert set(config["ExposedPorts"]) >= {"8080/tcp"}


def test_named_as_the_chart_and_manifests_ask(image: Image) -> None:
    deployment = yaml.safe_load((REPO / "config/manager/deployment.yaml").read_text())
    (manager,) = deployment["spec"]["template"]["spec"]["containers"]
    kustomization = yaml.safe_load((REPO / "config/default/kustomization.yaml").read_text())
    (override,) = kustomization["images"]
    chart = yaml.safe_load((REPO / "charts/evc-operator/Chart.yaml").read_text())
    values = yaml.safe_load((REPO / "charts/evc-operator/values.yaml").read_text())
    # What the kubelet asks the runtime for, short names being under docker.io/library.
    expected = {f"docker.io/library/{manager['image']}",
                f"docker.io/library/{override['name']}:{override['newTag']}",
                f"docker.io/library/{values['image']['repository']}:{chart['appVersion']}"}
    assert expected == {image.name}


def test_archive_is_a_valid_oci_layout_of_the_image(image: Image, tmp_path: Path) -> None:
    with tarfile.open(image.archive) as archive:
        archive.extractall(tmp_path, filter="data")
    assert json.loads((tmp_path / "oci-layout").read_text())["imageLayoutVersion"] == "1.0.0"
    (entry,) = json.loads((tmp_path / "index.json").read_text())["manifests"]
    assert entry["digest"] == image.digest
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == image.name
    for path in tmp_path.rglob("*"):  # the archive holds the layout, byte for byte
        if path.is_file():
            twin = image.layout / path.relative_to(tmp_path)
            assert twin.read_bytes() == path.read_bytes(), path.relative_to(tmp_path)
    manifest = json.loads(blob(image, image.digest))
    config = json.loads(blob(image, manifest["config"]["digest"]))
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    assert len(manifest["layers"]) == len(config["rootfs"]["diff_ids"]) >= 2
    for layer in manifest["layers"]:
        assert len(blob(image, layer["digest"])) == layer["size"]


def test_venv_holds_the_operator_at_the_constraints_versions(in_image: Container) -> None:
    venv = image_venv()
    script = ("import importlib.metadata as m, json; "
              "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))")
    result = in_image.run([f"{venv}/bin/python", "-c", script])
    assert result.returncode == 0, result.stderr
    installed = {normal(name): version for name, version in json.loads(result.stdout).items()}
    assert installed.pop("evc-operator") == PROJECT["version"]
    for bootstrap in ("pip", "setuptools"):  # from `python -m venv`, not installed by pip
        installed.pop(bootstrap, None)
    pins = constraints()
    assert {name: pins.get(name) for name in installed} == installed, "unpinned or off-pin"
    assert {"kopf", "aiohttp", "pyyaml"} <= set(installed)


def test_bytecode_is_compiled_so_a_read_only_root_works(in_image: Container) -> None:
    script = ("import importlib.util, pathlib, evc_operator, kopf; missing = ["
              "str(p) for m in (evc_operator, kopf) "
              "for p in pathlib.Path(m.__file__).parent.rglob('*.py') "
              "if not pathlib.Path(importlib.util.cache_from_source(str(p))).is_file()]; "
              "print(len(missing), missing[:5])")
    result = in_image.run(["python", "-c", script])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("0 "), result.stdout
    writable = in_image.run(["python", "-c", "import os; print(os.access('/opt/venv', os.W_OK))"])
    assert writable.stdout.strip() == "False", "the operator's user could change its code"


def test_entry_point_starts_in_the_image_as_its_user(in_image: Container) -> None:
    user = in_image.run(["id", "-u"])
    assert user.stdout.strip() == "65532", user
    result = in_image.run([*image_command(), "--help"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: evc-operator run "), result.stdout
    for option in ("--all-namespaces", "--liveness"):
        assert option in result.stdout


def test_sbom_lists_the_python_and_debian_packages(image: Image) -> None:
    document = json.loads(image.sbom.read_text())
    assert document["spdxVersion"] == "SPDX-2.3"
    assert image.digest in document["documentNamespace"]
    purls = {ref["referenceLocator"] for package in document["packages"]
             for ref in package["externalRefs"]}
    pins = constraints()
    assert f"pkg:pypi/kopf@{pins['kopf']}" in purls
    assert f"pkg:pypi/aiohttp@{pins['aiohttp']}" in purls
    assert f"pkg:pypi/evc-operator@{PROJECT['version']}" in purls
    debian = {purl.split("@")[0].removeprefix("pkg:deb/debian/") for purl in purls
              if purl.startswith("pkg:deb/")}
    assert {"python3.11", "libc6", "ca-certificates", "libssl3"} <= debian
    ids = [package["SPDXID"] for package in document["packages"]]
    assert len(ids) == len(set(ids)) == len(document["relationships"])


def test_a_second_build_builds_nothing(image: Image) -> None:
    before = (image.archive.stat().st_mtime_ns, image.sbom.stat().st_mtime_ns)
    again = ensure_image()
    assert again == image
    assert (again.archive.stat().st_mtime_ns, again.sbom.stat().st_mtime_ns) == before


def test_the_image_runs_the_operator_against_the_control_plane(
        in_image: Container, control_plane: ControlPlane, namespace: str, kubectl: Kubectl,
        tmp_path: Path) -> None:
    """ENTRYPOINT + CMD in the image (only the liveness port made free, as in
    test_image_command.py): it serves /healthz and creates the claim's PVC."""
    port = free_port()
    command = with_liveness_port(image_command(), port)
    probe = f"http://127.0.0.1:{port}{urlsplit(liveness_url(command)).path}"
    config = tmp_path / "config"
    config.mkdir(mode=0o755)
    shutil.copy(control_plane.kubeconfig, config / "kubeconfig")
    (config / "kubeconfig").chmod(0o644)  # for the image's user; a test token only
    # Outside a cluster the sealing key is a file (signingkey.py): the image's user has no
    # home, so it goes where that user may write, as a user running the image would say.
    argv = in_image.argv(command, env={"KUBECONFIG": "/run/evc/kubeconfig",
                                       "METRICS_PORT": str(free_port()),
                                       "SIGNING_KEY_FILE": "/tmp/evc-operator/signing-key"},
                         volumes={config: "/run/evc"})
    logfile = tmp_path / "evc-operator.log"
    with logfile.open("ab") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        eventually(lambda: healthz_status(probe, process), timeout=90,
                   what=f"HTTP 200 from {probe}")
        kubectl("apply", "-f", "-", input=json.dumps({**EVC, "metadata": {"name": "in-image"}}))
        pvc = eventually(lambda: kubectl.get("pvc", "in-image"), timeout=60,
                         what="the claim's PVC")
        assert pvc is not None
    except AssertionError as error:
        raise AssertionError(f"{error}\n--- log ---\n{logfile.read_text(errors='replace')}"
                             ) from error
    finally:
        stop_group(process)


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """buildah run and the operator under it: their own process group, TERM then KILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(30)
