"""Where a node cannot start, `make cluster` says why and what to do, before any build."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane import __main__ as cli
from controlplane import host
from controlplane.host import NodeError


def test_not_root_says_so_and_offers_a_control_plane_only(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(NodeError, match=r"needs root.*`make cluster NODE=0`"):
        host.preflight()


def test_no_cgroups_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setattr(host, "cgroup_mounts", list)
    with pytest.raises(NodeError, match="no cgroup file system is mounted"):
        host.preflight()


def test_make_cluster_fails_with_the_reason_before_building(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    monkeypatch.setattr(cli, "ensure_binaries", lambda: pytest.fail("built anyway"))
    assert cli.main(["up", "--dir", str(tmp_path / "cluster")]) == 1
    assert "cluster failed to start: a node (kubelet, containerd) needs root" in \
        capsys.readouterr().err


def test_mounts_are_found_under_a_folder_deepest_first(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 0:21 / /srv rw - ext4 /dev/vda rw\n"
        "30 22 0:30 / /srv/cluster/kubelet rw shared:5 - ext4 /dev/vda rw\n"
        "31 30 0:31 / /srv/cluster/kubelet/pods/a\\040b/tmpfs rw - tmpfs tmpfs rw\n"
        "32 22 0:32 / /srv/cluster-other rw - tmpfs tmpfs rw\n")
    monkeypatch.setattr(host, "MOUNTINFO", mountinfo)
    assert host.mounts_under(Path("/srv/cluster")) == [
        Path("/srv/cluster/kubelet/pods/a b/tmpfs"), Path("/srv/cluster/kubelet")]
