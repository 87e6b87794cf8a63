"""Deep checks (`aicluster verify --deep`, minutes of load): does the data path carry what the
interconnect should, on the transport it should? Skipped unless asked for."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import testinfra.host

from aicluster.checks import deep, fail, warn
from aicluster.checks.context import Target
from aicluster.facts import ParseError
from aicluster.nccl import parse_nccl_network
from aicluster.spec import RDMA_FABRICS, ClusterSpec

SCOPE = "cluster"


@pytest.fixture(autouse=True)
def _only_when_asked(pytestconfig: pytest.Config) -> None:
    if not pytestconfig.getoption("aicluster_deep"):
        pytest.skip("a deep check: run `aicluster verify --deep`")


@pytest.fixture(scope="module")
def all_reduce(spec: ClusterSpec, hosts: dict[str, testinfra.host.Host]) -> list[Any]:
    """Every node's all-reduce run (started together: each waits for the others)."""
    if len(spec.nodes) < 2:
        pytest.skip("one node: no all-reduce across nodes")
    with ThreadPoolExecutor(max_workers=len(spec.nodes)) as pool:
        runs = list(
            pool.map(
                lambda rank: hosts[spec.nodes[rank].name].run(deep.all_reduce_command(spec, rank)),
                range(len(spec.nodes)),
            )
        )
    return runs


def test_all_reduce_bus_bandwidth(
    spec: ClusterSpec, all_reduce: list[Any], record_property: Any
) -> None:
    """An all-reduce across every node over the data network reaches the bus bandwidth its ports
    should give (nccl-tests' busbw; e.g. ~46-49 GB/s per NDR 400 port, ~1.1 GB/s on 10 GbE)."""
    head = all_reduce[0]
    if head.rc != 0:
        lines = (head.stderr or head.stdout).strip().splitlines()
        fail(
            f"the all-reduce failed on {spec.head.name}: {lines[-1] if lines else head.rc}",
            "run it again with NCCL_DEBUG=INFO; check nccl.env and the firewall between nodes",
        )
    try:
        result = deep.parse_result(head.stdout)
    except ParseError as error:
        fail(str(error))
    measured = deep.bus_bandwidth(result, len(spec.nodes))
    expected = deep.expected_gbytes_per_s(spec)
    backend = deep.backend_for(spec)
    said = f"{measured:.2f} GB/s bus bandwidth ({backend}, {len(spec.nodes)} nodes)"
    record_property("measured", said)
    if expected is None:
        return
    said += f", the ports should give {expected:.2f} GB/s"
    fix = "check port rates (ibstat, ethtool), MTU, and that traffic is on the data network"
    if measured < deep.FAIL_FRACTION * expected:
        fail(said, fix)
    if measured < deep.WARN_FRACTION * expected:
        warn(said, fix)


def test_nccl_uses_rdma_when_the_fabric_has_it(spec: ClusterSpec, all_reduce: list[Any]) -> None:
    """With an InfiniBand/RoCE fabric, NCCL chose its IB transport, not TCP sockets (the silent
    fallback that runs at a fraction of the speed)."""
    if spec.cluster.fabric not in RDMA_FABRICS:
        pytest.skip(f"the fabric is {spec.cluster.fabric}: NCCL runs on sockets by design")
    if deep.backend_for(spec) != "nccl":
        pytest.skip("CPU-only nodes: no NCCL")
    for node, run in zip(spec.nodes, all_reduce, strict=True):
        chosen = parse_nccl_network(run.stdout + run.stderr)
        if not chosen["rdma"]:
            fail(
                f"{node.name}: NCCL used network {chosen['network'] or 'unknown'}, not IB",
                "ibstat (ports Active?), lsmod | grep ib_, NCCL_IB_HCA in nccl.env, NCCL_IB_DISABLE",
            )


def test_gpu_peer_to_peer(
    spec: ClusterSpec, hosts: dict[str, testinfra.host.Host], member: Target
) -> None:
    """The node's GPUs reach each other peer to peer where the spec says NVLink (without it,
    tensor-parallel traffic crosses host memory)."""
    node = member.value
    if sum(group.count for group in node.gpus) < 2:
        pytest.skip(f"{node.name} has fewer than 2 GPUs")
    run = hosts[node.name].run(deep.peer_to_peer_command())
    if run.rc != 0:
        fail(f"{node.name}: torch cannot list peer access: {run.stderr.strip()[-160:]}")
    matrix = json.loads(run.stdout.strip().splitlines()[-1])
    missing = [(i, j) for i, row in enumerate(matrix) for j, ok in enumerate(row) if not ok]
    if missing and node.accelerator_link == "nvlink":
        fail(
            f"{node.name}: no peer access between GPUs {missing[:6]}",
            "nvidia-smi topo -m; nvidia-smi nvlink -s; the fabric manager on NVSwitch systems",
        )
