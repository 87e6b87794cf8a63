"""Every port the cluster uses between its own nodes: fixed, so the firewall can name them all.

Ray picks random ports unless told otherwise; a firewall cannot allow what it cannot predict, so
aicluster fixes every one of them. Only the API port is meant for clients outside the cluster.
"""

from __future__ import annotations

RAY_GCS = 6379
RAY_NODE_MANAGER = 6380
RAY_OBJECT_MANAGER = 6381
RAY_RUNTIME_ENV_AGENT = 6382
RAY_DASHBOARD_AGENT_GRPC = 6383
RAY_METRICS = 6384
RAY_CLIENT_SERVER = 10001
RAY_DASHBOARD = 8265
RAY_DASHBOARD_AGENT_LISTEN = 52365
RAY_WORKER_PORTS = (10002, 10999)
# torch.distributed's TCPStore for vLLM's own multi-node mode (--master-port).
VLLM_MASTER = 29500
# Gloo/NCCL bootstrap and vLLM's internal RPC ports: a fixed range on the data network.
INTERNAL_RANGE = (29501, 29999)

RAY_PORTS: tuple[int, ...] = (
    RAY_GCS,
    RAY_NODE_MANAGER,
    RAY_OBJECT_MANAGER,
    RAY_RUNTIME_ENV_AGENT,
    RAY_DASHBOARD_AGENT_GRPC,
    RAY_METRICS,
    RAY_CLIENT_SERVER,
    RAY_DASHBOARD,
    RAY_DASHBOARD_AGENT_LISTEN,
)
