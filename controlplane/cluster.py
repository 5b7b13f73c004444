"""Start and stop a real Kubernetes control plane on loopback.

etcd -> kube-apiserver -> kube-controller-manager, each a child process with
its own log file, all on free ports, all state in one folder. Alone, it has no
kubelet and no scheduler: pods stay Pending unless a test patches their status.
Started `for_node`, it is ready for `controlplane.node` to add both.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import secrets
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from controlplane import auditing
from controlplane.binaries import Binaries, ensure_binaries
from controlplane.files import write_json
from controlplane.host import NODE_IP, address_flags
from controlplane.kubectl import checked, wait_established, write_kubeconfig
from controlplane.pki import write_service_account_keys, write_serving_certificate
from controlplane.processes import alive, free_port, spawn, terminate

__all__ = ["ControlPlane", "ControlPlaneError", "free_port"]

# The controllers whose behaviour the operator relies on (or tests exercise).
CONTROLLERS = (
    "garbage-collector-controller",
    "persistentvolumeclaim-protection-controller",
    "persistentvolume-protection-controller",
    "persistentvolume-binder-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "job-controller",
    "ttl-after-finished-controller",
    # Folds evc-view and evc-edit (config/rbac/users/) into the built-in view/edit/admin.
    "clusterrole-aggregation-controller",
    # Computes a ResourceQuota's usage: without it the API server refuses every object the
    # quota counts ("status unknown for quota"), not only those that exceed it.
    "resourcequota-controller",
)
# What a real node needs besides: the not-ready taint removed once the kubelet reports
# Ready, the `kube-root-ca.crt` ConfigMap projected ServiceAccount volumes mount, and
# Deployments (the operator's own) that make pods. Without a node no pod would run, and
# tests there set the status of the workloads they make themselves.
NODE_CONTROLLERS = ("node-lifecycle-controller", "root-ca-certificate-publisher-controller",
                    "deployment-controller", "replicaset-controller")
NODE_USERS = {  # identities the node's components use; the kubelet's is its node's
    "kube-scheduler": 'system:kube-scheduler,scheduler-uid',
    "kubelet": 'system:node:{node},kubelet-uid,"system:nodes,system:masters"',
    "kube-proxy": "system:kube-proxy,kube-proxy-uid",  # bound to system:node-proxier
}
SERVICE_CIDR = "10.0.0.0/24"
# The `kubernetes` Service's cluster IP: the range's first address.
SERVICE_IP = str(next(ipaddress.ip_network(SERVICE_CIDR).hosts()))
STATE_FILE = "controlplane.json"


class ControlPlaneError(RuntimeError):
    """The control plane did not start; the message carries the component logs."""


@dataclasses.dataclass
class ControlPlane:
    """A running (or stopped) control plane whose state lives in `workdir`."""

    workdir: Path
    api_port: int
    admin_token: str
    pids: dict[str, int] = dataclasses.field(default_factory=dict)
    kubectl_path: Path | None = None
    etcd_port: int = 0
    commands: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.workdir / "pki" / "apiserver.crt"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    # --- lifecycle -----------------------------------------------------------------------

    @classmethod
    def start(cls, workdir: Path, *, binaries: Binaries | None = None, timeout: float = 120.0,
              detached: bool = False, crds: Sequence[Path] = (),
              audit: bool = False, audit_users: Sequence[str] = (),
              for_node: str | None = None,
              controller_args: Sequence[str] = (),
              apiserver_args: Sequence[str] = ()) -> ControlPlane:
        """Start all components and wait until the cluster can run pods.

        `detached` lets the processes outlive this Python process (`make cluster`);
        otherwise they are killed with it, so a crashed test run leaves nothing behind.
        `crds` are installed before the controller-manager starts: its garbage collector
        reads API discovery only every 30 s, so owner references to custom resources
        would otherwise be ignored for that long. `audit` makes the API server log every
        request's metadata to `logs/audit.log`: an independent record of who did what, when
        (with a node, also the bodies of pod status writes: the kubelet's reports);
        `audit_users` limits that record to requests by these users (a benchmark's load
        generator would otherwise write most of it). `for_node` names a node to be added
        with `controlplane.node.Node.start`: the controllers a node needs run, and the
        scheduler and the kubelet get kubeconfigs in `workdir`. `controller_args` are more
        flags for kube-controller-manager (a benchmark raises its client's rate limits),
        `apiserver_args` for kube-apiserver, after its own (a benchmark turns profiling on).
        """
        binaries = binaries or ensure_binaries()
        workdir = workdir.resolve()
        for sub in ("etcd", "pki", "logs"):
            (workdir / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        plane = cls(workdir=workdir, api_port=free_port(), admin_token=secrets.token_hex(16),
                    kubectl_path=binaries.kubectl)
        try:
            plane._start(binaries, timeout=timeout, detached=detached, crds=crds, audit=audit,
                         audit_users=audit_users, node=for_node,
                         controller_args=controller_args, apiserver_args=apiserver_args)
        except BaseException:
            plane.stop()
            raise
        return plane

    def _start(self, binaries: Binaries, *, timeout: float, detached: bool,
               crds: Sequence[Path], audit: bool, audit_users: Sequence[str] = (),
               node: str | None = None, controller_args: Sequence[str] = (),
               apiserver_args: Sequence[str] = ()) -> None:
        deadline = time.monotonic() + timeout
        etcd_client, etcd_peer = free_port(), free_port()
        self.etcd_port = etcd_client
        self._spawn("etcd", detached, [
            str(binaries.etcd),
            "--name=default",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{etcd_client}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_client}",
            f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-cluster=default=http://127.0.0.1:{etcd_peer}",
            "--unsafe-no-fsync",  # a throw-away test store: speed over durability
            "--log-level=warn",
        ])
        self._wait(f"http://127.0.0.1:{etcd_client}/health", deadline, "etcd")

        pki = self.workdir / "pki"
        write_service_account_keys(pki)
        if node:  # pods reach it by the Service's IP, which leads to the node's address
            write_serving_certificate(pki, ["127.0.0.1", NODE_IP, SERVICE_IP])
        controller_token = secrets.token_hex(16)
        node_tokens = {user: secrets.token_hex(16) for user in (NODE_USERS if node else ())}
        (pki / "tokens.csv").write_text(
            f'{self.admin_token},admin,admin-uid,"system:masters"\n'
            f'{controller_token},kube-controller-manager,kcm-uid,"system:masters"\n'
            + "".join(f"{token},{NODE_USERS[user].format(node=node)}\n"
                      for user, token in node_tokens.items())
        )
        self._spawn("kube-apiserver", detached, [
            str(binaries.kube_apiserver),
            f"--etcd-servers=http://127.0.0.1:{etcd_client}",
            f"--secure-port={self.api_port}",
            *address_flags(node),
            f"--cert-dir={pki}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--token-auth-file={pki / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            # As strict as distributions that enable it (OpenShift does): an owner
            # reference that blocks its owner's deletion (the claim's PVC's) needs
            # `update` on the owner's `finalizers`, which the shipped RBAC must grant.
            "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
            "--allow-privileged=true",
            "--profiling=false",
            *(auditing.flags(pki, self.audit_log, audit_users, node) if audit else []),
            # Reach the kubelet (logs, exec) at its node IP, not by a host name from DNS.
            *(["--kubelet-preferred-address-types=InternalIP"] if node else []),
            *apiserver_args,
        ])
        self._wait(f"{self.server}/readyz", deadline, "kube-apiserver")
        self._write_kubeconfig(self.kubeconfig, "admin", self.admin_token)
        for user, token in node_tokens.items():
            self._write_kubeconfig(self.workdir / f"{user}.kubeconfig", user, token)
        for crd in crds:
            self.kubectl("apply", "-f", str(crd))
        for crd in crds:
            self.established("-f", str(crd))

        controller_kubeconfig = self.workdir / "kube-controller-manager.kubeconfig"
        self._write_kubeconfig(controller_kubeconfig, "kube-controller-manager",
                               controller_token)
        self._spawn("kube-controller-manager", detached, [
            str(binaries.kube_controller_manager),
            f"--kubeconfig={controller_kubeconfig}",
            "--leader-elect=false",
            "--use-service-account-credentials=false",
            "--secure-port=0",
            f"--controllers={','.join(CONTROLLERS + (NODE_CONTROLLERS if node else ()))}",
            # Dynamic host-path volumes for a default StorageClass (a one-node cluster).
            *(["--enable-hostpath-provisioner=true"] if node else []),
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--root-ca-file={self.ca_file}",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            *controller_args,
        ])
        # Pods are admitted only once their namespace's default ServiceAccount exists.
        while not self._default_service_account_exists():
            self._checkalive()
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    "the 'default' ServiceAccount never appeared\n" + self.log_tails())
            time.sleep(0.2)
        self._save_state()

    def stop(self) -> None:
        """Stop components in reverse order: controllers first, etcd last."""
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            pid = self.pids.pop(name, None)
            if pid is not None:
                terminate(pid)
        state = self.workdir / STATE_FILE
        state.unlink(missing_ok=True)

    # --- state for `make cluster` / `make cluster-down` --------------------------------------

    def _save_state(self) -> None:
        state = {"api_port": self.api_port, "admin_token": self.admin_token, "pids": self.pids,
                 "kubectl": str(self.kubectl_path) if self.kubectl_path else None}
        write_json(self.workdir / STATE_FILE, state)

    @classmethod
    def load(cls, workdir: Path) -> ControlPlane | None:
        path = workdir.resolve() / STATE_FILE
        if not path.exists():
            return None
        state = json.loads(path.read_text())
        kubectl = state.get("kubectl")
        return cls(workdir=workdir.resolve(), api_port=state["api_port"],
                   admin_token=state["admin_token"], pids=dict(state["pids"]),
                   kubectl_path=Path(kubectl) if kubectl else None)

    def is_running(self) -> bool:
        return bool(self.pids) and all(alive(pid) for pid in self.pids.values())

    # --- helpers ---------------------------------------------------------------------------

    def _spawn(self, name: str, detached: bool, command: Sequence[str]) -> None:
        self.commands[name] = list(command)
        self.pids[name] = spawn(command, self.logs / f"{name}.log", cwd=self.workdir,
                                detached=detached)

    # --- faults, for tests that prove the operator survives them ------------------------

    def stop_apiserver(self) -> None:
        """Stop kube-apiserver abruptly: every watch breaks, every request fails."""
        pid = self.pids.pop("kube-apiserver", None)
        if pid is not None:
            terminate(pid, grace=0.5)

    def start_apiserver(self, timeout: float = 60.0) -> None:
        """Start kube-apiserver again, on the same port, with the same flags."""
        self._spawn("kube-apiserver", False, self.commands["kube-apiserver"])
        self._wait(f"{self.server}/readyz", time.monotonic() + timeout, "kube-apiserver")

    def compact_etcd(self) -> int:
        """Compact etcd's history up to now, so watches resumed from older versions get
        410 Gone (once the API server's own cache is gone too, e.g. after a restart)."""
        base = f"http://127.0.0.1:{self.etcd_port}/v3"
        revision = int(_post_json(f"{base}/kv/range", {"key": "AA=="})["header"]["revision"])
        _post_json(f"{base}/kv/compaction", {"revision": revision, "physical": True})
        return revision

    @property
    def audit_log(self) -> Path:
        return self.logs / "audit.log"

    def discard_data(self) -> int:
        """Once stopped: etcd's data and the audit logs removed, the components' logs kept
        (auditing.discard_bulk). Returns the bytes freed."""
        return auditing.discard_bulk(self.workdir)

    def _checkalive(self) -> None:
        for name, pid in self.pids.items():
            if not alive(pid):
                raise ControlPlaneError(f"{name} exited during start-up\n" + self.log_tails())

    def _wait(self, url: str, deadline: float, component: str) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # readiness only; the cert may not exist yet
        while True:
            self._checkalive()
            try:
                with urllib.request.urlopen(url, timeout=2, context=context) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, ssl.SSLError):
                pass
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"{component} not ready at {url}\n" + self.log_tails())
            time.sleep(0.2)

    def _default_service_account_exists(self) -> bool:
        request = urllib.request.Request(
            f"{self.server}/api/v1/namespaces/default/serviceaccounts/default",
            headers={"Authorization": f"Bearer {self.admin_token}"},
        )
        context = ssl.create_default_context(cafile=str(self.ca_file))
        try:
            with urllib.request.urlopen(request, timeout=2, context=context) as response:
                return bool(response.status == 200)
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return False
            raise
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def service_account_kubeconfig(self, namespace: str, account: str, path: Path, *,
                                   duration: str = "1h") -> Path:
        """A kubeconfig at `path` that authenticates as a ServiceAccount, by a
        TokenRequest token valid for `duration`."""
        token = self.kubectl("create", "token", account, "--namespace", namespace,
                             f"--duration={duration}").strip()
        self._write_kubeconfig(path, f"{namespace}:{account}", token)
        return path

    def _write_kubeconfig(self, path: Path, user: str, token: str) -> None:
        write_kubeconfig(path, self.server, self.ca_file, user, token)

    def log_tails(self, lines: int = 40) -> str:
        """The last lines of every component's log, for failure reports."""
        parts = []
        for path in sorted(self.logs.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"----- {path.name} (last {len(tail)} lines) -----")
            parts.extend(tail)
        return "\n".join(parts)

    def kubectl_result(self, *args: str,
                       input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run kubectl as the admin and return what happened, failed or not."""
        if self.kubectl_path is None:
            raise ControlPlaneError("no kubectl binary is known for this control plane")
        return subprocess.run([str(self.kubectl_path), *args], input=input, text=True,
                              capture_output=True, env=self.environ())

    def kubectl(self, *args: str, input: str | None = None) -> str:
        """Run kubectl as the admin; raise KubectlError, with its stderr, when it fails."""
        return checked(self.kubectl_result(*args, input=input))

    def established(self, *what: str, timeout: float = 120.0) -> None:
        """Wait until the CRDs named (or `-f FILE`) are Established; see kubectl.py."""
        wait_established(self.kubectl_result, what, timeout)

    def environ(self) -> dict[str, str]:
        """Environment for a client (kubectl, the operator) talking to this cluster."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        return env


def _post_json(url: str, body: dict[str, object]) -> dict[str, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer
