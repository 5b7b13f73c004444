"""Command line: build the binaries, start or stop a local control plane, re-pin versions."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from controlplane.binaries import COMPONENTS, ensure_binaries
from controlplane.cluster import ControlPlane, ControlPlaneError


def _up(workdir: Path, kubectl_link: Path | None, crds: list[Path]) -> int:
    running = ControlPlane.load(workdir)
    if running and running.is_running():
        print(f"control plane already running at {running.server}", file=sys.stderr)
        plane = running
    else:
        if running:
            running.stop()  # leftovers of a crashed run
        binaries = ensure_binaries()
        try:
            plane = ControlPlane.start(workdir, binaries=binaries, detached=True, crds=crds)
        except ControlPlaneError as error:
            print(f"control plane failed to start: {error}", file=sys.stderr)
            return 1
        print(f"control plane ready at {plane.server} (logs in {plane.logs})", file=sys.stderr)
    if kubectl_link and plane.kubectl_path:
        kubectl_link.parent.mkdir(parents=True, exist_ok=True)
        kubectl_link.unlink(missing_ok=True)
        kubectl_link.symlink_to(plane.kubectl_path)
    print(f"export KUBECONFIG={plane.kubeconfig}")
    return 0


def _down(workdir: Path) -> int:
    plane = ControlPlane.load(workdir)
    if plane is None:
        print("no control plane running", file=sys.stderr)
        return 0
    plane.stop()
    shutil.rmtree(plane.workdir, ignore_errors=True)
    print(f"control plane at {plane.server} stopped, {workdir} removed", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m controlplane", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="build (or find cached) control plane binaries")
    up = commands.add_parser("up", help="start a control plane in the background")
    up.add_argument("--dir", type=Path, default=Path(".cluster"), help="state folder")
    up.add_argument("--kubectl-link", type=Path, help="where to link the built kubectl")
    up.add_argument("--crd", type=Path, action="append", default=[],
                    help="CRD manifest to install before the controllers start (repeatable)")
    down = commands.add_parser("down", help="stop a control plane started with 'up'")
    down.add_argument("--dir", type=Path, default=Path(".cluster"), help="state folder")
    pin = commands.add_parser("pin", help="regenerate a wrapper go.mod for another version")
    pin.add_argument("component", choices=[component.name for component in COMPONENTS])
    pin.add_argument("version",
                     help="e.g. v1.37.2 for kubernetes, v3.6.16 for etcd, v4.3.1 for helm")
    args = parser.parse_args(argv)

    if args.command == "build":
        binaries = ensure_binaries()
        for path in vars(binaries).values():
            print(path)
        return 0
    if args.command == "up":
        return _up(args.dir, args.kubectl_link, args.crd)
    if args.command == "down":
        return _down(args.dir)
    from controlplane.pin import pin as pin_version

    component = next(c for c in COMPONENTS if c.name == args.component)
    pin_version(component, args.version)
    return 0


if __name__ == "__main__":
    sys.exit(main())
