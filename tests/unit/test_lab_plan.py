"""The lab's pure parts: machine naming and addresses, its inventory, its rootfs stamp."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aicluster import lab
from aicluster.spec import ClusterSpec


def test_machines_and_addresses() -> None:
    machines = lab.machines_for(3, outsider=True)
    assert [m.name for m in machines] == ["node1", "node2", "node3", "outsider"]
    assert [str(m.mgmt_address) for m in machines] == [
        "198.18.0.11",
        "198.18.0.12",
        "198.18.0.13",
        "198.18.0.100",
    ]
    assert [str(m.data_address) for m in machines][-1] == "198.19.0.100"
    # Host-side interface names must fit Linux's 15 characters.
    assert all(len(veth) <= 15 for m in machines for veth in m.veths)


@pytest.mark.parametrize("nodes", [0, lab.MAX_NODES + 1])
def test_node_count_is_bounded(nodes: int) -> None:
    with pytest.raises(lab.LabError, match="--nodes must be between 1 and 8"):
        lab.machines_for(nodes, outsider=False)


@pytest.mark.parametrize("profile", ["cpu", "h100", "h200"])
def test_lab_inventory_is_a_valid_spec_without_the_outsider(profile: str) -> None:
    spec = ClusterSpec.model_validate(
        lab.inventory_spec(lab.machines_for(3, outsider=True), profile)
    )
    assert [node.name for node in spec.nodes] == ["node1", "node2", "node3"]
    assert spec.head.name == "node1"
    assert spec.serving.parallelism.pipeline == 3
    assert bool(spec.nodes[0].gpus) is (profile != "cpu")


def test_rootfs_stamp_detects_a_broken_cache(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    for essential in lab.ROOTFS_ESSENTIALS:
        (rootfs / essential).parent.mkdir(parents=True, exist_ok=True)
        (rootfs / essential).write_text("")
    (rootfs / "var/lib/dpkg").mkdir(parents=True)
    (rootfs / "var/lib/dpkg/status").write_text("Package: systemd\n")
    assert not lab.rootfs_is_sound(rootfs)  # no stamp: a half-built cache
    stamp = rootfs.with_name("rootfs.stamp")
    stamp.write_text(json.dumps(lab._stamp_of(rootfs)))
    assert lab.rootfs_is_sound(rootfs)
    (rootfs / "var/lib/dpkg/status").write_text("Package: systemd\nPackage: more\n")
    assert not lab.rootfs_is_sound(rootfs)  # contents changed behind the stamp
    stamp.write_text(json.dumps(lab._stamp_of(rootfs)))
    (rootfs / "usr/sbin/sshd").unlink()
    assert not lab.rootfs_is_sound(rootfs)
