"""An SPDX 2.3 JSON software bill of materials, read from an image's root filesystem.

It lists what is installed, as the installers recorded it: the Python distributions in
the image's virtualenv (their `*.dist-info` metadata, as `pip inspect` reads it) and the
Debian packages of the base (dpkg's database). Each package has a purl, so scanners match
it. Nothing in the image is run to make it.
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path
from typing import Any


def python_packages(root: Path, venv: str) -> dict[str, str]:
    """{distribution name: version} of the virtualenv at `venv` inside `root`."""
    found: dict[str, str] = {}
    for site in sorted((root / venv.lstrip("/")).glob("lib/python3*/site-packages")):
        for distribution in importlib.metadata.distributions(path=[str(site)]):
            found[distribution.metadata["Name"]] = distribution.version
    return found


def debian_packages(root: Path) -> list[dict[str, str]]:
    """The installed packages in `root`'s dpkg database: name, version, arch, source."""
    status = root / "var/lib/dpkg/status"
    if not status.is_file():
        return []
    packages = []
    for paragraph in re.split(r"\n\s*\n", status.read_text(errors="replace")):
        fields = dict(re.findall(r"^([\w-]+):[ \t]*(.*)$", paragraph, re.M))
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            packages.append({"name": fields["Package"], "version": fields.get("Version", ""),
                             "architecture": fields.get("Architecture", ""),
                             "source": str(fields.get("Source") or fields["Package"]).split()[0]})
    return sorted(packages, key=lambda package: package["name"])


def _spdx_id(kind: str, name: str) -> str:
    return f"SPDXRef-{kind}-{re.sub(r'[^A-Za-z0-9.-]', '-', name)}"


def _package(spdx_id: str, name: str, version: str, purl: str) -> dict[str, Any]:
    return {"SPDXID": spdx_id, "name": name, "versionInfo": version,
            "downloadLocation": "NOASSERTION", "filesAnalyzed": False,
            "licenseConcluded": "NOASSERTION", "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER",
                              "referenceType": "purl", "referenceLocator": purl}]}


def spdx(root: Path, *, image: str, digest: str, venv: str, created: str) -> dict[str, Any]:
    """The SBOM of the image `image` (manifest `digest`) whose root filesystem is `root`."""
    repository, _, tag = image.rpartition(":")
    top = _package("SPDXRef-Image", repository, tag,
                   f"pkg:oci/{repository.rsplit('/', 1)[-1]}@{digest.replace(':', '%3A')}"
                   f"?tag={tag}")
    top["primaryPackagePurpose"] = "CONTAINER"
    packages = [top]
    python = {re.sub(r"[-_.]+", "-", name).lower(): (name, version)
              for name, version in python_packages(root, venv).items()}
    for normal, (name, version) in sorted(python.items()):
        packages.append(_package(_spdx_id("python", normal), name, version,
                                 f"pkg:pypi/{normal}@{version}"))
    for deb in debian_packages(root):
        purl = (f"pkg:deb/debian/{deb['name']}@{deb['version']}?arch={deb['architecture']}"
                f"&distro=debian-12")
        if deb["source"] != deb["name"]:
            purl += f"&upstream={deb['source']}"
        packages.append(_package(_spdx_id("deb", deb["name"]), deb["name"], deb["version"],
                                 purl))
    relationships = [{"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
                      "relatedSpdxElement": "SPDXRef-Image"}]
    relationships += [{"spdxElementId": "SPDXRef-Image", "relationshipType": "CONTAINS",
                       "relatedSpdxElement": package["SPDXID"]} for package in packages[1:]]
    return {"spdxVersion": "SPDX-2.3", "dataLicense": "CC0-1.0", "SPDXID": "SPDXRef-DOCUMENT",
            "name": f"{image} ({digest})",
            "documentNamespace": f"urn:evc-operator:sbom:{digest}",
            "creationInfo": {"created": created, "creators": ["Tool: controlplane.sbom"]},
            "packages": packages, "relationships": relationships}
