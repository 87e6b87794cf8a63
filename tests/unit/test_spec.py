"""Every cross-field rule of the spec: one case it rejects (with its location) and one it accepts."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from aicluster.inventory import SpecError, load_spec

INVENTORIES = Path(__file__).parents[2] / "inventories"


def homelab() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((INVENTORIES / "homelab.yaml").read_text())
    return data


def problems_of(tmp_path: Path, data: dict[str, Any]) -> list[str]:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    try:
        load_spec(path)
    except SpecError as error:
        prefix = f"{path}: "
        assert all(line.startswith(prefix) for line in error.lines())
        return [line.removeprefix(prefix) for line in error.lines()]
    return []


def only_problem(tmp_path: Path, data: dict[str, Any]) -> str:
    problems = problems_of(tmp_path, data)
    assert len(problems) == 1, problems
    return problems[0]


def test_homelab_is_valid(tmp_path: Path) -> None:
    assert problems_of(tmp_path, homelab()) == []


def test_unique_node_names(tmp_path: Path) -> None:
    data = homelab()
    data["nodes"][1]["name"] = "gpu1"
    assert only_problem(tmp_path, data) == "nodes[1].name: gpu1 is used by more than one node"


def test_unique_ssh_addresses(tmp_path: Path) -> None:
    data = homelab()
    data["nodes"][1]["ssh"]["address"] = "192.168.1.11"
    assert only_problem(tmp_path, data).startswith("nodes.gpu2.ssh: 192.168.1.11:22 is used by")
    # The same address on another port is another machine (a port-forward, a container).
    data["nodes"][1]["ssh"]["port"] = 2222
    assert problems_of(tmp_path, data) == []


def test_unique_data_addresses(tmp_path: Path) -> None:
    data = homelab()
    data["nodes"][1]["data_address"] = "10.10.0.11"
    assert only_problem(tmp_path, data).startswith("nodes.gpu2.data_address: 10.10.0.11 is used")


def test_exactly_one_head(tmp_path: Path) -> None:
    data = homelab()
    data["nodes"][1]["role"] = "head"
    assert "exactly one node must have role: head (found gpu1, gpu2)" in only_problem(
        tmp_path, data
    )
    data["nodes"][0]["role"] = data["nodes"][1]["role"] = "worker"
    assert "(found none)" in only_problem(tmp_path, data)


def test_parallel_product_equals_devices(tmp_path: Path) -> None:
    data = homelab()
    data["serving"]["parallelism"] = {"tensor": 4, "pipeline": 1, "data": 1}
    message = only_problem(tmp_path, data)
    assert message.startswith("serving.parallelism: tensor x pipeline x data = 4 x 1 x 1 = 4")
    assert "8 devices" in message
    data["serving"]["parallelism"] = {"tensor": 4, "pipeline": 1, "data": 2}
    assert problems_of(tmp_path, data) == []


def test_partial_auto_must_divide_devices(tmp_path: Path) -> None:
    data = homelab()
    data["serving"]["parallelism"] = {"tensor": 4, "pipeline": 3, "data": "auto"}
    assert "= 12 does not divide the 8 devices" in only_problem(tmp_path, data)
    data["serving"]["parallelism"] = {"tensor": 4, "pipeline": "auto", "data": "auto"}
    assert problems_of(tmp_path, data) == []


def test_tensor_group_never_spans_nodes(tmp_path: Path) -> None:
    data = homelab()
    data["serving"]["parallelism"] = {"tensor": 8, "pipeline": 1, "data": 1}
    problems = problems_of(tmp_path, data)
    assert len(problems) == 2
    assert problems[0].startswith("nodes.gpu1.gpus: 4 device(s) cannot hold tensor-parallel groups")
    assert "stays inside one node" in problems[0]


def test_tensor_group_never_mixes_gpu_models(tmp_path: Path) -> None:
    data = homelab()
    data["nodes"][1]["gpus"] = [
        {"model": "NVIDIA GeForce RTX 3090", "count": 3, "memory_gib": 24},
        {"model": "NVIDIA GeForce RTX 4090", "count": 1, "memory_gib": 24},
    ]
    message = only_problem(tmp_path, data)
    assert message.startswith(
        "nodes.gpu2.gpus: tensor-parallel group of GPUs 0-3 mixes "
        "NVIDIA GeForce RTX 3090 and NVIDIA GeForce RTX 4090"
    )
    # Two groups of two, each of one model: allowed.
    data["nodes"][1]["gpus"][0]["count"] = 2
    data["nodes"][1]["gpus"][1]["count"] = 2
    data["serving"]["parallelism"] = {"tensor": 2, "pipeline": 2, "data": 2}
    assert problems_of(tmp_path, data) == []


def test_vllm_only_on_linux(tmp_path: Path) -> None:
    data = homelab()
    data["nodes"][1]["os"] = "macos"
    data["nodes"][1]["accelerator_link"] = "unified_memory"
    assert only_problem(tmp_path, data).startswith("nodes.gpu2.os: vLLM runs on Linux nodes only")


def test_exo_only_on_macos(tmp_path: Path) -> None:
    data = yaml.safe_load((INVENTORIES / "mac_studios.yaml").read_text())
    assert problems_of(tmp_path, data) == []
    data["nodes"][1]["os"] = "ubuntu"
    data["nodes"][1]["accelerator_link"] = "pcie"
    assert only_problem(tmp_path, data).startswith("nodes.studio2.os: Exo clusters are macOS nodes")


def test_accelerator_link_matches_gpus(tmp_path: Path) -> None:
    data = homelab()
    del data["nodes"][0]["accelerator_link"]
    assert only_problem(tmp_path, data).startswith(
        "nodes.gpu1.accelerator_link: say how the GPUs are connected"
    )
    data["nodes"][0]["accelerator_link"] = "unified_memory"
    assert "Apple silicon" in only_problem(tmp_path, data)
    data["nodes"][0]["accelerator_link"] = "nvlink"
    assert problems_of(tmp_path, data) == []


def test_rdma_fabric_names_ports_on_every_node(tmp_path: Path) -> None:
    data = yaml.safe_load((INVENTORIES / "multinode_ib.yaml").read_text())
    assert problems_of(tmp_path, data) == []
    data["nodes"][1]["fabric"] = []
    assert only_problem(tmp_path, data).startswith(
        "nodes.hgx2.fabric: the cluster's data fabric is infiniband: name this node's"
    )
    data["nodes"][1]["fabric"] = [{"kind": "infiniband", "interface": "ib0", "rate_gbps": 400}]
    assert only_problem(tmp_path, data).startswith("nodes.hgx2.fabric[0].hca: a infiniband port")


def test_data_address_inside_data_network(tmp_path: Path) -> None:
    data = homelab()
    data["nodes"][0]["data_address"] = "10.20.0.11"
    assert only_problem(tmp_path, data) == (
        "nodes.gpu1.data_address: 10.20.0.11 is outside cluster.data_network 10.10.0.0/24"
    )


def test_ssh_ip_inside_management_network(tmp_path: Path) -> None:
    data = homelab()
    data["nodes"][0]["ssh"]["address"] = "172.16.0.5"
    assert only_problem(tmp_path, data).startswith("nodes.gpu1.ssh.address: 172.16.0.5 is outside")
    data["nodes"][0]["ssh"]["address"] = "gpu1.lan"  # a hostname is resolved at connect time
    assert problems_of(tmp_path, data) == []


def test_model_needs_a_source(tmp_path: Path) -> None:
    data = homelab()
    del data["serving"]["model"]["hf_id"]
    assert only_problem(tmp_path, data) == "serving.model: give hf_id, path, or both"
    data["serving"]["model"]["path"] = "models/llama"
    assert "absolute path" in only_problem(tmp_path, data)
    data["serving"]["model"]["path"] = "/srv/models/llama"
    assert problems_of(tmp_path, data) == []


def test_engine_version_is_pinned(tmp_path: Path) -> None:
    data = homelab()
    del data["serving"]["versions"]["vllm"]
    assert only_problem(tmp_path, data).startswith("serving.versions.vllm: pin the vllm version")


def test_unquoted_version_is_refused(tmp_path: Path) -> None:
    data = homelab()
    data["serving"]["versions"]["python"] = 3.10
    assert "write versions in quotes" in only_problem(tmp_path, data)


def test_no_coercion_of_strings_to_booleans_or_numbers(tmp_path: Path) -> None:
    data = homelab()
    data["nodes"][0]["ssh"]["port"] = "22"
    assert only_problem(tmp_path, data).startswith("nodes.gpu1.ssh.port: Input should be a valid")
    data = homelab()
    data["serving"]["parallelism"]["tensor"] = True
    assert only_problem(tmp_path, data).startswith("serving.parallelism.tensor: must be a whole")


def test_unknown_field_is_refused(tmp_path: Path) -> None:
    data = homelab()
    data["nodes"][0]["gpu"] = data["nodes"][0].pop("gpus")
    problems = problems_of(tmp_path, data)
    assert "nodes.gpu1.gpu: unknown field (check its spelling and the section it is in)" in problems


def test_secrets_never_inline(tmp_path: Path) -> None:
    data = homelab()
    data["security"]["hf_token"] = "hf_abcdef"
    message = only_problem(tmp_path, data)
    assert message.startswith("security: hf_token: secrets are never written inline")
    assert "hf_abcdef" not in message


def test_duplicate_yaml_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text((INVENTORIES / "homelab.yaml").read_text() + "\ncluster: {}\n")
    with pytest.raises(SpecError) as raised:
        load_spec(path)
    assert "key 'cluster' is given twice" in raised.value.lines()[0]
    assert ": line " in raised.value.lines()[0]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    data = copy.deepcopy(homelab())
    data["nodes"][0]["data_address"] = "10.20.0.11"
    data["nodes"][1]["os"] = "macos"
    data["nodes"][1]["accelerator_link"] = "unified_memory"
    assert len(problems_of(tmp_path, data)) == 2


@pytest.mark.parametrize("name", ["homelab", "h100_workstation", "multinode_ib", "mac_studios"])
def test_example_inventories_are_valid(name: str) -> None:
    spec = load_spec(INVENTORIES / f"{name}.yaml")
    assert spec.cluster.name


def test_open_branch_contradicts_proprietary_modules(tmp_path: Path) -> None:
    data = homelab()
    data["serving"]["versions"]["nvidia_driver_branch"] = "570-open"
    data["nvidia_driver"] = {"kernel_modules": "proprietary"}
    assert only_problem(tmp_path, data) == (
        "nvidia_driver.kernel_modules: proprietary contradicts the branch 570-open: "
        "drop -open or choose open"
    )
    data["nvidia_driver"] = {"kernel_modules": "open", "source": "distro", "allow_reboot": True}
    assert problems_of(tmp_path, data) == []


def test_gpu_generation_refuses_an_impossible_driver_flavour(tmp_path: Path) -> None:
    data = homelab()
    data["nodes"][1]["gpus"][0]["model"] = "Tesla P40"
    data["serving"]["versions"]["nvidia_driver_branch"] = "570-open"
    message = only_problem(tmp_path, data)
    assert message.startswith(
        "nodes.gpu2.gpus[0].model: Tesla P40: Pascal GPUs need the proprietary"
    )
    data["serving"]["versions"]["nvidia_driver_branch"] = "570"
    assert problems_of(tmp_path, data) == []
    data["nodes"][1]["gpus"][0]["model"] = "NVIDIA GeForce RTX 5090"
    data["nvidia_driver"] = {"kernel_modules": "proprietary"}
    assert "Blackwell GPUs run the open kernel modules only" in only_problem(tmp_path, data)


def test_subnet_manager_only_on_an_infiniband_fabric(tmp_path: Path) -> None:
    data = homelab()
    data["cluster"]["subnet_manager"] = "opensm"
    assert only_problem(tmp_path, data) == (
        "cluster.subnet_manager: a subnet manager is for an InfiniBand fabric; this cluster's "
        "fabric is ethernet: remove subnet_manager"
    )
    data = yaml.safe_load((INVENTORIES / "multinode_ib.yaml").read_text())
    data["cluster"]["subnet_manager"] = "opensm"
    assert problems_of(tmp_path, data) == []


def thunderbolt_pair() -> dict[str, Any]:
    """The homelab's two boxes on one Thunderbolt cable: 10.10.0.0/30, .1 and .2."""
    data = homelab()
    data["cluster"]["fabric"] = "thunderbolt"
    first, second = data["nodes"]
    first["data_address"], second["data_address"] = "10.10.0.1", "10.10.0.2"
    for node, peer in ((first, second), (second, first)):
        node["fabric"] = [
            {"kind": "thunderbolt", "interface": "thunderbolt0", "rate_gbps": 40,
             "peer": peer["name"]}
        ]  # fmt: skip
    return data


