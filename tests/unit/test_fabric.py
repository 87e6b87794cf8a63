"""aicluster/fabric.py's pure parts: Thunderbolt cables of a three-node mesh, systemd device names,
the RoCE traffic class against the NCCL environment, and the NCCL environment compared across nodes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from aicluster import fabric, nccl
from aicluster.facts import net, rdma
from aicluster.spec import ClusterSpec

ROOT = Path(__file__).parents[2]
FIXTURES = ROOT / "tests/fixtures"


def homelab() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "inventories/homelab.yaml").read_text())
    return data


def mesh() -> ClusterSpec:
    """Three Linux boxes, each cabled to both others with Thunderbolt."""
    data = homelab()
    data["cluster"]["fabric"] = "thunderbolt"
    third = {**data["nodes"][1], "name": "gpu3", "ssh": {"address": "192.168.1.13"}}
    data["nodes"].append(third)
    data["serving"]["parallelism"]["pipeline"] = 3
    names = [node["name"] for node in data["nodes"]]
    for node in data["nodes"]:
        peers = [name for name in names if name != node["name"]]
        node["fabric"] = [
            {"kind": "thunderbolt", "interface": f"thunderbolt{i}", "rate_gbps": 40, "peer": peer}
            for i, peer in enumerate(peers)
        ]
    # Cables by the later node, then the earlier: gpu1-gpu2 .0/30, gpu1-gpu3 .4/30, gpu2-gpu3 .8/30.
    for node, address in zip(data["nodes"], ["10.10.0.1", "10.10.0.2", "10.10.0.6"], strict=True):
        node["data_address"] = address
    return ClusterSpec.model_validate(data)


def test_mesh_cables_take_consecutive_30s_in_node_order() -> None:
    spec = mesh()
    cables = [
        (str(c.network), c.first.node, str(c.first.address), c.second.node, str(c.second.address))
        for c in spec.cables()
    ]
    assert cables == [
        ("10.10.0.0/30", "gpu1", "10.10.0.1", "gpu2", "10.10.0.2"),
        ("10.10.0.4/30", "gpu1", "10.10.0.5", "gpu3", "10.10.0.6"),
        ("10.10.0.8/30", "gpu2", "10.10.0.9", "gpu3", "10.10.0.10"),
    ]


def test_a_peer_whose_data_address_is_on_another_cable_is_routed_over_the_direct_one() -> None:
    spec = mesh()
    gpu2 = spec.nodes[1]
    # gpu2's cable to gpu3: gpu3's data address 10.10.0.6 sits on the gpu1-gpu3 cable.
    to_gpu3 = next(c for c in spec.cables() if {c.first.node, c.second.node} == {"gpu2", "gpu3"})
    lines = fabric.cable_network(spec, gpu2, to_gpu3).splitlines()
    assert "Address=10.10.0.9/30" in lines
    assert lines[-3:] == ["[Route]", "Destination=10.10.0.6/32", "Gateway=10.10.0.10"]
    to_gpu1 = next(c for c in spec.cables() if {c.first.node, c.second.node} == {"gpu1", "gpu2"})
    assert "[Route]" not in fabric.cable_network(spec, gpu2, to_gpu1)


def test_device_unit_names_are_escaped_as_systemd_does() -> None:
    assert fabric.Link("enp65s0f0np0", 9000).device_unit == (
        "sys-subsystem-net-devices-enp65s0f0np0.device"
    )
    # systemd-escape: "-" and ":" become \x2d and \x3a.
    assert fabric.Link("br-data:1", 9000).device_unit == (
        "sys-subsystem-net-devices-br\\x2ddata\\x3a1.device"
    )


def test_roce_nccl_environment_leaves_the_traffic_class_to_the_hca() -> None:
    """roles/fabric sets the HCA's default class to ROCE_TRAFFIC_CLASS; NCCL must not override it
    with another one. Real facts: the dev machine's `ip -j addr` (eth0 holds 192.0.2.2) and ibstat
    and show_gids of a ConnectX-4 whose mlx5_0 is an Active RoCE port."""
    data = yaml.safe_load((ROOT / "inventories/multinode_ib.yaml").read_text())
    data["cluster"].update(fabric="roce", data_network="192.0.2.0/24")
    for index, node in enumerate(data["nodes"]):
        node["data_address"] = f"192.0.2.{2 + index}"
        node["fabric"] = [{"kind": "roce", "interface": "eth0", "hca": "mlx5_0", "rate_gbps": 100}]
    spec = ClusterSpec.model_validate(data)
    interfaces = net.parse_ip_addr((FIXTURES / "net/ip-addr-dev-machine.txt").read_text())
    adapters = rdma.parse_ibstat((FIXTURES / "rdma/ibstat-cx4-roce-and-ib.txt").read_text())
    gids = rdma.parse_show_gids((FIXTURES / "rdma/show_gids-cx4-roce-and-ib.txt").read_text())
    env = nccl.environment(
        spec, spec.nodes[0], interfaces["interfaces"], adapters["adapters"], gids["gids"]
    )
    assert env["NCCL_IB_HCA"] == "=mlx5_0"
    assert env.get("NCCL_IB_TC", str(fabric.ROCE_TRAFFIC_CLASS)) == str(fabric.ROCE_TRAFFIC_CLASS)
    assert fabric.ROCE_TRAFFIC_CLASS == (26 << 2) | 0b10


def dev_machine_env(spec_name: str) -> dict[str, str]:
    """The environment roles/nccl writes for the spec's first node on the dev machine (real `ip -j
    addr`: eth0 holds 192.0.2.2), read back from the file text."""
    data = yaml.safe_load((ROOT / f"inventories/{spec_name}.yaml").read_text())
    data["cluster"]["data_network"] = "192.0.2.0/24"
    for index, node in enumerate(data["nodes"]):
        node["data_address"] = f"192.0.2.{2 + index}"
    spec = ClusterSpec.model_validate(data)
    interfaces = net.parse_ip_addr((FIXTURES / "net/ip-addr-dev-machine.txt").read_text())
    env = nccl.environment(spec, spec.nodes[0], interfaces["interfaces"])
    return fabric.parse_env_file(nccl.render(env))


def test_env_file_reads_back_what_nccl_renders() -> None:
    env = dev_machine_env("homelab")
    assert env["NCCL_SOCKET_IFNAME"] == "=eth0" and env["NCCL_P2P_DISABLE"] == "1"


def test_identical_environments_agree() -> None:
    env = dev_machine_env("homelab")
    spec = ClusterSpec.model_validate(homelab())
    envs = {"gpu1": env, "gpu2": env}
    assert fabric.transport_disagreements(envs) == []
    assert fabric.roce_disagreements(envs) == []
    assert fabric.p2p_mismatches(spec, envs) == []


def test_transport_disagreement_names_node_and_key() -> None:
    env = dev_machine_env("homelab")
    rdma_node = {k: v for k, v in env.items() if k != "NCCL_IB_DISABLE"} | {
        "NCCL_IB_HCA": "=mlx5_0"
    }
    assert fabric.transport_disagreements({"gpu1": env, "gpu2": rdma_node}) == [
        "NCCL_IB_DISABLE differs: gpu1 1, gpu2 unset",
        "NCCL_IB_HCA set on gpu2 but not on gpu1",
    ]


def test_roce_disagreement_names_node_and_key() -> None:
    first = {"NCCL_IB_HCA": "=mlx5_0", "NCCL_IB_GID_INDEX": "3"}
    second = {"NCCL_IB_HCA": "=mlx5_2", "NCCL_IB_GID_INDEX": "1", "NCCL_IB_TC": "106"}
    assert fabric.roce_disagreements({"a": first, "b": second}) == [
        "NCCL_IB_GID_INDEX differs: a 3, b 1",
        "NCCL_IB_TC differs: a unset, b 106",
    ]
    # The HCA names are each node's own: they may differ.
    assert fabric.transport_disagreements({"a": first, "b": second}) == []


def test_p2p_disabled_exactly_where_geforce_cards_sit_on_pcie() -> None:
    geforce = dev_machine_env("homelab")  # RTX 3090 on PCIe
    hopper = dev_machine_env("h100_workstation")  # H100 on NVLink
    spec = ClusterSpec.model_validate(homelab())
    assert fabric.p2p_mismatches(spec, {"gpu1": geforce, "gpu2": hopper}) == [
        "gpu2: GeForce GPUs on PCIe but NCCL_P2P_DISABLE is not 1"
    ]
    data = homelab()
    data["nodes"][1]["gpus"][0]["model"] = "NVIDIA RTX A5000"
    spec = ClusterSpec.model_validate(data)
    assert fabric.p2p_mismatches(spec, {"gpu1": geforce, "gpu2": geforce}) == [
        "gpu2: NCCL_P2P_DISABLE=1 without GeForce GPUs on PCIe"
    ]
