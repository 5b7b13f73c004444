"""The configuration files of a node's containerd and kubelet (`controlplane.node`)."""

from __future__ import annotations

from pathlib import Path

from controlplane import host
from controlplane.binaries import NodeBinaries
from controlplane.images import SANDBOX_IMAGE
from controlplane.processes import free_port


def containerd_config(root: Path, socket_path: Path, binaries: NodeBinaries) -> str:
    runtime = "plugins.'io.containerd.cri.v1.runtime'"
    images = "plugins.'io.containerd.cri.v1.images'"
    return f"""version = 4
root = "{root / 'containerd' / 'root'}"
state = "{root / 'containerd' / 'state'}"
# Plug-ins that would write outside the node's folder, and are not needed.
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.nri.v1.nri",
                    "io.containerd.internal.v1.tracing"]

[plugins.'io.containerd.server.v1.grpc']
  address = "{socket_path}"

[plugins.'io.containerd.server.v1.ttrpc']
  address = "{socket_path}.ttrpc"

[{runtime}]
  # A pod sandbox's root lacks CAP_SYS_RESOURCE here: without this, runc cannot set a
  # negative oom_score_adj and every sandbox fails ("can't get final child's PID").
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false

[{runtime}.containerd]
  default_runtime_name = "runc"

[{runtime}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
  runtime_path = "{binaries.containerd_shim}"

[{runtime}.containerd.runtimes.runc.options]
  BinaryName = "{host.PACKAGES['runc']}"
  SystemdCgroup = false
  Root = "{root / 'runc'}"

[{runtime}.cni]
  bin_dirs = ["{host.CNI_BIN_DIR}"]
  conf_dir = "{root / 'cni'}"
  use_internal_loopback = true  # no loopback plug-in, no cache files of its own

[{images}.pinned_images]
  sandbox = "{SANDBOX_IMAGE}"

[{images}.registry]
  config_path = "{root / 'certs.d'}"
"""


def kubelet_config(root: Path, socket_path: Path) -> dict[str, object]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": host.NODE_IP,
        "port": free_port(),
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": free_port(),
        "containerRuntimeEndpoint": f"unix://{socket_path}",
        "cgroupDriver": "cgroupfs",
        "failSwapOn": False,
        "failCgroupV1": False,  # cgroup v1 is deprecated: a warning, not a stop
        "resolvConf": "",
        "makeIPTablesUtilChains": False,
        "podLogsDir": str(root / "pod-logs"),
        "volumePluginDir": str(host.RUN_DIR / "kubelet" / "volume-plugins"),
        "serializeImagePulls": False,
        "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},
        # A test machine's disk may be nearly full: never evict, never collect images.
        "evictionHard": {"memory.available": "1Mi", "nodefs.available": "0%",
                         "nodefs.inodesFree": "0%", "imagefs.available": "0%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "shutdownGracePeriod": "0s",
        "nodeStatusReportFrequency": "10s",
    }
