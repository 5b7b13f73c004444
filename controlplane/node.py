"""A real node for a local control plane: containerd, runc, CNI, kube-scheduler, kubelet,
kube-proxy.

The node's images come from a registry of its own on loopback (`controlplane.registry`),
which containerd uses for every registry name, so nothing is pulled from outside;
`publish_image` adds one (the operator's) while it runs. Pods reach the API server through
the `kubernetes` Service (`controlplane.proxy`).
Volumes come from the in-tree host-path provisioner through a default StorageClass.
There is one node per machine: it owns `/kubepods`, the bridge and the node address
(`controlplane.host` lists every change to the host and how `stop` undoes it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from controlplane import host, nodeconfig, proxy, registry
from controlplane.binaries import NodeBinaries, cache_root, ensure_node_binaries, log
from controlplane.cluster import SERVICE_IP, ControlPlane
from controlplane.files import write_json
from controlplane.host import NodeError
from controlplane.images import write_images
from controlplane.processes import alive, free_port, spawn, terminate
from controlplane.supervisor import Supervisor

NODE_NAME = "evc-node"
STATE_FILE = "node.json"
REGISTRIES = ("_default", "docker.io", "registry.k8s.io")  # `_default`: any other name
STORAGE_CLASS = {
    "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
    "metadata": {"name": "standard",
                 "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
    "provisioner": "kubernetes.io/host-path", "reclaimPolicy": "Delete",
    "volumeBindingMode": "Immediate",
}
# Stopped in this order; the registry last, as containerd may still be pulling.
COMPONENTS = ("kubelet", "kube-proxy", "kube-scheduler", "containerd", "registry")

_SOURCES = str(Path(__file__).parents[1])  # where `python -m controlplane...` is found

__all__ = ["NODE_NAME", "Node", "NodeError", "undo_host_changes_of"]


@dataclasses.dataclass
class Node:
    """The node of the control plane whose state lives in `workdir`."""

    workdir: Path
    pids: dict[str, int] = dataclasses.field(default_factory=dict)
    shim: str = ""  # the containerd shim binary, whose processes outlive containerd
    commands: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    # What each component's environment adds to this process's (the registry's PYTHONPATH).
    environments: dict[str, dict[str, str] | None] = dataclasses.field(default_factory=dict)
    detached: bool = False  # its components outlive the process that started them
    supervisor_pid: int = 0  # a detached node's supervisor, a process of its own
    # Held while `pids` changes, once a supervisor keeps the components running.
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False,
                                             compare=False)
    supervisor: Supervisor | None = dataclasses.field(default=None, repr=False,
                                                       compare=False)

    @property
    def root(self) -> Path:
        return self.workdir / "node"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    @property
    def hostpath_dir(self) -> Path:
        return self.root / "volumes"

    @classmethod
    def start(cls, plane: ControlPlane, *, binaries: NodeBinaries | None = None,
              detached: bool = False, timeout: float = 120.0,
              progress: Callable[[str], None] = log) -> Node:
        """Start a node for `plane` (started `for_node=NODE_NAME`); wait until it is
        Ready and untainted, with a default StorageClass. A component that exits on its
        own is started again for as long as the node runs (`controlplane.supervisor`: a
        thread of this process, or if `detached` a process of its own), as systemd would
        on a node in production."""
        host.preflight()
        host.ensure_packages(progress)
        binaries = binaries or ensure_node_binaries()
        clean_up_leftovers()
        node = cls(workdir=plane.workdir, shim=str(binaries.containerd_shim),
                   detached=detached)
        shared = (host.CONTAINER_LOGS_DIR, host.CNI_CACHE_DIR, host.SHIM_SOCKETS_DIR,
                  host.HOSTPATH_DIR)  # removed at the end only if the node made them
        created = [str(path) for path in shared if not path.exists()]
        host.HostRecord(workdir=str(node.workdir), sysctls=host.read_sysctls(),
                        created=[*created, str(host.RUN_DIR)]).save(cache_root())
        try:
            node._start(plane, binaries, detached, time.monotonic() + timeout, progress)
            if detached:
                node.supervise_apart()
            else:
                node.supervise(progress=progress)
        except BaseException:
            node.stop()
            raise
        return node

    def _start(self, plane: ControlPlane, binaries: NodeBinaries, detached: bool,
               deadline: float, progress: Callable[[str], None]) -> None:
        started = time.monotonic()
        for sub in ("registry", "cni", "certs.d", "containerd", "kubelet", "pod-logs"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.hostpath_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        host.ip("addr", "add", f"{host.NODE_IP}/32", "dev", "lo")
        host.HOSTPATH_DIR.mkdir(exist_ok=True)
        _run_mount("--bind", str(self.hostpath_dir), str(host.HOSTPATH_DIR))
        (host.RUN_DIR / "kubelet").mkdir(mode=0o700, parents=True, exist_ok=True)
        _run_mount("--bind", str(self.root / "kubelet"), str(host.RUN_DIR / "kubelet"))

        write_images(self.root / "registry")
        registry_port = free_port()
        self._spawn("registry", detached, [sys.executable, "-m", "controlplane.registry",
                                           str(self.root / "registry"), str(registry_port)],
                    env={"PYTHONPATH": _SOURCES})
        self._wait(lambda: _listening(("127.0.0.1", registry_port)), deadline, "registry")
        self._write_registry_hosts(registry_port)
        self._write_cni_config()
        socket_path = _containerd_socket()
        config = self.root / "containerd.toml"
        config.write_text(nodeconfig.containerd_config(self.root, socket_path, binaries))
        self._spawn("containerd", detached, [str(binaries.containerd), "--config", str(config)])
        self._wait(lambda: _listening(socket_path), deadline, "containerd")

        self._spawn("kube-scheduler", detached, [
            str(binaries.kube_scheduler),
            f"--kubeconfig={self.workdir / 'kube-scheduler.kubeconfig'}",
            "--leader-elect=false", "--secure-port=0",
        ])
        kubelet_config = self.root / "kubelet.json"
        kubelet_config.write_text(json.dumps(nodeconfig.kubelet_config(self.root, socket_path),
                                             indent=2))
        self._spawn("kubelet", detached, [
            str(binaries.kubelet),
            f"--config={kubelet_config}",
            f"--kubeconfig={self.workdir / 'kubelet.kubeconfig'}",
            f"--root-dir={host.RUN_DIR / 'kubelet'}",
            f"--cert-dir={host.RUN_DIR / 'kubelet' / 'pki'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={host.NODE_IP}",
            "--v=1",
        ])
        proxy_config = self.root / "kube-proxy.json"
        proxy_config.write_text(json.dumps(proxy.configuration(
            self.workdir / "kube-proxy.kubeconfig", NODE_NAME, free_port(), free_port()),
            indent=2))
        self._spawn("kube-proxy", detached,
                    [str(binaries.kube_proxy), f"--config={proxy_config}", "--v=1"])
        self._wait(lambda: _ready_and_untainted(plane), deadline, "node Ready")
        plane.kubectl("apply", "-f", "-", input=json.dumps(STORAGE_CLASS))
        self._wait(lambda: proxy.routes_service(SERVICE_IP), deadline,
                   "kube-proxy's rules for the `kubernetes` Service")
        progress(f"node {NODE_NAME} Ready in {time.monotonic() - started:.1f} s")

    def publish_image(self, name: str, layout: Path, manifest: str) -> str:
        """Let the node pull the image `manifest` of the OCI layout `layout` as `name`
        (e.g. the operator's, as the chart and manifests name it) from its registry;
        return the repository it is served as."""
        return registry.publish(self.root / "registry", name, layout, manifest)

    def _spawn(self, name: str, detached: bool, command: list[str],
               env: dict[str, str] | None = None) -> None:
        self.commands[name] = command
        self.environments[name] = env
        self.pids[name] = spawn(command, self.logs / f"{name}.log", cwd=self.root,
                                detached=detached, env=dict(os.environ, **env) if env else None)
        self._save_state()  # at once: a crash of this process must not hide a pid

    def supervise(self, progress: Callable[[str], None] = log) -> None:
        """From now on, start again a component that exits on its own (in this process,
        until `stop`)."""
        self.supervisor = Supervisor(self, report=progress)
        self.supervisor.start()

    def supervise_apart(self) -> None:
        """The same, in a process of its own that outlives this one (a detached node's)."""
        self.supervisor_pid = spawn(
            [sys.executable, "-m", "controlplane", "supervise-node", "--dir", str(self.workdir)],
            self.logs / "supervisor.log", cwd=self.root, detached=True,
            env=dict(os.environ, PYTHONPATH=_SOURCES))
        self._save_state()

    def respawn(self, name: str) -> None:
        """Start `name` again with its command and environment (the lock held)."""
        with self.logs.joinpath(f"{name}.log").open("a") as sink:
            sink.write(f"----- {name} exited on its own: started again -----\n")
        self._spawn_again(name, self.detached)

    def _spawn_again(self, name: str, detached: bool) -> None:
        self._spawn(name, detached, self.commands[name], self.environments.get(name))

    # --- faults, for tests that prove the operator survives them ------------------------

    def stop_component(self, name: str) -> None:
        """Stop the kubelet or containerd abruptly (SIGKILL), as a crash would; running
        containers go on (their shims outlive containerd). It stays down (the supervisor
        leaves it) until `start_component`."""
        with self.lock:
            pid = self.pids.pop(name, None)
            if pid is not None:
                terminate(pid, grace=0)

    def start_component(self, name: str, timeout: float = 60) -> None:
        """Start a stopped component again, with the same flags (in this process only).

        containerd is waited for until its socket answers, as at the node's start: a
        kubelet started before then exits at once ("validate CRI v1 runtime API ...
        connection refused"). The supervisor starts such a kubelet again, but the node is
        whole sooner when the next step finds containerd answering."""
        with self.lock:
            self._spawn_again(name, False)
        if name == "containerd":
            self._wait(lambda: _listening(_containerd_socket()),
                       time.monotonic() + timeout, "containerd")

    def _wait(self, ready: Callable[[], bool], deadline: float, what: str) -> None:
        while not ready():
            for name, pid in ({} if self.supervisor else dict(self.pids)).items():
                if not alive(pid):  # a supervised component is started again instead
                    raise NodeError(f"{name} exited while waiting for {what}\n"
                                    + _tail(self.logs / f"{name}.log"))
            if time.monotonic() > deadline:
                raise NodeError(f"timed out waiting for {what}\n"
                                + "\n".join(_tail(self.logs / f"{name}.log")
                                            for name in self.pids))
            time.sleep(0.2)

    def _write_registry_hosts(self, port: int) -> None:
        server = f"http://127.0.0.1:{port}"
        for name in REGISTRIES:
            folder = self.root / "certs.d" / name
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "hosts.toml").write_text(
                f'server = "{server}"\n\n[host."{server}"]\n  capabilities = ["pull", "resolve"]\n')

    def _write_cni_config(self) -> None:
        (self.root / "cni" / "10-evc.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0", "name": host.CNI_NETWORK,
            "plugins": [
                # The bridge is the pods' default route: Service IPs are not on it.
                {"type": "bridge", "bridge": host.BRIDGE, "isDefaultGateway": True,
                 "ipMasq": False,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": host.POD_SUBNET}]],
                          "dataDir": str(self.root / "ipam")}},
            ],
        }, indent=2))

    # --- stop, and undo what the node did to the host ------------------------------------

    def stop(self) -> None:
        self.stop_supervisor()
        for name in COMPONENTS:
            pid = self.pids.pop(name, None)
            if pid is not None:
                if name == "containerd":
                    _stop_containers(self.shim)
                terminate(pid)
        _stop_containers(self.shim)
        undo_host_changes(self.workdir)
        (self.workdir / STATE_FILE).unlink(missing_ok=True)

    def stop_supervisor(self) -> None:
        """Stop the supervisor first, so that it starts nothing the stop ends; a detached
        node's may have started a component since this object read the state."""
        if self.supervisor is not None:
            self.supervisor.stop()
        if self.supervisor_pid:
            terminate(self.supervisor_pid)
            self.supervisor_pid = 0
            now = Node.load(self.workdir)
            if now is not None:
                self.pids = now.pids

    def _save_state(self) -> None:
        state = {"pids": self.pids, "shim": self.shim, "commands": self.commands,
                 "environments": self.environments, "detached": self.detached,
                 "supervisor_pid": self.supervisor_pid}
        write_json(self.workdir / STATE_FILE, state)  # two processes read it

    @classmethod
    def load(cls, workdir: Path) -> Node | None:
        path = workdir.resolve() / STATE_FILE
        if not path.exists():
            return None
        state = json.loads(path.read_text())
        return cls(workdir=workdir.resolve(), pids=dict(state["pids"]), shim=state["shim"],
                   commands=state.get("commands", {}),
                   environments=state.get("environments", {}),
                   detached=state.get("detached", False),
                   supervisor_pid=state.get("supervisor_pid", 0))

    def is_running(self) -> bool:
        return bool(self.pids) and all(alive(pid) for pid in self.pids.values())


