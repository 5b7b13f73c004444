"""Build the control plane's binaries from the pinned Go wrapper modules, once.

Binaries land in a cache outside the work tree, in a folder named after the
pinned versions and a digest of the wrapper's go.mod and go.sum, so a second
run (or a fresh clone on the same machine) costs nothing, and a new pin never
reuses an old build.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

GOMOD_DIR = Path(__file__).parent / "gomod"
HEARTBEAT_SECONDS = 30  # a cold build is silent for minutes: say it is still alive


@dataclasses.dataclass(frozen=True)
class Component:
    """One wrapper module and the binaries it builds."""

    name: str
    module: str  # the main module whose version is pinned in the wrapper's go.mod
    packages: tuple[str, ...]
    binaries: tuple[str, ...]  # the built files' names, in the order of `packages`
    tags: str = "selinux,notest"

    @property
    def wrapper(self) -> Path:
        return GOMOD_DIR / self.name

    def version(self) -> str:
        text = (self.wrapper / "go.mod").read_text()
        match = re.search(rf"^\s*(?:require\s+)?{re.escape(self.module)}\s+(v\S+)", text, re.M)
        if not match:
            raise RuntimeError(f"{self.wrapper}/go.mod does not pin {self.module}")
        return match.group(1)

    def cache_key(self) -> str:
        digest = hashlib.sha256()
        for name in ("go.mod", "go.sum"):
            digest.update((self.wrapper / name).read_bytes())
        return f"{self.name}-{self.version()}-{digest.hexdigest()[:12]}"

    def ldflags(self) -> str:
        if self.module.startswith("helm.sh/helm/"):
            # Without it `helm version` shows the source's placeholder ("v4.3"); Helm's
            # release Makefile stamps the same variables. The git commit is not known here.
            package = f"{self.module}/internal/version"
            return f"-s -w -X {package}.version={self.version()} -X {package}.gitTreeState=clean"
        if self.module == "github.com/prometheus/prometheus":
            # What `promtool --version` and `prometheus --version` say.
            release = prometheus_release(self.version())
            return f"-s -w -X github.com/prometheus/common/version.Version={release}"
        if self.module.startswith("github.com/containerd/"):
            # What `containerd --version` and the CRI version call report.
            return f"-s -w -X {self.module}/version.Version={self.version()}"
        if self.module != "k8s.io/kubernetes":
            return "-s -w"
        version = self.version()
        major, minor = version.lstrip("v").split(".")[:2]
        stamps = {"gitVersion": version, "gitMajor": major, "gitMinor": minor,
                  "gitTreeState": "clean"}
        flags = ["-s", "-w"]
        for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
            flags += [f"-X {package}.{key}={value}" for key, value in stamps.items()]
        return " ".join(flags)


def prometheus_release(version: str) -> str:
    """Prometheus 3's release of a version of its Go module: v0.316.0 is 3.16.0."""
    _, minor, patch = version.lstrip("v").split(".")
    return f"{int(minor) // 100}.{int(minor) % 100}.{patch}"


KUBERNETES = Component(
    name="kubernetes",
    module="k8s.io/kubernetes",
    packages=(
        "k8s.io/kubernetes/cmd/kube-apiserver",
        "k8s.io/kubernetes/cmd/kube-controller-manager",
        "k8s.io/kubernetes/cmd/kube-proxy",
        "k8s.io/kubernetes/cmd/kube-scheduler",
        "k8s.io/kubernetes/cmd/kubelet",
        "k8s.io/kubernetes/cmd/kubectl",
    ),
    binaries=("kube-apiserver", "kube-controller-manager", "kube-proxy", "kube-scheduler",
              "kubelet", "kubectl"),
)
ETCD = Component(
    name="etcd",
    module="go.etcd.io/etcd/server/v3",
    packages=("go.etcd.io/etcd/server/v3",),
    binaries=("etcd",),
)
HELM = Component(
    name="helm",
    module="helm.sh/helm/v4",
    packages=("helm.sh/helm/v4/cmd/helm",),
    binaries=("helm",),
)
# containerd 2.x, not Debian's 1.6: kubelet 1.37 warns that 1.6 does not implement the CRI
# RuntimeConfig call (it falls back to its own cgroupDriver setting, a fallback Kubernetes
# 1.38 is expected to drop); 2.x reports the cgroup driver itself.
CONTAINERD = Component(
    name="containerd",
    module="github.com/containerd/containerd/v2",
    packages=("github.com/containerd/containerd/v2/cmd/containerd",
              "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"),
    binaries=("containerd", "containerd-shim-runc-v2"),
    tags="no_btrfs,no_devmapper,no_zfs",
)
# promtool checks and unit-tests the chart's alerting rules; the server evaluates the
# dashboard's queries on real scrapes for its picture (python -m monitoring). No service
# discovery but static, file and HTTP targets (remove_all_sd): the cloud SDKs stay out.
PROMETHEUS = Component(
    name="prometheus",
    module="github.com/prometheus/prometheus",
    packages=("github.com/prometheus/prometheus/cmd/promtool",
              "github.com/prometheus/prometheus/cmd/prometheus"),
    binaries=("promtool", "prometheus"),
    tags="remove_all_sd",
)
COMPONENTS = (ETCD, KUBERNETES, HELM, CONTAINERD, PROMETHEUS)