def test_thunderbolt_pair_is_valid(tmp_path: Path) -> None:
    assert problems_of(tmp_path, thunderbolt_pair()) == []


def test_only_a_thunderbolt_port_names_a_peer(tmp_path: Path) -> None:
    data = homelab()
    data["nodes"][0]["fabric"][0]["peer"] = "gpu2"
    assert only_problem(tmp_path, data) == (
        "nodes.gpu1.fabric[0].peer: only a thunderbolt port names a peer (its cable's other end)"
    )


def test_linux_thunderbolt_port_names_its_peer(tmp_path: Path) -> None:
    data = thunderbolt_pair()
    del data["nodes"][0]["fabric"][0]["peer"]
    problems = problems_of(tmp_path, data)
    assert problems[0] == (
        "nodes.gpu1.fabric[0].peer: name the node at the other end of this Thunderbolt cable: "
        "each cable gets its own /30"
    )
    # A Mac's port may leave it out (macOS configures its own Thunderbolt bridge).
    data = yaml.safe_load((INVENTORIES / "mac_studios.yaml").read_text())
    for node in data["nodes"]:
        del node["fabric"][0]["peer"]
    assert problems_of(tmp_path, data) == []


@pytest.mark.parametrize(
    ("peers", "message"),
    [
        (["gpu9"], "gpu9 is no node of the spec: name the node cabled here"),
        (["gpu1"], "gpu1 is this node itself: name the node cabled here"),
        (["gpu2", "gpu2"], "a second cable to gpu2: one cable per pair of nodes"),
    ],
)
def test_a_cable_joins_two_distinct_nodes_once(
    tmp_path: Path, peers: list[str], message: str
) -> None:
    data = thunderbolt_pair()
    port = data["nodes"][0]["fabric"][0]
    data["nodes"][0]["fabric"] = [
        {**port, "interface": f"thunderbolt{i}", "peer": peer} for i, peer in enumerate(peers)
    ]
    assert f"nodes.gpu1.fabric[{len(peers) - 1}].peer: {message}" in problems_of(tmp_path, data)


