"""The operator's container image: the repository's Dockerfile, built by buildah.

`make image` (or `python -m controlplane.image`) builds it once per content and prints
the archive's path. Interface for other modules (the node, its registry, containerd):

    from controlplane.image import ensure_image
    image = ensure_image()   # builds if needed (root; minutes cold), else returns at once
    image.name      # "docker.io/library/evc-operator:0.1.0": what the chart and manifests
                    # ask for (`evc-operator:0.1.0`), as the kubelet normalises it
    image.archive   # Path: an OCI archive (a tar of an OCI image layout, one linux image);
                    # index.json's one manifest has the annotation
                    # org.opencontainers.image.ref.name = image.name, a full name, which
                    # containerd's importer keeps as is (`ctr -n k8s.io images import`)
    image.layout    # Path: the same layout unpacked (index.json, blobs/sha256/<hex>): a
                    # registry can serve its blobs as they are
    image.digest    # "sha256:<hex>": the image manifest's digest (a blob in the layout)
    image.sbom      # Path: SPDX 2.3 JSON (Python and Debian packages in the image)

The image is also in the builder's storage (the `storage/` folder of the cache, not the
machine's default buildah storage), under `image.name`; that storage is shared by work
trees, so the name there is the last one built: load the archive, not the storage.

Where: a folder per build under the cache (EVC_CACHE_DIR, else ~/.cache/evc-operator,
as for the control plane's binaries), named by the version and a digest of every input
(Dockerfile, .dockerignore, pyproject.toml, constraints.txt, README.md, src/, the base
image's recipe, buildah's version, this module and the SBOM's): a second `make image`
builds nothing. The base image (`python:3.11-slim-bookworm`, which cannot be pulled
here) is made by controlplane.baseimage. Downloads during the build use the machine's
CA bundle (a proxy that inspects TLS needs it) and proxy variables; neither stays in the
image.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from controlplane import baseimage, sbom
from controlplane.binaries import _locked, cache_root
from controlplane.tools import Buildah, ensure_tools, log, run_with_heartbeat

REPO = Path(__file__).resolve().parent.parent
REPOSITORY = "docker.io/library/evc-operator"  # `evc-operator` in the chart and manifests
VENV = "/opt/venv"  # where the Dockerfile installs the operator
INPUTS = ("Dockerfile", ".dockerignore", "pyproject.toml", "constraints.txt", "README.md",
          "src")
BUILDER = (Path(__file__), Path(__file__).with_name("sbom.py"))  # what makes the outputs
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")  # Debian's path, in both bases
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy",
                   "no_proxy")  # build arguments every builder predefines, not kept
KEEP_BUILDS = 4  # older builds' folders are removed (several work trees share the cache)


@dataclasses.dataclass(frozen=True)
class Image:
    name: str
    digest: str
    archive: Path
    layout: Path
    sbom: Path


def image_cache() -> Path:
    return cache_root() / "image"


def version(repo: Path = REPO) -> str:
    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    return str(project["version"])


def image_name(repo: Path = REPO) -> str:
    return f"{REPOSITORY}:{version(repo)}"


def _input_files(repo: Path) -> list[Path]:
    files: list[Path] = []
    for name in INPUTS:
        path = repo / name
        candidates = sorted(path.rglob("*")) if path.is_dir() else [path]
        files += [file for file in candidates if file.is_file()
                  and "__pycache__" not in file.parts and ".egg-info" not in str(file)
                  and file.suffix not in (".pyc", ".pyo")]
    return files


def inputs_key(repo: Path, base_key: str, buildah_version: str) -> str:
    digest = hashlib.sha256(f"{base_key}\0{buildah_version}\0".encode())
    for module in BUILDER:
        digest.update(hashlib.sha256(module.read_bytes()).digest())
    for file in _input_files(repo):
        digest.update(f"{file.relative_to(repo).as_posix()}\0".encode())
        digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()[:16]


def base_images(dockerfile: Path) -> tuple[str, dict[str, str]]:
    """The one base image the Dockerfile builds from, without a digest, and the build
    arguments that make its FROM lines name it (when a FROM names a global ARG)."""
    defaults: dict[str, str] = {}
    stages: set[str] = set()
    bases: dict[str, str] = {}  # image as written -> the ARG it came from ("" if none)
    for line in dockerfile.read_text().splitlines():
        words = line.split()
        if words and words[0].upper() == "ARG" and not stages and "=" in words[1]:
            key, _, value = words[1].partition("=")
            defaults[key] = value.strip('"')
        elif words and words[0].upper() == "FROM":
            image = next(word for word in words[1:] if not word.startswith("--"))
            if len(words) >= 4 and words[-2].upper() == "AS":
                stages.add(words[-1])
            if image in stages:
                continue
            match = re.fullmatch(r"\$\{?(\w+)\}?", image)
            if match:
                bases[defaults.get(match.group(1), "")] = match.group(1)
            else:
                bases[image] = ""
    if len(bases) != 1:
        raise RuntimeError(f"{dockerfile.name}: expected one base image, found {list(bases)}")
    (written, variable), = bases.items()
    plain = written.split("@", 1)[0]
    if plain != written and not variable:
        raise RuntimeError(f"{dockerfile.name}: FROM {written} is pinned by digest, which a "
                           "locally made base cannot match: name it by a global ARG")
    return plain, ({variable: plain} if variable else {})


def _build_arguments(args: dict[str, str]) -> list[str]:
    options = [f"--build-arg={key}={value}" for key, value in args.items()]
    options += [f"--build-arg={key}={os.environ[key]}" for key in PROXY_VARIABLES
                if os.environ.get(key)]
    if CA_BUNDLE.is_file():
        options.append(f"--volume={CA_BUNDLE}:{CA_BUNDLE}:ro")
    return options


def _write_archive(layout: Path, archive: Path) -> None:
    """A tar of the OCI layout, the same bytes for the same layout."""
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in [layout, *sorted(layout.rglob("*"))]:
            info = tar.gettarinfo(str(path), arcname=path.relative_to(layout).as_posix())
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if path.is_file():
                with path.open("rb") as data:
                    tar.addfile(info, data)
            elif path != layout:
                tar.addfile(info)


def _mounted_sbom(buildah: Buildah, name: str, digest: str, target: Path) -> None:
    container = buildah.output("from", "--pull=never", name)
    try:
        root = Path(buildah.output("mount", container))
        created = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        document = sbom.spdx(root, image=name, digest=digest, venv=VENV, created=created)
        target.write_text(json.dumps(document, indent=1) + "\n")
    finally:
        buildah.run("umount", container, check=False)
        buildah.run("rm", container, check=False)


def _found(folder: Path, name: str) -> Image | None:
    try:
        record = json.loads((folder / "image.json").read_text())
    except (OSError, ValueError):
        return None
    image = Image(name=name, digest=record["digest"], archive=folder / "evc-operator.oci.tar",
                  layout=folder / "oci", sbom=folder / "sbom.spdx.json")
    complete = (image.archive.is_file() and image.sbom.is_file() and record["name"] == name
                and (image.layout / "index.json").is_file())
    return image if complete else None


def _in_storage(buildah: Buildah, image: Image) -> str:
    """The image's ID in the builder's storage, pulled back from its layout if it was
    pruned there (the storage is shared: another work tree's build moves the name)."""
    manifest = json.loads(_blob(image.layout, image.digest))
    image_id = str(manifest["config"]["digest"]).removeprefix("sha256:")
    if buildah.run("inspect", "--type", "image", image_id, check=False).returncode != 0:
        # buildah names a pulled layout after its path, which must read as an image name:
        # a relative one does (the cache's absolute path has a `.cache` part, which not).
        buildah.run("pull", "--quiet", f"oci:{image.layout.name}:{image.name}",
                    cwd=image.layout.parent)
        buildah.run("tag", image_id, image.name)
        buildah.run("rmi", f"localhost/{image.layout.name}:latest")
    return image_id


def _prune(cache: Path, keep: Path) -> None:
    builds = sorted(cache.glob("evc-operator-*"), key=lambda path: path.stat().st_mtime)
    for old in [path for path in builds if path != keep][:-(KEEP_BUILDS - 1) or None]:
        shutil.rmtree(old, ignore_errors=True)


def _build(buildah: Buildah, repo: Path, name: str, staging: Path,
           args: dict[str, str]) -> str:
    command = buildah.command("build", "--isolation=chroot", "--pull=never", "--format=oci",
                              "--layers=false", *_build_arguments(args),
                              f"--file={repo / 'Dockerfile'}", f"--tag={name}", str(repo))
    run_with_heartbeat(command, staging / "build.log", what=name,
                       echo=lambda line: bool(re.match(r"\[\d+/\d+\] STEP|STEP \d+", line)))
    buildah.run("rmi", "--prune", check=False)  # the previous build's image, now untagged
    buildah.run("push", "--quiet", name, f"oci:{staging / 'oci'}:{name}")
    index = json.loads((staging / "oci" / "index.json").read_text())
    return str(index["manifests"][0]["digest"])


def ensure_image(repo: Path = REPO) -> Image:
    """The operator's image, built from `repo`'s Dockerfile if this content never was."""
    tools = ensure_tools()
    cache = image_cache()
    buildah = Buildah(cache / "storage")
    base_name, base_args = base_images(repo / "Dockerfile")
    base_key = baseimage.recipe_key(tools.mmdebstrap_version)
    name = image_name(repo)
    key = inputs_key(repo, base_key, tools.buildah_version)
    target = cache / f"evc-operator-{version(repo)}-{key}"
    with _locked(cache / ".image.lock"):
        found = _found(target, name)
        if found:
            _in_storage(buildah, found)
            return found
        started = time.monotonic()
        baseimage.ensure_base(buildah, base_name, cache / "base", tools.mmdebstrap_version)
        staging = Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
        try:
            log(f"building {name} from the Dockerfile with buildah {tools.buildah_version}")
            digest = _build(buildah, repo, name, staging, base_args)
            _write_archive(staging / "oci", staging / "evc-operator.oci.tar")
            _mounted_sbom(buildah, name, digest, staging / "sbom.spdx.json")
            record = {"name": name, "digest": digest, "base": base_name,
                      "base_recipe": base_key, "seconds": round(time.monotonic() - started)}
            (staging / "image.json").write_text(json.dumps(record, indent=1) + "\n")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        _prune(cache, target)
        log(f"built {name} ({digest[:19]}) in {time.monotonic() - started:.0f} s")
        built = _found(target, name)
        assert built is not None
        return built


@dataclasses.dataclass(frozen=True)
class Container:
    """A working container of the image: commands run in it as the image's user, with its
    environment, in the host's network (buildah run, chroot isolation)."""

    buildah: Buildah
    name: str

    def argv(self, command: list[str], *, env: dict[str, str] | None = None,
             volumes: dict[Path, str] | None = None) -> list[str]:
        """The command line that runs `command` in it, with variables and read-only bind
        mounts {host path: container path} added."""
        options = [f"--env={key}={value}" for key, value in (env or {}).items()]
        options += [f"--volume={host}:{inside}:ro" for host, inside in (volumes or {}).items()]
        return self.buildah.command("run", "--isolation=chroot", *options, self.name, "--",
                                    *command)

    def run(self, command: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(command), capture_output=True, text=True,
                              timeout=timeout, check=False)


@contextmanager
def container(image: Image) -> Iterator[Container]:
    """A working container of the image, removed afterwards: to check that the image
    works. Making it copies the image (vfs storage): about 10 s."""
    buildah = Buildah(image_cache() / "storage")
    with _locked(image_cache() / ".image.lock"):  # no build prunes it meanwhile
        image_id = _in_storage(buildah, image)
        made = Container(buildah, buildah.output("from", "--pull=never", image_id))
    try:
        yield made
    finally:
        buildah.run("rm", made.name, check=False)


def image_config(image: Image) -> dict[str, Any]:
    """The image's OCI configuration (user, entrypoint, cmd, env, labels...)."""
    manifest = json.loads(_blob(image.layout, image.digest))
    config = json.loads(_blob(image.layout, manifest["config"]["digest"]))
    return dict(config["config"])


def _blob(layout: Path, digest: str) -> bytes:
    algorithm, _, hexdigest = digest.partition(":")
    return (layout / "blobs" / algorithm / hexdigest).read_bytes()


def main() -> int:
    image = ensure_image()
    size = image.archive.stat().st_size / 2**20
    print(f"{image.name} {image.digest}\nSBOM: {image.sbom}\nOCI archive ({size:.0f} MiB):",
          file=sys.stderr, flush=True)
    print(image.archive)
    return 0

if __name__ == "__main__":
    sys.exit(main())
