"""Fabric checks across nodes: every node's NCCL environment agrees with its peers'. Run once, from
the control machine, over every node (the comparisons are in aicluster/fabric.py)."""

from __future__ import annotations

import pytest
import testinfra.host

from aicluster import fabric, nccl
from aicluster.checks import fail
from aicluster.checks.context import run
from aicluster.spec import ClusterSpec

SCOPE = "cluster"
Hosts = dict[str, testinfra.host.Host]
FIX = (
    "converge roles/fabric and roles/nccl on every node (pyinfra INVENTORY deploys/vllm_cluster.py)"
)


@pytest.fixture(scope="module")
def nccl_envs(spec: ClusterSpec, hosts: Hosts) -> fabric.NcclEnvs:
    """Each node's NCCL environment file, read once for every check of this module."""
    return {
        node.name: fabric.parse_env_file(
            run(
                hosts[node.name],
                f"cat {nccl.ENV_FILE}",
                f"{node.name}: {nccl.ENV_FILE}",
                FIX,
            )
        )
        for node in spec.nodes
    }


def _fail_on(problems: list[str]) -> None:
    if problems:
        fail("; ".join(problems), FIX)


def test_nccl_transport_identical(nccl_envs: fabric.NcclEnvs) -> None:
    """Every node makes the same NCCL transport choice: InfiniBand/RoCE on or off, the same net
    plugin, NCCL_IB_HCA on all nodes or none (a node without it falls back to TCP sockets)."""
    _fail_on(fabric.transport_disagreements(nccl_envs))


def test_nccl_roce_settings_identical(nccl_envs: fabric.NcclEnvs) -> None:
    """Every node uses the same RoCE GID index and traffic class (a node that differs speaks RoCE
    v1 or sends on a lossy priority)."""
    _fail_on(fabric.roce_disagreements(nccl_envs))


def test_nccl_p2p_disabled_only_for_geforce(spec: ClusterSpec, nccl_envs: fabric.NcclEnvs) -> None:
    """NCCL_P2P_DISABLE is set exactly on the nodes with GeForce cards on PCIe (they hang on
    peer-to-peer; elsewhere it would throw NVLink and working P2P away)."""
    _fail_on(fabric.p2p_mismatches(spec, nccl_envs))
