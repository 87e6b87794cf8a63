"""What each node runs: vLLM's arguments and environment for every shape of cluster, and the
firewall that guards it (the operation-plan level: no host involved)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aicluster import firewall, lab, vllmserve
from aicluster.inventory import load_spec
from aicluster.spec import ClusterSpec

INVENTORIES = Path(__file__).parents[2] / "inventories"


def example(name: str, **serving: Any) -> ClusterSpec:
    data = load_spec(INVENTORIES / f"{name}.yaml").model_dump(mode="json")
    data["serving"].update(serving)
    return ClusterSpec.model_validate(data)


def test_one_node_runs_tensor_parallel_with_the_mp_executor() -> None:
    spec = example("h100_workstation")
    launch = vllmserve.launch(spec, spec.head)
    assert launch.runs_vllm
    assert launch.arguments[:2] == ("serve", "Qwen/Qwen2.5-72B-Instruct")
    assert "--tensor-parallel-size=4" in launch.arguments
    assert "--distributed-executor-backend=mp" in launch.arguments
    assert "--dtype=bfloat16" in launch.arguments
    assert not any(arg.startswith("--nnodes") for arg in launch.arguments)


def test_ray_backend_serves_from_the_head_and_workers_only_run_ray() -> None:
    spec = example("multinode_ib")
    head = vllmserve.launch(spec, spec.head)
    assert "--distributed-executor-backend=ray" in head.arguments
    assert {"--tensor-parallel-size=8", "--pipeline-parallel-size=2", "--quantization=fp8"} <= set(
        head.arguments
    )
    assert ("RAY_ADDRESS", "10.100.0.11:6379") in head.environment
    assert ("RAY_AUTH_MODE", "token") in head.environment
    assert vllmserve.launch(spec, spec.nodes[1]) == vllmserve.Launch(runs_vllm=False)


def test_native_backend_gives_every_node_its_rank_and_workers_run_headless() -> None:
    spec = example("homelab", distributed_backend="native")
    head, worker = (vllmserve.launch(spec, node) for node in spec.nodes)
    expected = {"--nnodes=2", "--master-addr=10.10.0.11", "--master-port=29500"}
    assert expected | {"--node-rank=0"} <= set(head.arguments)
    assert expected | {"--node-rank=1", "--headless"} <= set(worker.arguments)
    assert "--headless" not in head.arguments


def test_cpu_nodes_get_the_cpu_build_settings_and_never_a_hub() -> None:
    spec = ClusterSpec.model_validate(
        lab.inventory_spec(lab.machines_for(2, outsider=False), "cpu")
    )
    launch = vllmserve.launch(spec, spec.nodes[1])
    env = dict(launch.environment)
    assert env["VLLM_TARGET_DEVICE"] == "cpu"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert env["HF_HUB_OFFLINE"] == "1"
    assert launch.arguments[1] == lab.MODEL_PATH
    assert "--dtype=float32" in launch.arguments
    assert not any("gpu-memory" in arg for arg in launch.arguments)


def test_no_secret_is_ever_an_argument() -> None:
    spec = example("homelab", distributed_backend="native")
    for node in spec.nodes:
        launch = vllmserve.launch(spec, node)
        assert not any("key" in arg or "token" in arg for arg in launch.arguments)


def test_auto_layout_of_an_unknown_model_asks_for_numbers() -> None:
    spec = ClusterSpec.model_validate(
        lab.inventory_spec(lab.machines_for(2, outsider=False), "cpu")
    )
    data = spec.model_dump(mode="json")
    data["serving"]["parallelism"] = {"tensor": "auto", "pipeline": "auto", "data": "auto"}
    with pytest.raises(vllmserve.LaunchError, match="set tensor, pipeline and data"):
        vllmserve.launch(ClusterSpec.model_validate(data), spec.head)


def test_firewall_opens_cluster_ports_to_nodes_and_the_api_to_allowed_networks() -> None:
    spec = example("homelab", api_allowed_networks=["192.168.1.0/24", "10.8.0.0/16"])
    rules = firewall.ruleset(spec, "enp5s0")
    assert "set cluster_v4 { type ipv4_addr; elements = { 10.10.0.11, 10.10.0.12 } }" in rules
    assert "elements = { 10.8.0.0/16, 192.168.1.0/24 }" in rules
    assert rules.index("ip saddr @cluster_v4 accept") < rules.index("tcp dport 8000 drop")
    assert 'iifname "enp5s0" drop' in rules
    assert "6379" in rules and "29500" in rules and "10002-10999" in rules
    # The whole table is replaced atomically: create, delete, define.
    assert rules.splitlines()[1:4] == [
        "table inet aicluster {}",
        "delete table inet aicluster",
        "table inet aicluster {",
    ]


def test_firewall_api_defaults_to_the_management_network() -> None:
    rules = firewall.ruleset(example("homelab"), "enp5s0")
    assert "set api_v4 { type ipv4_addr; flags interval; elements = { 192.168.1.0/24 } }" in rules
