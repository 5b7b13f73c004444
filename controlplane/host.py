"""What a node needs from, and changes on, the host, and how each change is undone.

A kubelet is not a tenant of a folder: it creates cgroups under `/kubepods`, mounts,
sets kernel parameters, and its network plugin makes a bridge. Every such change is
listed here with its undo, and `HostRecord` (a file outside the cluster folder) keeps
what was there before, so even a cluster whose folder is gone can be cleaned up.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

# Debian packages the node runs, and a file each one installs.
PACKAGES = {
    "runc": Path("/usr/sbin/runc"),
    "containernetworking-plugins": Path("/usr/lib/cni/bridge"),
    "busybox-static": Path("/bin/busybox"),
    "nftables": Path("/usr/sbin/nft"),  # kube-proxy's nftables mode runs `nft`
}
CNI_BIN_DIR = Path("/usr/lib/cni")
# The node's address: on `lo` (the kubelet refuses a loopback one), from TEST-NET-1,
# which is never routed. Pods get addresses from the benchmarking range on a bridge.
NODE_IP = "192.0.2.1"
POD_SUBNET = "198.18.0.0/24"
BRIDGE = "evc-cni0"
CNI_NETWORK = "evc-node"
# The in-tree host-path provisioner always creates volumes under this folder; the node
# bind-mounts a folder of the cluster's own there.
HOSTPATH_DIR = Path("/tmp/hostpath_pv")
CONTAINER_LOGS_DIR = Path("/var/log/containers")  # fixed in the kubelet
CNI_CACHE_DIR = Path("/var/lib/cni")  # libcni's default cache, used by containerd
SHIM_SOCKETS_DIR = Path("/run/containerd")  # fixed in containerd's shims
# Where containerd's sockets and the kubelet's root folder (a bind mount of the cluster
# folder's) are seen: both create Unix sockets, whose paths must be short (under 104
# bytes), which a cluster folder deep in a checkout or a test's temporary folder may not be.
RUN_DIR = Path("/run/evc-node")
POD_CGROUP = "kubepods"
MOUNTINFO = Path("/proc/self/mountinfo")
# Kernel parameters the kubelet (and the bridge plugin) set; restored on the way down.
SYSCTLS = ("vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
           "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes", "net/ipv4/ip_forward")


class NodeError(RuntimeError):
    """The node cannot start here; the message says why and what to do."""


def preflight() -> None:
    """Fail early, with the reason and the remedy, where a node cannot run."""
    if os.geteuid() != 0:
        raise NodeError("a node (kubelet, containerd) needs root: it creates cgroups, mounts "
                        "and network devices. Run `make cluster` (or the tests) as root, e.g. "
                        "in a disposable VM or CI machine; `make cluster NODE=0` "
                        "starts a control plane without a node as any user.")
    if not cgroup_mounts():
        raise NodeError("no cgroup file system is mounted under /sys/fs/cgroup; the kubelet "
                        "needs cgroups (v1 with cpu and memory, or v2). Mount them (systemd "
                        "does) or use a VM.")
    if shutil.which("ip") is None:
        raise NodeError("the `ip` command (Debian package iproute2) is needed")


def ensure_packages(log: Callable[[str], None]) -> None:
    """Install the node's Debian packages if any is missing (apt-get, as root)."""
    missing = [name for name, path in PACKAGES.items() if not path.exists()]
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise NodeError(f"missing {', '.join(missing)} and no apt-get to install them: "
                        f"install them with the system's package manager")
    log(f"installing Debian packages {' '.join(missing)} (once per machine)")
    command = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if subprocess.run(command, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise NodeError(f"apt-get could not install {' '.join(missing)}:\n{result.stderr}")


def cgroup_mounts() -> list[Path]:
    """Mount points of every cgroup hierarchy (v1 controllers and v2)."""
    mounts = []
    for line in MOUNTINFO.read_text().splitlines():
        fields = line.split(" - ")
        if len(fields) == 2 and fields[1].split()[0] in ("cgroup", "cgroup2"):
            mounts.append(Path(_unescape(line.split()[4])))
    return mounts


def mounts_under(*roots: Path) -> list[Path]:
    """Mount points at or under `roots`, deepest (latest) first."""
    found = []
    for line in MOUNTINFO.read_text().splitlines():
        point = Path(_unescape(line.split()[4]))
        if any(point == root or point.is_relative_to(root) for root in roots):
            found.append(point)
    return list(reversed(found))


def _unescape(field: str) -> str:
    return field.encode().decode("unicode_escape")


def unmount_all(*roots: Path) -> None:
    """Unmount everything at or under `roots`; raise if any mount stays."""
    for _ in range(10):
        points = mounts_under(*roots)
        if not points:
            return
        for point in points:
            if subprocess.run(["umount", str(point)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(point)], capture_output=True)
    if mounts_under(*roots):
        raise NodeError(f"could not unmount {', '.join(map(str, mounts_under(*roots)))}")


def kill_pod_processes() -> int:
    """SIGKILL every process in the pods' cgroups; return how many there were."""
    pids: set[int] = set()
    for mount in cgroup_mounts():
        for procs in (mount / POD_CGROUP).rglob("cgroup.procs"):
            try:
                pids.update(int(pid) for pid in procs.read_text().split())
            except OSError:
                continue
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


def remove_pod_cgroups(timeout: float = 10.0) -> None:
    """Remove the pods' cgroup tree in every hierarchy (leaves first)."""
    deadline = time.monotonic() + timeout
    for mount in cgroup_mounts():
        root = mount / POD_CGROUP
        while root.is_dir():
            folders = sorted((p for p in root.rglob("*") if p.is_dir()),
                             key=lambda p: len(p.parts), reverse=True)
            for folder in [*folders, root]:
                with contextlib.suppress(OSError):
                    folder.rmdir()
            if root.is_dir():
                if time.monotonic() > deadline:
                    raise NodeError(f"could not remove the cgroup {root}")
                kill_pod_processes()
                time.sleep(0.2)


def kill_processes_of(executables: list[Path]) -> None:
    """SIGKILL processes running one of `executables` (the node's container shims)."""
    wanted = {str(path) for path in executables}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "exe") in wanted:
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue


