"""The deep checks' pure parts: the workload each node runs, bus bandwidth, what the ports give."""

from __future__ import annotations

from pathlib import Path

import pytest

from aicluster.checks import deep
from aicluster.facts import ParseError
from aicluster.inventory import load_spec
from aicluster.nccl import parse_nccl_network

INVENTORIES = Path(__file__).parents[2] / "inventories"


def test_bus_bandwidth_is_nccl_tests_busbw() -> None:
    # 1 GiB in 0.1 s on 2 ranks: algbw 10.74 GB/s, busbw x 2 (n-1)/n = the same.
    assert deep.bus_bandwidth({"bytes": 2**30, "seconds": 0.1}, 2) == pytest.approx(
        10.737, rel=1e-3
    )
    # On 8 ranks busbw is 1.75 x algbw.
    assert deep.bus_bandwidth({"bytes": 2**30, "seconds": 0.1}, 8) == pytest.approx(18.79, rel=1e-3)


def test_one_rank_per_node_expects_one_port_of_the_slowest_node() -> None:
    # 8 NDR ports per node, but one rank per node gets one: 400 Gb/s = 50 GB/s.
    assert deep.expected_gbytes_per_s(load_spec(INVENTORIES / "multinode_ib.yaml")) == 50.0
    assert deep.expected_gbytes_per_s(load_spec(INVENTORIES / "homelab.yaml")) == 1.25  # 10 GbE
    # A node without listed ports: nothing to compare with.
    assert deep.expected_gbytes_per_s(load_spec(INVENTORIES / "h100_workstation.yaml")) is None


def test_every_rank_runs_over_the_data_network_with_its_own_rank() -> None:
    spec = load_spec(INVENTORIES / "multinode_ib.yaml")
    commands = [deep.all_reduce_command(spec, rank) for rank in range(len(spec.nodes))]
    for rank, command in enumerate(commands):
        assert command.startswith("set -a; . /etc/aicluster/nccl.env; set +a; ")
        assert f"MASTER_ADDR={spec.head.data_address} MASTER_PORT={deep.PORT}" in command
        assert command.endswith(f" {rank} {len(spec.nodes)} nccl 256 3 10")


def test_a_run_without_a_result_line_is_refused() -> None:
    with pytest.raises(ParseError, match="printed no result"):
        deep.parse_result("Traceback (most recent call last):\n")
    assert deep.parse_result('noise\n{"rank": 0, "seconds": 0.5, "bytes": 8}\n')["seconds"] == 0.5


NCCL_LOGS = Path(__file__).parents[1] / "fixtures" / "nccl"


@pytest.mark.parametrize(
    ("log", "network", "rdma", "first_device"),
    [
        ("nccl-info-ib-2x-a100-azure-nd96asr-vllm-pp2.txt", "IB", True, "mlx5_0:1/IB"),
        ("nccl-info-roce-2x-8gpu-sglang-tp16.txt", "IB", True, "mlx5_0:1/RoCE"),
        ("nccl-info-ibext-2x-a100-pcie-hpcx-sharp.txt", "IBext_v8", True, "mlx5_0:1/IB/SHARP"),
        # InfiniBand in the VMs, none in the pods: NCCL ran on TCP without a warning.
        (
            "nccl-info-socket-2x-a100-azure-nd96asr-no-ib-in-pod.txt",
            "Socket",
            False,
            "eth0:10.244.2.248<0>",
        ),
    ],
)
def test_the_network_nccl_chose_is_read_from_its_info_log(
    log: str, network: str, rdma: bool, first_device: str
) -> None:
    chosen = parse_nccl_network((NCCL_LOGS / log).read_text(errors="replace"))
    assert chosen["network"] == network
    assert chosen["rdma"] is rdma
    assert chosen["devices"][0] == first_device


def test_a_log_without_nccl_lines_chose_nothing() -> None:
    assert parse_nccl_network("Traceback (most recent call last):\n") == {
        "network": None,
        "rdma": False,
        "devices": [],
    }
