"""The image's command, for real: ENTRYPOINT + CMD of the Dockerfile against the control plane.

No image is built (there is no Docker engine here). What the container would run is run
as a process instead: the command is read from the Dockerfile (never repeated here), with
the Dockerfile's ENV, and with its virtualenv's `bin/` replaced by this test run's venv on
PATH, so `evc-operator` resolves to the installed console script as it does in the image.

What differs from the container, on purpose:
- KUBECONFIG points at the test session's control plane (in a pod: the ServiceAccount);
- the port of the `--liveness` URL becomes a free one, so the test never clashes with
  whatever listens on 8080 here. Host, path and every other argument stay as they are:
  the operator serves all namespaces;
- for the same reason METRICS_PORT (the operator's /metrics and /readyz) is a free port.
"""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from controlplane.cluster import ControlPlane, free_port
from tests.integration.support import Kubectl, eventually
from tests.unit.test_dockerfile import image_command, image_environment, liveness_url, resolved

EVC = {"apiVersion": "zalando.org/v1", "kind": "EphemeralVolumeClaim",
       "metadata": {"name": "image-check"}, "spec": {"size": "1Gi"}}


def with_liveness_port(command: list[str], port: int) -> list[str]:
    """The command with only the port of its `--liveness=URL` replaced."""
    changed: list[str] = []
    for argument in command:
        if argument.startswith("--liveness="):
            url = urlsplit(argument.partition("=")[2])
            assert url.hostname, f"no host in {argument}"
            assert url.port, f"no port in {argument}"
            url = url._replace(netloc=f"{url.hostname}:{port}")
            argument = f"--liveness={urlunsplit(url)}"
        changed.append(argument)
    assert changed != command, f"no --liveness=URL in {command}"
    return changed


def healthz_status(url: str, process: subprocess.Popen[bytes]) -> int | None:
    if process.poll() is not None:
        raise AssertionError(f"evc-operator exited with {process.returncode}")
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            status: int = response.status
            return status if status == 200 else None
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def stop(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_image_command_serves_liveness_and_creates_the_pvc(
        control_plane: ControlPlane, namespace: str, kubectl: Kubectl, tmp_path: Path) -> None:
    port = free_port()
    command = with_liveness_port(image_command(), port)
    liveness = urlsplit(liveness_url(command))
    probe = urlunsplit(liveness._replace(netloc=f"127.0.0.1:{port}"))  # it listens on 0.0.0.0
    environ = image_environment(control_plane.environ())
    environ["METRICS_PORT"] = str(free_port())
    logfile = tmp_path / "evc-operator.log"

    with logfile.open("ab") as log:
        process = subprocess.Popen(resolved(command, environ), cwd=tmp_path, env=environ,
                                   stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    try:
        eventually(lambda: healthz_status(probe, process), timeout=60,
                   what=f"HTTP 200 from {probe}")

        kubectl("apply", "-f", "-", input=json.dumps(EVC))
        pvc = eventually(lambda: kubectl.get("pvc", "image-check"), timeout=60,
                         what="the PVC image-check")
        assert pvc is not None
        owners = [(o["kind"], o["name"]) for o in pvc["metadata"].get("ownerReferences", [])]
        assert owners == [("EphemeralVolumeClaim", "image-check")], owners
    except AssertionError as error:
        stop(process)
        log_text = logfile.read_text(errors="replace")
        raise AssertionError(f"{error}\ncommand: {command}\n--- evc-operator log ---\n"
                             f"{log_text}") from error
    finally:
        stop(process)
