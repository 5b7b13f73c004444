"""A real, local Kubernetes control plane for development and tests.

`binaries` builds etcd, kube-apiserver, kube-controller-manager and kubectl from
the pinned Go wrapper modules in `gomod/`; `cluster` starts them on loopback.
Run `python -m controlplane --help` for the command line.
"""
