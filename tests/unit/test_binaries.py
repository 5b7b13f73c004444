"""The helm and prometheus wrapper modules: each go.mod's pin drives the build's stamp and
cache folder."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from controlplane import binaries
from controlplane.binaries import COMPONENTS, HELM, PROMETHEUS, prometheus_release
from controlplane.pin import helm_gomod, prometheus_gomod


def _pinned(gomod: str, module: str) -> str:
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", gomod, re.M)
    assert match, f"{module} is not required"
    return match.group(1)


def test_helm_version_and_cache_key_come_from_its_gomod() -> None:
    gomod = (HELM.wrapper / "go.mod").read_text()
    version = _pinned(gomod, "helm.sh/helm/v4")
    assert HELM.version() == version
    assert f"// Regenerate with: python -m controlplane pin helm {version}\n" in gomod
    assert re.fullmatch(rf"helm-{re.escape(version)}-[0-9a-f]{{12}}", HELM.cache_key())


def test_another_pin_gives_another_version_and_cache_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = HELM.cache_key()
    shutil.copytree(HELM.wrapper, tmp_path / "helm")
    gomod = tmp_path / "helm" / "go.mod"
    gomod.write_text(gomod.read_text().replace(f"helm.sh/helm/v4 {HELM.version()}",
                                               "helm.sh/helm/v4 v4.99.0"))
    monkeypatch.setattr(binaries, "GOMOD_DIR", tmp_path)
    assert HELM.version() == "v4.99.0"
    assert HELM.cache_key().startswith("helm-v4.99.0-")
    assert HELM.cache_key()[-12:] != before[-12:]
    assert "helm.sh/helm/v4/internal/version.version=v4.99.0" in HELM.ldflags().split()


def test_helm_is_stamped_with_its_pinned_version() -> None:
    flags = HELM.ldflags().split()
    assert f"helm.sh/helm/v4/internal/version.version={HELM.version()}" in flags
    assert HELM in COMPONENTS
    assert HELM.binaries == ("helm",)


def test_helm_wrapper_keeps_to_its_own_module() -> None:
    """Helm's k8s.io libraries are resolved in its wrapper, never in the Kubernetes one."""
    gomod = (HELM.wrapper / "go.mod").read_text()
    assert "module evc-operator/controlplane/helm\n" in gomod
    assert "\ntool helm.sh/helm/v4/cmd/helm\n" in gomod
    assert "k8s.io/kubernetes " not in gomod
    assert "\nreplace" not in gomod


def test_pin_template_names_its_regenerate_command() -> None:
    text = helm_gomod("v4.9.9")
    assert "// Regenerate with: python -m controlplane pin helm v4.9.9\n" in text
    assert text.endswith("require helm.sh/helm/v4 v4.9.9\n")
    with pytest.raises(ValueError, match=re.escape("helm.sh/helm/v4")):
        helm_gomod("v3.22.0")


def test_prometheus_is_pinned_and_stamped_with_its_release() -> None:
    """Module v0.X.Y of github.com/prometheus/prometheus is Prometheus 3.X'.Y (v0.316.0:
    3.16.0); the build says so in `promtool --version`, without the cloud discoveries."""
    gomod = (PROMETHEUS.wrapper / "go.mod").read_text()
    version = _pinned(gomod, "github.com/prometheus/prometheus")
    assert PROMETHEUS.version() == version
    assert prometheus_gomod(version).split("\nrequire")[0] in gomod
    assert (f"github.com/prometheus/common/version.Version={prometheus_release(version)}"
            in PROMETHEUS.ldflags())
    assert prometheus_release("v0.316.0") == "3.16.0"
    assert prometheus_release("v0.300.1") == "3.0.1"
    assert PROMETHEUS in COMPONENTS
    assert PROMETHEUS.binaries == ("promtool", "prometheus")
    assert "remove_all_sd" in PROMETHEUS.tags.split(",")
