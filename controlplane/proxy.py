"""kube-proxy for the local node: Services, the `kubernetes` one first, reachable from pods.

It is built from the same pinned k8s.io/kubernetes module as the kubelet, and runs in
nftables mode (the kernels of the project's machines have nf_tables; iptables mode would
insert jumps into the host's own chains): everything it writes is in the tables
`ip kube-proxy` and `ip6 kube-proxy`, which `controlplane.host.remove_proxy_tables`
deletes on the way down. The settings below keep it from touching anything else on the
host: no conntrack sysctls, no oom_score_adj, no `route_localnet`.

A pod dials the `kubernetes` Service (KUBERNETES_SERVICE_HOST:PORT, the Service's cluster
IP on 443); kube-proxy's DNAT sends it to the Service's endpoints, which the API server
writes itself: the node's address (on `lo`, routed from the pods' bridge) and its port.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from controlplane import host

TABLE = "kube-proxy"  # kube-proxy's own, fixed name (pkg/proxy/nftables)


def configuration(kubeconfig: Path, node: str, healthz_port: int,
                  metrics_port: int) -> dict[str, object]:
    """A KubeProxyConfiguration (v1alpha1) for the node `node`."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "nftables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": node,
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        # Pod traffic is the pods' subnet: not masqueraded on its way to a Service.
        "detectLocalMode": "ClusterCIDR",
        "clusterCIDR": host.POD_SUBNET,
        "nodePortAddresses": ["primary"],
        # Leave the host's conntrack table size and timeouts, and the process's OOM score
        # (the sandbox's root may not lower it), as they are.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                      "tcpCloseWaitTimeout": "0s"},
        "oomScoreAdj": 0,
    }


def routes_service(address: str, port: int = 443) -> bool:
    """Whether kube-proxy's rules send `address:port` (TCP) to endpoints: the Service is
    in its `service-ips` map (a Service without endpoints is in another one)."""
    result = subprocess.run(["nft", "list", "map", "ip", TABLE, "service-ips"],
                            capture_output=True, text=True, check=False)
    return result.returncode == 0 and f"{address} . tcp . {port} :" in result.stdout