def ip(*args: str, check: bool = True) -> bool:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise NodeError(f"`ip {' '.join(args)}` failed: {result.stderr.strip()}")
    return result.returncode == 0


def has_node_address() -> bool:
    result = subprocess.run(["ip", "-o", "addr", "show", "dev", "lo"], capture_output=True,
                            text=True)
    return f" {NODE_IP}/" in result.stdout


def read_sysctls() -> dict[str, str]:
    values = {}
    for name in SYSCTLS:
        path = Path("/proc/sys") / name
        if path.exists():
            values[name] = path.read_text().strip()
    return values


def restore_sysctls(saved: dict[str, str]) -> None:
    for name, value in saved.items():
        path = Path("/proc/sys") / name
        try:
            if path.read_text().strip() != value:
                path.write_text(value)
        except OSError:
            continue


@dataclasses.dataclass
class HostRecord:
    """What the host looked like before the node, kept until the node is cleaned up."""

    workdir: str
    sysctls: dict[str, str]
    created: list[str]  # folders that did not exist before (removed if empty at the end)

    @staticmethod
    def path(cache: Path) -> Path:
        return cache / "node-host.json"

    @classmethod
    def load(cls, cache: Path) -> HostRecord | None:
        path = cls.path(cache)
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))

    def save(self, cache: Path) -> None:
        cache.mkdir(parents=True, exist_ok=True)
        self.path(cache).write_text(json.dumps(dataclasses.asdict(self), indent=2))


def remove_proxy_tables() -> None:
    """Delete kube-proxy's nftables tables (all it writes, in nftables mode), if any."""
    if not PACKAGES["nftables"].exists():
        return
    for family in ("ip", "ip6"):
        subprocess.run([str(PACKAGES["nftables"]), "delete", "table", family, "kube-proxy"],
                       capture_output=True, check=False)


def remove_container_log_links(workdir: Path) -> None:
    if not CONTAINER_LOGS_DIR.is_dir():
        return
    for link in CONTAINER_LOGS_DIR.iterdir():
        if link.is_symlink() and Path(os.readlink(link)).is_relative_to(workdir):
            link.unlink()


def remove_cni_cache() -> None:
    for folder in (CNI_CACHE_DIR / "results", CNI_CACHE_DIR / "networks" / CNI_NETWORK):
        if not folder.is_dir():
            continue
        if folder.name == CNI_NETWORK:
            shutil.rmtree(folder, ignore_errors=True)
            continue
        for entry in folder.glob(f"{CNI_NETWORK}-*"):
            entry.unlink(missing_ok=True)


def remove_created(folders: list[str]) -> None:
    """Remove folders the node created (they did not exist before it started); the
    host-path folder only if empty, as it is where volumes were mounted."""
    for name in folders:
        path = Path(name)
        if path == HOSTPATH_DIR:
            with contextlib.suppress(OSError):
                path.rmdir()
        elif path.is_dir() and not mounts_under(path):
            shutil.rmtree(path, ignore_errors=True)


def address_flags(node: str | None) -> list[str]:
    """kube-apiserver's address flags: loopback only without a node, else reachable by pods."""
    if not node:  # loopback only: no pod could use the `kubernetes` Service's endpoints
        return ["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none"]
    # Pods reach it through the `kubernetes` Service (kube-proxy on the node) at the node's
    # address, which the API server writes as the Service's endpoints; clients on the
    # machine keep 127.0.0.1. Every address, as hack/local-up-cluster.sh does.
    return ["--bind-address=0.0.0.0", f"--advertise-address={NODE_IP}"]
