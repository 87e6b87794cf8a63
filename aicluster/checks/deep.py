"""The deep checks' workload: an all-reduce across every node, and the GPU peer-to-peer matrix.

Run on each node with the cluster's own Python environment (torch is there: vLLM needs it), NCCL
on GPU nodes and Gloo on CPU-only ones, over the data network as nccl.env says. Bus bandwidth as
nccl-tests defines it: algorithm bandwidth x 2 (n-1) / n.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from aicluster import ports
from aicluster.facts import ParseError
from aicluster.nccl import ENV_FILE
from aicluster.runtime import VENV
from aicluster.spec import ClusterSpec

# The last port of the range the firewall opens between nodes (vLLM takes ports from its start).
PORT = ports.INTERNAL_RANGE[1]
SIZE_MIB = {"nccl": 256, "gloo": 64}
WARMUP, ITERATIONS = 3, 10
# Below WARN of what the links should carry the run says so; below FAIL something is broken
# (a port at a lower rate, traffic on the management network, NCCL on TCP).
WARN_FRACTION, FAIL_FRACTION = 0.7, 0.25

ALL_REDUCE = """\
import datetime, json, sys, time
import torch, torch.distributed as dist
rank, world, backend, size_mib = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
dist.init_process_group(backend, rank=rank, world_size=world, timeout=datetime.timedelta(seconds=120))
device = "cuda" if backend == "nccl" else "cpu"
data = torch.ones(size_mib * 2**20 // 4, dtype=torch.float32, device=device)
def sync():
    if device == "cuda":
        torch.cuda.synchronize()
for _ in range(int(sys.argv[5])):
    dist.all_reduce(data)
sync()
start = time.perf_counter()
for _ in range(int(sys.argv[6])):
    dist.all_reduce(data)
sync()
seconds = (time.perf_counter() - start) / int(sys.argv[6])
print(json.dumps({"rank": rank, "seconds": seconds, "bytes": data.numel() * 4}))
dist.destroy_process_group()
"""

PEER_TO_PEER = """\
import json, torch
n = torch.cuda.device_count()
print(json.dumps([[i == j or torch.cuda.can_device_access_peer(i, j) for j in range(n)] for i in range(n)]))
"""


def backend_for(spec: ClusterSpec) -> str:
    return "nccl" if all(node.gpus for node in spec.nodes) else "gloo"


def all_reduce_command(spec: ClusterSpec, rank: int) -> str:
    """The shell command rank `rank` runs; every rank uses the data network (nccl.env)."""
    backend = backend_for(spec)
    arguments = [
        str(rank),
        str(len(spec.nodes)),
        backend,
        str(SIZE_MIB[backend]),
        str(WARMUP),
        str(ITERATIONS),
    ]
    return (
        f"set -a; . {ENV_FILE}; set +a; "
        f"MASTER_ADDR={spec.head.data_address} MASTER_PORT={PORT} NCCL_DEBUG=INFO "
        f"timeout 300 {VENV}/bin/python -c {shlex.quote(ALL_REDUCE)} {' '.join(arguments)}"
    )


def peer_to_peer_command() -> str:
    return f"timeout 60 {VENV}/bin/python -c {shlex.quote(PEER_TO_PEER)}"


def bus_bandwidth(result: dict[str, Any], world: int) -> float:
    """GB/s, as nccl-tests reports busbw for all-reduce."""
    return float(result["bytes"]) / float(result["seconds"]) / 1e9 * 2 * (world - 1) / world


def parse_result(stdout: str) -> dict[str, Any]:
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise ParseError("the all-reduce printed no result")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def expected_gbytes_per_s(spec: ClusterSpec) -> float | None:
    """What one rank per node can get (GB/s): NCCL gives a GPU one port, so the fastest data port
    of the slowest node, from the spec's rates; None when a node lists no port."""
    rates = []
    for node in spec.nodes:
        ports_of_fabric = [p for p in node.fabric if p.kind == spec.cluster.fabric] or node.fabric
        if not ports_of_fabric:
            return None
        rates.append(max(p.rate_gbps for p in ports_of_fabric) / 8)
    return min(rates) if rates else None
