"""How each node starts Ray: bound to its data address, on fixed ports, head or worker."""

from __future__ import annotations

from aicluster import ports
from aicluster.runtime import ROOT
from aicluster.spec import ClusterSpec, Node

STATE_DIR = "/var/lib/aicluster"
TOKEN_FILE = "/etc/aicluster/ray.token"


def start_arguments(spec: ClusterSpec, node: Node) -> list[str]:
    """`ray start --block` arguments for a node. Every port is fixed (the firewall allows exactly
    these), every address is the data address (so Ray never advertises a management or loopback
    address), and the dashboard listens on the data network only."""
    address = str(node.data_address)
    gpus = (
        sum(group.count for group in node.gpus) if node.accelerator_link != "unified_memory" else 0
    )
    args = [
        f"--node-ip-address={address}",
        f"--node-manager-port={ports.RAY_NODE_MANAGER}",
        f"--object-manager-port={ports.RAY_OBJECT_MANAGER}",
        f"--runtime-env-agent-port={ports.RAY_RUNTIME_ENV_AGENT}",
        f"--dashboard-agent-grpc-port={ports.RAY_DASHBOARD_AGENT_GRPC}",
        f"--dashboard-agent-listen-port={ports.RAY_DASHBOARD_AGENT_LISTEN}",
        f"--metrics-export-port={ports.RAY_METRICS}",
        f"--min-worker-port={ports.RAY_WORKER_PORTS[0]}",
        f"--max-worker-port={ports.RAY_WORKER_PORTS[1]}",
        f"--num-gpus={gpus}",
        f"--temp-dir={STATE_DIR}/ray",
        "--disable-usage-stats",
    ]
    if node.role == "head":
        return [
            "--head",
            f"--port={ports.RAY_GCS}",
            f"--ray-client-server-port={ports.RAY_CLIENT_SERVER}",
            f"--dashboard-host={address}",
            f"--dashboard-port={ports.RAY_DASHBOARD}",
            *args,
        ]
    return [f"--address={spec.head.data_address}:{ports.RAY_GCS}", *args]


def ray_binary() -> str:
    return f"{ROOT}/venv/bin/ray"