@dataclasses.dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kubectl: Path
    helm: Path


@dataclasses.dataclass(frozen=True)
class NodeBinaries:
    """What a node runs besides the control plane (runc and CNI come from the host)."""

    kubelet: Path
    kube_scheduler: Path
    kube_proxy: Path
    containerd: Path
    containerd_shim: Path


def cache_root() -> Path:
    """Where built binaries live: EVC_CACHE_DIR, else the user's cache folder."""
    explicit = os.environ.get("EVC_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "evc-operator" / "controlplane"


def log(message: str) -> None:
    print(f"[controlplane] {message}", file=sys.stderr, flush=True)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise builds: two test runs starting at once must not build twice."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def go_environment() -> dict[str, str]:
    env = dict(os.environ)
    # The machine's own GOPROXY/GOSUMDB/GOFLAGS are kept: they are what reaches the registry.
    env.update(GOTOOLCHAIN="local", CGO_ENABLED="0", GOWORK="off")
    return env


def build(component: Component) -> Path:
    """Return the folder with the component's binaries, building them if absent."""
    target = cache_root() / component.cache_key()
    if all((target / name).is_file() for name in component.binaries):
        return target
    with _locked(cache_root() / f".{component.name}.lock"):
        if all((target / name).is_file() for name in component.binaries):
            return target  # another process built it while we waited
        if shutil.which("go") is None:
            raise RuntimeError("the Go toolchain ('go') is needed to build the control plane")
        staging = Path(tempfile.mkdtemp(prefix=f".{component.name}-", dir=cache_root()))
        log(f"building {', '.join(component.binaries)} {component.version()} "
            f"from Go modules (once per version; a cold build takes several minutes)")
        started = time.monotonic()
        # One package: -o names the file. Several: -o names the folder, go names each file
        # after its package folder (which is why those binaries keep their own names).
        output = (str(staging / component.binaries[0]) if len(component.packages) == 1
                  else f"{staging}/")
        command = ["go", "build", "-trimpath", "-tags", component.tags,
                   "-ldflags", component.ldflags(), "-o", output, *component.packages]
        output_log = staging / "build.log"
        with output_log.open("w") as sink:
            process = subprocess.Popen(command, cwd=component.wrapper, env=go_environment(),
                                       stdout=sink, stderr=subprocess.STDOUT)
            while process.poll() is None:
                try:
                    process.wait(timeout=HEARTBEAT_SECONDS)
                except subprocess.TimeoutExpired:
                    log(f"still building {component.name}: "
                        f"{time.monotonic() - started:.0f} s so far")
        if process.returncode != 0:
            failure = output_log.read_text(errors="replace")
            shutil.rmtree(staging, ignore_errors=True)
            raise RuntimeError(f"building {component.name} failed:\n{failure}")
        output_log.unlink()
        missing = [name for name in component.binaries if not (staging / name).is_file()]
        if missing:
            raise RuntimeError(f"building {component.name} produced no {', '.join(missing)}")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
        log(f"built {component.name} in {time.monotonic() - started:.0f} s into {target}")
        return target


def ensure_binaries() -> Binaries:
    etcd_dir = build(ETCD)
    kubernetes_dir = build(KUBERNETES)
    helm_dir = build(HELM)
    return Binaries(
        etcd=etcd_dir / "etcd",
        kube_apiserver=kubernetes_dir / "kube-apiserver",
        kube_controller_manager=kubernetes_dir / "kube-controller-manager",
        kubectl=kubernetes_dir / "kubectl",
        helm=helm_dir / "helm",
    )


def ensure_promtool() -> Path:
    return build(PROMETHEUS) / "promtool"


def ensure_prometheus() -> Path:
    return build(PROMETHEUS) / "prometheus"


def ensure_node_binaries() -> NodeBinaries:
    kubernetes_dir = build(KUBERNETES)
    containerd_dir = build(CONTAINERD)
    return NodeBinaries(
        kubelet=kubernetes_dir / "kubelet",
        kube_scheduler=kubernetes_dir / "kube-scheduler",
        kube_proxy=kubernetes_dir / "kube-proxy",
        containerd=containerd_dir / "containerd",
        containerd_shim=containerd_dir / "containerd-shim-runc-v2",
    )