def clean_up_leftovers() -> None:
    """Refuse to start beside a running node; undo what a crashed one left behind."""
    record = host.HostRecord.load(cache_root())
    if record is None:
        if host.has_node_address():
            raise NodeError(f"{host.NODE_IP} is already on `lo`, but no node of this project "
                            f"recorded it: another node runs here? Remove it with "
                            f"`ip addr del {host.NODE_IP}/32 dev lo` if not.")
        return
    previous = Node.load(Path(record.workdir))
    if previous is not None and previous.is_running():
        raise NodeError(f"a node is already running on this machine (state in "
                        f"{record.workdir}); there can be only one: stop it first with "
                        f"`python -m controlplane down --dir {record.workdir}` "
                        f"(`make cluster-down` in its checkout)")
    if previous is not None:
        previous.stop()
    else:
        undo_host_changes(Path(record.workdir))


def undo_host_changes_of(workdir: Path) -> None:
    """Undo what a node of `workdir` left on the host, if this machine's node was its."""
    record = host.HostRecord.load(cache_root())
    if record is not None and Path(record.workdir) == workdir.resolve():
        undo_host_changes(workdir.resolve())


def undo_host_changes(workdir: Path) -> None:
    """Undo everything a node of `workdir` changed on the host (idempotent)."""
    record = host.HostRecord.load(cache_root())
    host.kill_pod_processes()
    host.unmount_all(host.RUN_DIR, workdir, host.HOSTPATH_DIR)
    host.remove_pod_cgroups()
    if host.has_node_address():
        host.ip("addr", "del", f"{host.NODE_IP}/32", "dev", "lo")
    host.ip("link", "delete", host.BRIDGE, check=False)
    host.remove_proxy_tables()
    host.remove_container_log_links(workdir)
    host.remove_cni_cache()
    if record is not None and Path(record.workdir) == workdir:
        host.restore_sysctls(record.sysctls)
        host.remove_created(record.created)
        host.HostRecord.path(cache_root()).unlink(missing_ok=True)


