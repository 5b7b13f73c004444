"""Command line: build the binaries, start or stop a local cluster, build the operator's
image and load it into the cluster's node, re-pin versions."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
from pathlib import Path

from controlplane.binaries import (
    COMPONENTS,
    PROMETHEUS,
    build,
    ensure_binaries,
    ensure_node_binaries,
    log,
)
from controlplane.cluster import ControlPlane, ControlPlaneError
from controlplane.host import NodeError, preflight
from controlplane.node import NODE_NAME, Node, undo_host_changes_of
from controlplane.supervisor import Supervisor


def _up(workdir: Path, kubectl_link: Path | None, crds: list[Path], with_node: bool) -> int:
    running = ControlPlane.load(workdir)
    node = Node.load(workdir)
    if running and running.is_running() and (node is None or node.is_running()):
        print(f"cluster already running at {running.server}", file=sys.stderr)
        plane = running
    else:
        _down(workdir, quiet=True)  # leftovers of a crashed run
        try:
            if with_node:
                preflight()  # before minutes of building: say at once if a node cannot run
            binaries = ensure_binaries()
            node_binaries = ensure_node_binaries() if with_node else None
            plane = ControlPlane.start(workdir, binaries=binaries, detached=True, crds=crds,
                                       for_node=NODE_NAME if with_node else None)
            if node_binaries:
                try:
                    Node.start(plane, binaries=node_binaries, detached=True)
                except BaseException:
                    plane.stop()
                    raise
        except (ControlPlaneError, NodeError) as error:
            print(f"cluster failed to start: {error}", file=sys.stderr)
            return 1
        what = f"cluster with node {NODE_NAME}" if with_node else "control plane (no node)"
        print(f"{what} ready at {plane.server} (logs in {plane.logs})", file=sys.stderr)
    if kubectl_link and plane.kubectl_path:  # and helm beside it
        kubectl_link.parent.mkdir(parents=True, exist_ok=True)
        for link, target in ((kubectl_link, plane.kubectl_path),
                             (kubectl_link.with_name("helm"), ensure_binaries().helm)):
            link.unlink(missing_ok=True)
            link.symlink_to(target)
    print(f"export KUBECONFIG={plane.kubeconfig}")
    return 0


def _down(workdir: Path, quiet: bool = False) -> int:
    node = Node.load(workdir)
    if node is not None:
        node.stop()  # also unmounts what the kubelet mounted in the folder
    else:
        undo_host_changes_of(workdir)
    plane = ControlPlane.load(workdir)
    if plane is None:
        if not quiet:
            print("no control plane running", file=sys.stderr)
        return 0
    plane.stop()
    shutil.rmtree(plane.workdir, ignore_errors=True)
    if not quiet:
        print(f"cluster at {plane.server} stopped, {workdir} removed", file=sys.stderr)
    return 0


def _supervise_node(workdir: Path) -> int:
    """Keep a detached node's components running until SIGTERM (`down` sends it)."""
    node = Node.load(workdir)
    if node is None:
        print(f"no node in {workdir}", file=sys.stderr)
        return 1
    node.supervisor_pid = os.getpid()  # saved with each restart: `down` must find it
    supervisor = Supervisor(node, report=log)
    signal.signal(signal.SIGTERM, lambda signum, frame: supervisor.stop())
    supervisor.run()
    return 0


def _image(workdir: Path) -> int:
    """Build (or find) the operator's image; if a node runs in `workdir`, its registry
    serves it from then on under the image's name, which the chart and manifests use."""
    from controlplane.image import ensure_image

    image = ensure_image()
    node = Node.load(workdir)
    if node is not None and node.is_running():
        repository = node.publish_image(image.name, image.layout, image.digest)
        print(f"{image.name} loaded into the node in {workdir} (its registry serves "
              f"{repository})", file=sys.stderr)
    else:
        print(f"no node runs in {workdir}: the image is not loaded anywhere", file=sys.stderr)
    print(image.archive)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m controlplane", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="build (or find cached) control plane binaries")
    up = commands.add_parser("up", help="start a control plane in the background")
    up.add_argument("--dir", type=Path, default=Path(".cluster"), help="state folder")
    up.add_argument("--kubectl-link", type=Path,
                    help="where to link the built kubectl (and helm beside it)")
    up.add_argument("--crd", type=Path, action="append", default=[],
                    help="CRD manifest to install before the controllers start (repeatable)")
    up.add_argument("--no-node", dest="node", action="store_false",
                    help="a control plane only: no kubelet, scheduler or container runtime")
    down = commands.add_parser("down", help="stop a control plane started with 'up'")
    down.add_argument("--dir", type=Path, default=Path(".cluster"), help="state folder")
    supervise = commands.add_parser(
        "supervise-node", help="(started by 'up') start again a component of the node "
                               "that exits on its own, as systemd would")
    supervise.add_argument("--dir", type=Path, default=Path(".cluster"), help="state folder")
    image = commands.add_parser("image", help="build the operator's image; load it into "
                                              "the node started with 'up' if it runs")
    image.add_argument("--dir", type=Path, default=Path(".cluster"), help="state folder")
    pin = commands.add_parser("pin", help="regenerate a wrapper go.mod for another version")
    pin.add_argument("component", choices=[component.name for component in COMPONENTS])
    pin.add_argument("version",
                     help="e.g. v1.37.2 for kubernetes, v3.6.16 for etcd, v4.3.1 for helm, "
                          "v2.4.2 for containerd, v0.316.0 for prometheus")
    args = parser.parse_args(argv)

    if args.command == "build":
        for found in (ensure_binaries(), ensure_node_binaries()):
            for path in vars(found).values():
                print(path)
        prometheus = build(PROMETHEUS)
        for name in PROMETHEUS.binaries:
            print(prometheus / name)
        return 0
    if args.command == "up":
        return _up(args.dir, args.kubectl_link, args.crd, args.node)
    if args.command == "down":
        return _down(args.dir)
    if args.command == "supervise-node":
        return _supervise_node(args.dir)
    if args.command == "image":
        return _image(args.dir)
    from controlplane.pin import pin as pin_version

    component = next(c for c in COMPONENTS if c.name == args.component)
    pin_version(component, args.version)
    return 0


if __name__ == "__main__":
    sys.exit(main())
