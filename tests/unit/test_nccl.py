"""The NCCL environment for each fabric kind, derived from the spec and real facts."""

from __future__ import annotations

from ipaddress import ip_network
from pathlib import Path
from typing import Any

import pytest

from aicluster import nccl
from aicluster.facts import net, rdma
from aicluster.inventory import load_spec
from aicluster.spec import ClusterSpec, Node

FIXTURES = Path(__file__).parents[1] / "fixtures"
INVENTORIES = Path(__file__).parents[2] / "inventories"


def fixture(kind: str, name: str) -> dict[str, Any]:
    parser = {**net.PARSE_KINDS, **rdma.PARSE_KINDS}[kind]
    return parser((FIXTURES / name).read_text())


def dev_machine_interfaces() -> list[dict[str, Any]]:
    # Real `ip -j addr` of the dev machine: eth0 holds 192.0.2.2.
    interfaces: list[dict[str, Any]] = fixture("ip-addr", "net/ip-addr-dev-machine.txt")[
        "interfaces"
    ]
    return interfaces


def with_data_address(name: str, address: str, network: str) -> tuple[ClusterSpec, Node]:
    spec = load_spec(INVENTORIES / f"{name}.yaml")
    data = spec.model_dump(mode="json")
    data["cluster"]["data_network"] = network
    data["nodes"][0]["data_address"] = address
    for index, other in enumerate(data["nodes"][1:], start=1):
        other["data_address"] = str(ip_network(network).network_address + 100 + index)
    spec = ClusterSpec.model_validate(data)
    return spec, spec.nodes[0]


def test_ethernet_binds_every_library_to_the_data_interface() -> None:
    spec, node = with_data_address("h100_workstation", "192.0.2.2", "192.0.2.0/24")
    env = nccl.environment(spec, node, dev_machine_interfaces())
    assert env == {
        "NCCL_SOCKET_IFNAME": "=eth0",
        "GLOO_SOCKET_IFNAME": "eth0",
        "VLLM_HOST_IP": "192.0.2.2",
        "NCCL_DEBUG": "WARN",
        "NCCL_IB_DISABLE": "1",
    }


def test_no_interface_holds_the_data_address_is_an_error_not_a_guess() -> None:
    spec, node = with_data_address("h100_workstation", "192.0.2.77", "192.0.2.0/24")
    with pytest.raises(
        nccl.NcclError, match=r"h100: no interface holds its data address 192\.0\.2\.77 \(it has"
    ):
        nccl.environment(spec, node, dev_machine_interfaces())


def test_consumer_gpus_on_pcie_get_p2p_disabled() -> None:
    spec, node = with_data_address("homelab", "192.0.2.2", "192.0.2.0/24")
    assert nccl.environment(spec, node, dev_machine_interfaces())["NCCL_P2P_DISABLE"] == "1"
    spec, node = with_data_address("h100_workstation", "192.0.2.2", "192.0.2.0/24")
    assert "NCCL_P2P_DISABLE" not in nccl.environment(spec, node, dev_machine_interfaces())


def test_infiniband_uses_exactly_the_active_hcas_of_the_spec() -> None:
    spec, _ = with_data_address("multinode_ib", "192.0.2.2", "192.0.2.0/24")
    adapters = fixture("ibstat", "rdma/ibstat-h100-ib-ndr-9-hca.txt")["adapters"]
    data = spec.model_dump(mode="json")
    data["nodes"][0]["fabric"] = [
        {"kind": "infiniband", "interface": f"ib{i}", "hca": hca, "rate_gbps": 400, "mtu": 4092}
        for i, hca in enumerate(["mlx5_0", "mlx5_1", "mlx5_4", "mlx5_5"])
    ]
    spec = ClusterSpec.model_validate(data)
    env = nccl.environment(spec, spec.nodes[0], dev_machine_interfaces(), ib_adapters=adapters)
    assert env["NCCL_IB_HCA"] == "=mlx5_0,mlx5_1,mlx5_4,mlx5_5"
    assert "NCCL_IB_DISABLE" not in env


def test_infiniband_hcas_read_from_sysfs_before_any_tool_is_installed() -> None:
    # roles/nccl reads /sys/class/infiniband (state "ACTIVE"): ibstat may not be installed yet.
    spec, _ = with_data_address("multinode_ib", "192.0.2.2", "192.0.2.0/24")
    devices = fixture("ib-sysfs", "rdma/ib-sysfs-gpud-h100.txt")["devices"]
    data = spec.model_dump(mode="json")
    data["nodes"][0]["fabric"] = [
        {"kind": "infiniband", "interface": "ib0", "hca": "mlx5_0", "rate_gbps": 400, "mtu": 4092}
    ]
    spec = ClusterSpec.model_validate(data)
    env = nccl.environment(spec, spec.nodes[0], dev_machine_interfaces(), ib_adapters=devices)
    assert env["NCCL_IB_HCA"] == "=mlx5_0"


def test_infiniband_port_not_active_stops_the_node() -> None:
    spec, node = with_data_address("multinode_ib", "192.0.2.2", "192.0.2.0/24")
    adapters = fixture("ibstat", "rdma/ibstat-h100-mixed-some-down.txt")["adapters"]
    with pytest.raises(nccl.NcclError, match=r"are not Active .* NCCL would silently use TCP"):
        nccl.environment(spec, node, dev_machine_interfaces(), ib_adapters=adapters)


def test_roce_sets_the_gid_index_of_the_data_address() -> None:
    gids = fixture("show-gids", "rdma/show_gids-rdma0.txt")["gids"]
    spec, _ = with_data_address("multinode_ib", "192.168.211.242", "192.168.211.0/24")
    data = spec.model_dump(mode="json")
    data["cluster"]["fabric"] = "roce"
    data["nodes"][0]["fabric"] = [
        {"kind": "roce", "interface": "rdma0", "hca": "mlx5_0", "rate_gbps": 100}
    ]
    data["nodes"][1]["fabric"] = data["nodes"][0]["fabric"]
    spec = ClusterSpec.model_validate(data)
    interfaces = [
        {
            "name": "rdma0",
            "addresses": [{"family": "inet", "local": "192.168.211.242", "prefixlen": 24}],
        }
    ]
    adapters = [
        {"name": "mlx5_0", "ports": [{"port": 1, "state": "Active", "link_layer": "Ethernet"}]}
    ]
    env = nccl.environment(spec, spec.nodes[0], interfaces, ib_adapters=adapters, gids=gids)
    assert env["NCCL_IB_GID_INDEX"] == "3"  # the RoCE v2 GID of 192.168.211.242 on rdma0
    assert env["NCCL_SOCKET_IFNAME"] == "=rdma0"


def test_debug_level_is_checked_and_the_file_is_sorted_lines() -> None:
    spec, node = with_data_address("h100_workstation", "192.0.2.2", "192.0.2.0/24")
    with pytest.raises(nccl.NcclError, match="nccl_debug must be one of"):
        nccl.environment(spec, node, dev_machine_interfaces(), debug="LOUD")
    text = nccl.render(nccl.environment(spec, node, dev_machine_interfaces(), debug="INFO"))
    assert text.splitlines()[1:] == sorted(text.splitlines()[1:])
    assert "NCCL_DEBUG=INFO" in text.splitlines()