def _stop_containers(shim: str) -> None:
    host.kill_pod_processes()
    if shim:
        host.kill_processes_of([Path(shim)])


def _run_mount(*args: str) -> None:
    result = subprocess.run(["mount", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise NodeError(f"`mount {' '.join(args)}` failed: {result.stderr.strip()}")


def _containerd_socket() -> Path:
    """Where containerd answers (the kubelet's CRI endpoint); read at each call, as
    tests move `host.RUN_DIR`."""
    return host.RUN_DIR / "containerd.sock"


def _listening(address: Path | tuple[str, int]) -> bool:
    family = socket.AF_UNIX if isinstance(address, Path) else socket.AF_INET
    with socket.socket(family) as sock, contextlib.suppress(OSError):
        sock.connect(str(address) if isinstance(address, Path) else address)
        return True
    return False


def _ready_and_untainted(plane: ControlPlane) -> bool:
    result = plane.kubectl_result("get", "node", NODE_NAME, "-o", "json")
    if result.returncode != 0:
        return False
    node = json.loads(result.stdout)
    ready = any(c["type"] == "Ready" and c["status"] == "True"
                for c in node.get("status", {}).get("conditions", []))
    return ready and not node.get("spec", {}).get("taints")


def _tail(path: Path, lines: int = 30) -> str:
    text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []
    return "\n".join([f"----- {path.name} -----", *text])