def test_a_cable_is_named_at_both_ends(tmp_path: Path) -> None:
    data = thunderbolt_pair()
    data["nodes"][1]["fabric"] = [
        {"kind": "ethernet", "interface": "enp5s0", "rate_gbps": 10},
    ]
    assert (
        "nodes.gpu1.fabric[0].peer: gpu2 has no thunderbolt port with peer: gpu1: "
        "name both ends of the cable"
    ) in problems_of(tmp_path, data)


def three_boxes() -> dict[str, Any]:
    data = thunderbolt_pair()
    third = {**data["nodes"][1], "name": "gpu3", "ssh": {"address": "192.168.1.13"}}
    data["nodes"].append(copy.deepcopy(third))
    data["serving"]["parallelism"]["pipeline"] = 3
    return data


def test_every_pair_of_thunderbolt_nodes_is_cabled(tmp_path: Path) -> None:
    data = three_boxes()
    # gpu3 is cabled to gpu1 only.
    data["nodes"][0]["fabric"].append(
        {"kind": "thunderbolt", "interface": "thunderbolt1", "rate_gbps": 40, "peer": "gpu3"}
    )
    data["nodes"][2]["fabric"] = [
        {"kind": "thunderbolt", "interface": "thunderbolt0", "rate_gbps": 40, "peer": "gpu1"}
    ]
    data["nodes"][2]["data_address"] = "10.10.0.6"
    assert only_problem(tmp_path, data) == (
        "nodes.gpu3.fabric: no Thunderbolt cable to gpu2: Thunderbolt has no switch, so every "
        "pair of nodes needs its own cable"
    )
    data["nodes"][1]["fabric"].append(
        {"kind": "thunderbolt", "interface": "thunderbolt1", "rate_gbps": 40, "peer": "gpu3"}
    )
    data["nodes"][2]["fabric"].append(
        {"kind": "thunderbolt", "interface": "thunderbolt1", "rate_gbps": 40, "peer": "gpu2"}
    )
    assert problems_of(tmp_path, data) == []


def test_data_network_holds_a_30_per_cable(tmp_path: Path) -> None:
    data = thunderbolt_pair()
    data["cluster"]["data_network"] = "10.10.0.0/31"
    data["nodes"][0]["data_address"], data["nodes"][1]["data_address"] = "10.10.0.0", "10.10.0.1"
    assert only_problem(tmp_path, data) == (
        "cluster.data_network: 1 Thunderbolt cable(s) need 1 IPv4 /30 networks inside "
        "data_network (10.10.0.0/31 is too small or not IPv4)"
    )
    data["cluster"]["data_network"] = "10.10.0.0/30"
    data["nodes"][0]["data_address"], data["nodes"][1]["data_address"] = "10.10.0.1", "10.10.0.2"
    assert problems_of(tmp_path, data) == []


def test_thunderbolt_data_address_is_a_cable_end(tmp_path: Path) -> None:
    data = thunderbolt_pair()
    data["nodes"][1]["data_address"] = "10.10.0.12"
    assert only_problem(tmp_path, data) == (
        "nodes.gpu2.data_address: 10.10.0.12 is on no Thunderbolt cable of this node: use one "
        "of 10.10.0.2 (thunderbolt0)"
    )
