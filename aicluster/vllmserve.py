"""How each node runs vLLM: the arguments and environment of its service, from the spec and plan.

Single node: one service, tensor (and pipeline) parallel with the multiprocessing executor.
Several nodes, `ray` backend: the head runs vLLM with the Ray executor over the Ray cluster, the
workers run Ray only. Several nodes, `native` backend: every node runs vLLM with --nnodes and its
--node-rank, the workers --headless. Several nodes with one whole replica each (data parallel =
the node count, nothing split across nodes): every node serves on its own, and a changed
configuration restarts them one at a time. Secrets never appear here: the service reads them from
systemd credentials (see templates/vllm/vllm-serve.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from aicluster import plan, ports, raycluster
from aicluster.runtime import ROOT
from aicluster.spec import ClusterSpec, Node

UNIT = "aicluster-vllm"
WRAPPER = f"{ROOT}/bin/vllm-serve"
API_KEY_FILE = "/etc/aicluster/api_key"
HF_TOKEN_FILE = "/etc/aicluster/hf_token"
DTYPES = {"bf16": "bfloat16", "fp16": "float16", "float32": "float32"}


class LaunchError(ValueError):
    """The spec does not say enough to start vLLM; the message says what to set."""


@dataclass(frozen=True)
class Launch:
    """A node's vLLM service; runs_vllm is False for Ray workers, which serve through the head."""

    runs_vllm: bool
    arguments: tuple[str, ...] = ()
    environment: tuple[tuple[str, str], ...] = ()
    serves_api: bool = False
    """This node answers the OpenAI API (the head; every node when each holds a replica)."""
    replica_per_node: bool = False
    """Every node is an independent replica: restarts roll, one node at a time."""


def layout(spec: ClusterSpec) -> plan.Layout:
    """The TP x PP x DP the service runs: the spec's numbers, or the planner's choice for "auto"."""
    par = spec.serving.parallelism
    if isinstance(par.tensor, int) and isinstance(par.pipeline, int) and isinstance(par.data, int):
        return plan.Layout(par.tensor, par.pipeline, par.data)
    architecture = plan.architecture_for_spec(spec)
    if architecture is None:
        raise LaunchError(
            'serving.parallelism has "auto" but the catalogue does not know the model: '
            "set tensor, pipeline and data, or check it with `aicluster plan --model config.json`"
        )
    chosen = plan.plan_spec(spec, architecture)
    if chosen.errors or not chosen.fits:
        reasons = "; ".join(problem.message for problem in chosen.errors) or "no layout fits"
        raise LaunchError(f"the model does not fit this cluster: {reasons}")
    return chosen.layout


def served_name(spec: ClusterSpec) -> str:
    model = spec.serving.model
    return model.hf_id or PurePosixPath(model.path or "model").name


def replica_per_node(spec: ClusterSpec, shape: plan.Layout) -> bool:
    """Data parallel across nodes with every node holding one whole replica (TP inside it)."""
    return (
        len(spec.nodes) > 1
        and shape.dp == len(spec.nodes)
        and shape.pp == 1
        and all(len(node.device_models()) == shape.tp for node in spec.nodes)
    )


def launch(spec: ClusterSpec, node: Node) -> Launch:
    serving = spec.serving
    model = serving.model
    shape = layout(spec)
    replicas = replica_per_node(spec, shape)
    multinode = len(spec.nodes) > 1 and not replicas
    backend = serving.distributed_backend if multinode else "mp"
    if backend == "ray" and node.role != "head":
        return Launch(runs_vllm=False)
    if multinode and shape.dp > 1:
        raise LaunchError("data parallel replicas spanning several nodes are not deployed yet: "
                          "give each node one whole replica (pipeline: 1, data: the node count), "
                          "or set data: 1")  # fmt: skip
    args = [
        "serve",
        model.path or model.hf_id or "",
        f"--served-model-name={served_name(spec)}",
        f"--max-model-len={model.max_context}",
        f"--tensor-parallel-size={shape.tp}",
        f"--pipeline-parallel-size={shape.pp}",
        "--host=0.0.0.0",  # the firewall decides who reaches the API port
        f"--port={serving.api_port}",
    ]
    if model.path is None and model.revision:
        args.append(f"--revision={model.revision}")
    if model.quantization in DTYPES:
        args.append(f"--dtype={DTYPES[model.quantization]}")
    elif model.quantization == "fp8":
        args.append("--quantization=fp8")
    if node.gpus:
        args.append(f"--gpu-memory-utilization={serving.gpu_memory_utilization:g}")
    if backend == "mp" and shape.dp > 1 and not replicas:
        args.append(f"--data-parallel-size={shape.dp}")
    if backend in ("mp", "ray") and shape.tp * shape.pp > 1:
        args.append(f"--distributed-executor-backend={backend}")
    if backend == "native":
        rank = [n.name for n in spec.nodes].index(node.name)
        args += [
            f"--nnodes={len(spec.nodes)}",
            f"--node-rank={rank}",
            f"--master-addr={spec.head.data_address}",
            f"--master-port={ports.VLLM_MASTER}",
        ]
        if node.role != "head":
            args.append("--headless")
    env = {"HF_HOME": f"{raycluster.STATE_DIR}/huggingface"}
    if model.path is not None:
        env["HF_HUB_OFFLINE"] = "1"  # the files are on disk: never reach for a hub
    if not node.gpus:
        env["VLLM_TARGET_DEVICE"] = "cpu"
        env["VLLM_CPU_KVCACHE_SPACE"] = f"{serving.cpu_kv_cache_gib:g}"
    if backend == "ray":
        env["RAY_ADDRESS"] = f"{spec.head.data_address}:{ports.RAY_GCS}"
        env["RAY_AUTH_MODE"] = "token"
        env["RAY_AUTH_TOKEN_PATH"] = raycluster.TOKEN_FILE
    return Launch(
        runs_vllm=True,
        arguments=tuple(args),
        environment=tuple(sorted(env.items())),
        serves_api=replicas or node.role == "head",
        replica_per_node=replicas,
    )
