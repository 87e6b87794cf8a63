"""Sizing and layout: does a model fit, does it need a cluster, and how should it be split. No I/O.

The planner answers from the model's architecture (a config.json or the built-in catalogue) and
the hardware (a ClusterSpec or an ad-hoc `--gpus 4xRTX3090`), with the engine's own rules:

- weights: every parameter counted from the architecture (embedding, attention or MLA projections,
  MLP or experts, norms, lm_head unless tied), at the bytes of the chosen quantization;
- KV cache per token: 2 x layers x KV heads x head_dim x dtype for standard attention, and
  layers x (kv_lora_rank + qk_rope_head_dim) x dtype for MLA, whose latent is one vector per token
  replicated on every tensor-parallel rank; per GPU, TP splits the KV heads (or replicates them
  when TP exceeds their number) and PP splits the layers;
- per GPU, vLLM hands the KV cache what is left of gpu_memory_utilization x memory after the
  weights and the runtime (CUDA context, NCCL buffers, CUDA graphs, activation peak);
- layouts: tensor parallel inside a node over identical GPUs, within vLLM's head rules; pipeline
  stages of consecutive layers, split as vLLM splits them; data-parallel replicas with the rest.

Every rule is cited where it is applied. Messages give whole-model sizes in GB (10^9 bytes), as
model cards quote them, and anything per device in GiB, as the inventory records device memory.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any, Literal

from aicluster import catalogue
from aicluster.spec import ClusterSpec, Loc, Problem

GIB = 1 << 30
KIB = 1 << 10
GB = 10**9

Engine = Literal["vllm", "exo"]
Link = Literal["nvlink", "pcie", "unified_memory"]

# The inventory's quantizations (aicluster.spec.ModelSource.quantization) come first (float32 is
# what the CPU engine runs the lab's model in); the rest are accepted by `plan` on the command line.
SPEC_QUANTIZATIONS = ("bf16", "fp16", "float32", "fp8", "int8", "int4")
GGUF_QUANTIZATIONS = ("q8_0", "q4_k", "q4_0")
QUANTIZATIONS = (*SPEC_QUANTIZATIONS, "mxfp4", *GGUF_QUANTIZATIONS)

# Bytes per weight of a transformer block's linear layers. The rule for the packed formats:
# - int4: 4-bit weights plus one fp16 scale per group of 128 (AWQ/GPTQ's usual group size),
#   0.5 + 2/128 = 0.515625 bytes; zero points, where a format has them, add under 1 %.
# - mxfp4: 32 four-bit values share one 8-bit exponent, 17 bytes per 32 (gpt-oss's experts).
# - llama.cpp GGUF blocks: Q8_0 34 bytes per 32 weights, Q4_0 18 per 32, Q4_K 144 per 256.
# - fp8 and int8 carry per-channel or 128x128-block scales: under 0.1 %, not counted.
# Embeddings, lm_head, norms, biases and MoE routers stay at 16 bits (32 for a float32 model), as
# AWQ, GPTQ, FP8 and MXFP4 checkpoints keep them; the small error this rule makes on formats that
# also quantize embeddings (GGUF) or keep attention at 16 bits (gpt-oss) is a few percent at most.
WEIGHT_BYTES: dict[str, Fraction] = {
    "float32": Fraction(4),
    "bf16": Fraction(2),
    "fp16": Fraction(2),
    "fp8": Fraction(1),
    "int8": Fraction(1),
    "int4": Fraction(1, 2) + Fraction(2, 128),
    "mxfp4": Fraction(17, 32),
    "q8_0": Fraction(34, 32),
    "q4_0": Fraction(18, 32),
    "q4_k": Fraction(144, 256),
}

# KV cache element sizes. vLLM's default kv_cache_dtype "auto" is the activation dtype: bf16 for
# every quantized checkpoint, float32 for a float32 model; fp8 is the opt-in --kv-cache-dtype.
KV_BYTES: dict[str, int] = {"float32": 4, "bf16": 2, "fp16": 2, "fp8": 1}

# The field's rule of thumb: model + typical context + 2x headroom, i.e. KV room for twice the
# context a request may use, so that a long request does not stall every other one.
HEADROOM = 2
# Sum of GPU TDPs above this share of the PSU rating is a power risk (transients exceed TDP).
PSU_SHARE = 0.8


class PlanError(ValueError):
    """Input the planner cannot use: unknown model or GPU, malformed config. One line, no trace."""


# --- the model --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Architecture:
    """What memory depends on, read from a config.json: shapes, never weights."""

    name: str
    model_type: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    intermediate: int
    max_position: int
    tie_embeddings: bool = False
    dtype: str = "bfloat16"
    experts: int = 0
    experts_per_token: int = 0
    moe_intermediate: int = 0
    shared_intermediate: int = 0
    """Total width of the always-active shared experts (DeepSeek, Kimi), 0 without."""
    moe_layers: frozenset[int] = frozenset()
    q_lora_rank: int = 0
    kv_lora_rank: int = 0
    """Non-zero for Multi-head Latent Attention (DeepSeek-V2/V3, Kimi K2)."""
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    qkv_bias: bool = False
    o_bias: bool = False
    qk_norm: bool = False
    router_bias: bool = False
    expert_bias: bool = False
    attention_sinks: bool = False
    sliding_window: int = 0
    sliding_layers: frozenset[int] = frozenset()

    @property
    def mla(self) -> bool:
        return self.kv_lora_rank > 0


def _int(config: dict[str, Any], key: str, default: int | None = None) -> int:
    value = config.get(key, default)
    if value is None:
        raise PlanError(f"config.json has no {key}")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PlanError(f"config.json {key} must be a whole number, not {value!r}")
    return value


def architecture_from_config(config: dict[str, Any], name: str = "model") -> Architecture:
    """Parse a Hugging Face config.json (already loaded). Raises PlanError on a malformed one.

    Multimodal configs (Kimi K2.5, Llama 4) keep the language model under text_config: read that.
    head_dim is read when given (Qwen3: 128 although hidden/heads is 80), derived otherwise."""
    if not isinstance(config, dict):
        raise PlanError("config.json must hold a JSON object")
    text = config.get("text_config")
    if isinstance(text, dict):
        config = text
    model_type = str(config.get("model_type", ""))
    layers = _int(config, "num_hidden_layers")
    hidden = _int(config, "hidden_size")
    heads = _int(config, "num_attention_heads")
    if not (layers and hidden and heads):
        raise PlanError("config.json: num_hidden_layers, hidden_size and num_attention_heads > 0")
    head_dim = _int(config, "head_dim", hidden // heads)
    experts = _int(
        config,
        "num_local_experts",
        config.get("num_experts") or config.get("n_routed_experts") or 0,
    )
    intermediate = _int(config, "intermediate_size", 0)
    moe_intermediate = _int(config, "moe_intermediate_size", intermediate) if experts else 0
    shared = _int(config, "n_shared_experts", 0) * moe_intermediate
    shared = _int(config, "shared_expert_intermediate_size", shared)
    first_dense = _int(config, "first_k_dense_replace", 0)
    step = _int(config, "decoder_sparse_step", 1) or 1
    freq = _int(config, "moe_layer_freq", 1) or 1
    dense_only = set(config.get("mlp_only_layers") or [])
    moe_layers = frozenset(
        i
        for i in range(layers)
        if experts
        and i >= first_dense
        and (i + 1) % step == 0
        and (i - first_dense) % freq == 0
        and i not in dense_only
    )
    layer_types = config.get("layer_types") or []
    sliding_layers = frozenset(
        i for i, kind in enumerate(layer_types) if kind == "sliding_attention"
    )
    gpt_oss = model_type == "gpt_oss"
    attention_bias = bool(config.get("attention_bias", False))
    return Architecture(
        name=name,
        model_type=model_type,
        layers=layers,
        hidden=hidden,
        heads=heads,
        kv_heads=_int(config, "num_key_value_heads", heads) or heads,
        head_dim=head_dim,
        vocab=_int(config, "vocab_size"),
        intermediate=intermediate,
        max_position=_int(config, "max_position_embeddings"),
        tie_embeddings=bool(config.get("tie_word_embeddings", False)),
        dtype=str(config.get("torch_dtype") or config.get("dtype") or "bfloat16"),
        experts=experts,
        experts_per_token=_int(config, "num_experts_per_tok", config.get("experts_per_token") or 0),
        moe_intermediate=moe_intermediate,
        shared_intermediate=shared if experts else 0,
        moe_layers=moe_layers,
        q_lora_rank=_int(config, "q_lora_rank", 0),
        kv_lora_rank=_int(config, "kv_lora_rank", 0),
        qk_nope_head_dim=_int(config, "qk_nope_head_dim", 0),
        qk_rope_head_dim=_int(config, "qk_rope_head_dim", 0),
        v_head_dim=_int(config, "v_head_dim", 0),
        # Qwen2 hard-codes q/k/v biases; attention_bias (Llama, gpt-oss) also biases o_proj.
        qkv_bias=attention_bias or model_type in ("qwen2", "qwen2_moe"),
        o_bias=attention_bias,
        qk_norm=model_type in ("qwen3", "qwen3_moe"),
        router_bias=gpt_oss or config.get("topk_method") == "noaux_tc",
        expert_bias=gpt_oss,
        attention_sinks=gpt_oss,
        sliding_window=_int(config, "sliding_window", 0) if sliding_layers else 0,
        sliding_layers=sliding_layers,
    )


def architecture_from_name(name: str) -> Architecture:
    """A catalogue model by name or Hugging Face id; PlanError names the known ones otherwise."""
    found = catalogue.find(name)
    if found is None:
        known = ", ".join(catalogue.CATALOGUE)
        raise PlanError(f"unknown model {name!r}: give its config.json, or one of: {known}")
    canonical, config = found
    return architecture_from_config(config, canonical)


# --- parameters and weights -------------------------------------------------------------------


@dataclass(frozen=True)
class Weights:
    """Parameters of one part of the model: linear weights that quantization shrinks, and the
    rest (norms, biases, routers, embeddings) that stays at 16 bits."""

    quantized: int = 0
    kept: int = 0

    def __add__(self, other: Weights) -> Weights:
        return Weights(self.quantized + other.quantized, self.kept + other.kept)

    @property
    def parameters(self) -> int:
        return self.quantized + self.kept

    def bytes(self, quantization: str) -> int:
        kept = 4 if quantization == "float32" else 2
        return math.ceil(self.quantized * WEIGHT_BYTES[quantization] + self.kept * kept)


def _attention(a: Architecture) -> Weights:
    if a.mla:
        # DeepSeek-V3's MLA: q through a low-rank q_a/q_b pair (or one q_proj), k/v through the
        # shared latent (kv_a_proj_with_mqa emits kv_lora_rank + the rope key), kv_b expands it.
        qk_head = a.qk_nope_head_dim + a.qk_rope_head_dim
        if a.q_lora_rank:
            q = a.hidden * a.q_lora_rank + a.q_lora_rank * a.heads * qk_head
        else:
            q = a.hidden * a.heads * qk_head
        kv = a.hidden * (a.kv_lora_rank + a.qk_rope_head_dim)
        kv += a.kv_lora_rank * a.heads * (a.qk_nope_head_dim + a.v_head_dim)
        o = a.heads * a.v_head_dim * a.hidden
        return Weights(q + kv + o, a.q_lora_rank + a.kv_lora_rank)
    q_width, kv_width = a.heads * a.head_dim, a.kv_heads * a.head_dim
    matrices = a.hidden * (q_width + 2 * kv_width) + q_width * a.hidden
    vectors = (q_width + 2 * kv_width) * a.qkv_bias + a.hidden * a.o_bias
    vectors += 2 * a.head_dim * a.qk_norm + a.heads * a.attention_sinks
    return Weights(matrices, vectors)


def _mlp(a: Architecture, layer: int) -> Weights:
    if layer not in a.moe_layers:
        return Weights(3 * a.hidden * a.intermediate)
    experts = a.experts * 3 * a.hidden * a.moe_intermediate + 3 * a.hidden * a.shared_intermediate
    router = a.hidden * a.experts + a.experts * a.router_bias
    biases = a.experts * (2 * a.moe_intermediate + a.hidden) * a.expert_bias
    return Weights(experts, router + biases)


def layer_weights(a: Architecture, layer: int) -> Weights:
    """One decoder layer: attention, MLP or experts, and its two norms."""
    return _attention(a) + _mlp(a, layer) + Weights(0, 2 * a.hidden)


def embedding_weights(a: Architecture) -> Weights:
    return Weights(0, a.vocab * a.hidden)


def head_weights(a: Architecture) -> Weights:
    """Final norm and lm_head; a tied lm_head reuses the embedding and adds nothing."""
    return Weights(0, a.hidden + (0 if a.tie_embeddings else a.vocab * a.hidden))


def model_weights(a: Architecture) -> Weights:
    total = embedding_weights(a) + head_weights(a)
    for layer in range(a.layers):
        total = total + layer_weights(a, layer)
    return total


def parameters(a: Architecture) -> int:
    return model_weights(a).parameters


def active_parameters(a: Architecture) -> int:
    """Parameters one token computes with: all but the routed experts it skips, and not the
    embedding table, which is looked up rather than multiplied (DeepSeek's and OpenAI's count;
    Qwen and Mistral add the embedding). Memory holds every expert all the same."""
    idle = a.experts - a.experts_per_token
    expert = 3 * a.hidden * a.moe_intermediate
    expert += (2 * a.moe_intermediate + a.hidden) * a.expert_bias
    return parameters(a) - embedding_weights(a).parameters - idle * expert * len(a.moe_layers)


def weights_bytes(a: Architecture, quantization: str) -> int:
    return model_weights(a).bytes(quantization)


# --- KV cache ---------------------------------------------------------------------------------


def kv_heads_per_rank(a: Architecture, tp: int) -> int:
    """KV heads one TP rank stores: split when TP divides them, one replicated head otherwise
    (vLLM: `self.num_kv_heads = max(1, self.total_num_kv_heads // tp_size)` in
    vllm/model_executor/models/llama.py LlamaAttention)."""
    return max(1, a.kv_heads // tp)


def kv_bytes_per_layer(a: Architecture, kv_dtype: str, tp: int = 1) -> int:
    """KV bytes one layer stores per token on one TP rank."""
    if a.mla:
        # One latent vector (kv_lora_rank) and one rope key per token, no separate K and V, and
        # every TP rank keeps the whole of it.
        return (a.kv_lora_rank + a.qk_rope_head_dim) * KV_BYTES[kv_dtype]
    return 2 * kv_heads_per_rank(a, tp) * a.head_dim * KV_BYTES[kv_dtype]


def _split(a: Architecture, layers: Iterable[int]) -> tuple[int, int]:
    """(full-attention layers, sliding-window layers) among these layers."""
    chosen = list(layers)
    sliding = sum(1 for layer in chosen if layer in a.sliding_layers)
    return len(chosen) - sliding, sliding


def kv_bytes_per_token(
    a: Architecture, kv_dtype: str, tp: int = 1, layers: Iterable[int] | None = None
) -> int:
    """What each further token adds to the KV cache (of these layers, on one TP rank).

    Sliding-window layers stop growing at their window, so only full-attention layers count."""
    full, _ = _split(a, range(a.layers) if layers is None else layers)
    return full * kv_bytes_per_layer(a, kv_dtype, tp)


def kv_bytes(
    a: Architecture, tokens: int, kv_dtype: str, tp: int = 1, layers: Iterable[int] | None = None
) -> int:
    """KV cache of one sequence of `tokens` tokens."""
    full, sliding = _split(a, range(a.layers) if layers is None else layers)
    per_layer = kv_bytes_per_layer(a, kv_dtype, tp)
    return per_layer * (full * tokens + sliding * min(tokens, a.sliding_window))


def kv_tokens_in(
    a: Architecture, space: int, kv_dtype: str, tp: int, layers: Iterable[int], block_size: int
) -> int:
    """Tokens whose KV cache fits in `space` bytes, in whole blocks of `block_size` tokens (vLLM
    allocates KV in blocks). A sliding-window layer holds at most its window of one sequence."""
    if space <= 0:
        return 0
    full, sliding = _split(a, layers)
    per_layer = kv_bytes_per_layer(a, kv_dtype, tp)
    window_cost = per_layer * sliding * a.sliding_window
    if full and sliding and space >= window_cost + per_layer * full * a.sliding_window:
        tokens = (space - window_cost) // (per_layer * full)
    else:
        tokens = space // (per_layer * (full + sliding))
    return tokens // block_size * block_size


def pipeline_stages(layers: int, pp: int) -> list[range]:
    """The layers of each pipeline stage, as vLLM splits them (vllm/distributed/utils.py
    get_pp_indices): equal shares, the remainder one each to the stages before the last, counting
    backwards, because the last stage also runs the final norm and lm_head."""
    sizes = [layers // pp] * pp
    for i in range(2, layers % pp + 2):
        sizes[-i] += 1
    stages, start = [], 0
    for size in sizes:
        stages.append(range(start, start + size))
        start += size
    return stages


def cpu_kv_cache_tokens(
    a: Architecture,
    space_gib: float,
    kv_dtype: str,
    tp: int = 1,
    pp: int = 1,
    block_size: int = 16,
) -> int:
    """KV capacity of vLLM's CPU backend: every worker gets VLLM_CPU_KVCACHE_SPACE GiB for the KV
    of its own layers, whatever the weights take, and the engine holds what its fullest stage
    holds. vLLM logs it at start-up as "CPU KV cache size: N tokens"."""
    space = int(space_gib * GIB)
    return min(
        kv_tokens_in(a, space, kv_dtype, tp, stage, block_size)
        for stage in pipeline_stages(a.layers, pp)
    )


def tensor_parallel_problem(a: Architecture, tp: int) -> str | None:
    """Why vLLM refuses this TP size for this model, or None.

    vllm/config.py ModelConfig.verify_with_parallel_config: "Total number of attention heads (N)
    must be divisible by tensor parallel size (T)"; vllm/model_executor/models/llama.py
    LlamaAttention: the KV heads are partitioned when num_kv_heads >= tp (then tp must divide
    them) and replicated otherwise (then num_kv_heads must divide tp). MLA has no KV heads."""
    if a.heads % tp:
        return (
            f"{a.heads} attention heads cannot be split over {tp} GPUs: vLLM requires "
            "num_attention_heads % tensor_parallel_size == 0"
        )
    if not a.mla and a.kv_heads % tp and tp % a.kv_heads:
        return (
            f"{a.kv_heads} KV heads cannot be split or replicated over {tp} GPUs: vLLM requires "
            "num_key_value_heads % tensor_parallel_size == 0 or the reverse"
        )
    return None


# --- the hardware -----------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuInfo:
    """What the planner knows about a GPU model: generation, compute capability (FP8 support),
    memory (for ad-hoc --gpus), board power (TDP), and how such cards are usually linked."""

    name: str
    generation: str
    compute_capability: float | None
    memory_gib: float
    tdp_watts: int | None
    link: Link


# Checked in order on the model name lowercased without spaces, dashes and "nvidia"/"geforce";
# NVIDIA's data sheets for capability, memory and TDP (SXM boards unless the name says PCIe/NVL).
GPU_TABLE: tuple[tuple[str, GpuInfo], ...] = (
    ("rtx3090ti", GpuInfo("NVIDIA GeForce RTX 3090 Ti", "Ampere", 8.6, 24, 450, "pcie")),
    ("rtx3090", GpuInfo("NVIDIA GeForce RTX 3090", "Ampere", 8.6, 24, 350, "pcie")),
    ("rtx4090", GpuInfo("NVIDIA GeForce RTX 4090", "Ada", 8.9, 24, 450, "pcie")),
    ("rtx5090", GpuInfo("NVIDIA GeForce RTX 5090", "Blackwell", 12.0, 32, 575, "pcie")),
    ("rtxa6000", GpuInfo("NVIDIA RTX A6000", "Ampere", 8.6, 48, 300, "pcie")),
    ("rtx6000ada", GpuInfo("NVIDIA RTX 6000 Ada Generation", "Ada", 8.9, 48, 300, "pcie")),
    ("l40s", GpuInfo("NVIDIA L40S", "Ada", 8.9, 48, 350, "pcie")),
    ("a100.*pcie", GpuInfo("NVIDIA A100 80GB PCIe", "Ampere", 8.0, 80, 300, "pcie")),
    ("a100", GpuInfo("NVIDIA A100-SXM4-80GB", "Ampere", 8.0, 80, 400, "nvlink")),
    ("h100.*pcie", GpuInfo("NVIDIA H100 PCIe", "Hopper", 9.0, 80, 350, "pcie")),
    ("h100.*nvl", GpuInfo("NVIDIA H100 NVL", "Hopper", 9.0, 94, 400, "nvlink")),
    ("h100", GpuInfo("NVIDIA H100 80GB HBM3", "Hopper", 9.0, 80, 700, "nvlink")),
    ("h200", GpuInfo("NVIDIA H200", "Hopper", 9.0, 141, 700, "nvlink")),
    ("b200", GpuInfo("NVIDIA B200", "Blackwell", 10.0, 180, 1000, "nvlink")),
    # Apple silicon: one GPU sharing the machine's unified memory; give its size (:GiB).
    ("applem|^m[1-5]", GpuInfo("Apple M-series", "Apple silicon", None, 0, None, "unified_memory")),
)


def _gpu_key(name: str) -> str:
    key = name.lower()
    for noise in ("nvidia", "geforce", " ", "-", "_"):
        key = key.replace(noise, "")
    return key


def gpu_info(model: str) -> GpuInfo | None:
    key = _gpu_key(model)
    for pattern, info in GPU_TABLE:
        if re.search(pattern, key):
            return info
    return None


@dataclass(frozen=True)
class Device:
    """One accelerator, or one CPU worker (memory_gib None: the engine fixes its KV space)."""

    model: str
    memory_gib: float | None

    @property
    def unified(self) -> bool:
        info = gpu_info(self.model)
        return info is not None and info.link == "unified_memory"


@dataclass(frozen=True)
class NodeHardware:
    name: str
    devices: tuple[Device, ...]
    link: Link | None = None
    psu_watts: int | None = None
    pcie_lanes: int | None = None
    """Lanes of the narrowest GPU slot, when the facts have read it (lspci/nvidia-smi)."""


@dataclass(frozen=True)
class Hardware:
    engine: Engine
    nodes: tuple[NodeHardware, ...]
    fabric: str = "ethernet"
    fabric_gbps: float | None = None

    def devices(self) -> list[tuple[NodeHardware, Device]]:
        return [(node, device) for node in self.nodes for device in node.devices]


def hardware_from_spec(spec: ClusterSpec) -> Hardware:
    nodes = []
    for node in spec.nodes:
        devices = tuple(
            Device(group.model, group.memory_gib) for group in node.gpus for _ in range(group.count)
        ) or (Device("cpu", None),)
        nodes.append(NodeHardware(node.name, devices, node.accelerator_link, node.psu_watts))
    rates = [port.rate_gbps for node in spec.nodes for port in node.fabric]
    return Hardware(
        spec.cluster.engine, tuple(nodes), spec.cluster.fabric, min(rates, default=None)
    )


_GPUS_PATTERN = re.compile(r"^(?:(\d+)\s*[x*]\s*)?([A-Za-z][\w .-]*?)(?::(\d+(?:\.\d+)?))?$")


def parse_gpus(text: str, nodes: int = 1) -> Hardware:
    """Hardware from `[COUNT x]MODEL[:GiB]` per node, e.g. 4xRTX3090, 8xH100, 1xM3-Ultra:192.

    Memory comes from GPU_TABLE unless given; Apple silicon needs it (it is the machine's RAM)."""
    match = _GPUS_PATTERN.match(text.strip())
    if not match or nodes < 1:
        raise PlanError(f"--gpus {text!r}: expected COUNTxMODEL[:GiB], e.g. 4xRTX3090 or 2xH100:80")
    count = int(match.group(1) or 1)
    model, memory = match.group(2).strip(), match.group(3)
    info = gpu_info(model)
    if count < 1:
        raise PlanError(f"--gpus {text!r}: the count must be at least 1")
    if memory is None and (info is None or not info.memory_gib):
        raise PlanError(f"--gpus {text!r}: unknown memory size of {model}; write it as {model}:GiB")
    memory_gib = float(memory) if memory is not None else float(info.memory_gib if info else 0)
    name = info.name if info and info.memory_gib else model
    unified = info is not None and info.link == "unified_memory"
    link: Link | None = info.link if info else "pcie"
    node_list = tuple(
        NodeHardware(
            f"node{index + 1}",
            tuple(Device(name, memory_gib) for _ in range(count)),
            link if (count > 1 or unified) else None,
        )
        for index in range(nodes)
    )
    return Hardware("exo" if unified else "vllm", node_list)


# --- engine settings and the request ----------------------------------------------------------


@dataclass(frozen=True)
class EngineSettings:
    gpu_memory_utilization: float = 0.9
    """vLLM's default: the share of each GPU it may use for weights, runtime and KV cache."""
    unified_memory_fraction: float = 0.75
    """macOS lets the GPU wire about 75 % of a Mac's RAM by default (iogpu.wired_limit_mb raises it)."""
    runtime_overhead_gib: float = 1.5
    """Per GPU, beside weights and KV: CUDA context, NCCL buffers, CUDA graphs and the activation
    peak vLLM profiles at its default 8192 batched tokens. An estimate; vLLM logs the real one."""
    cpu_kv_cache_gib: float = 4.0
    """VLLM_CPU_KVCACHE_SPACE; vLLM's CPU backend uses 4 GiB when it is unset (vllm/platforms/cpu.py)."""
    block_size: int = 16
    """vLLM's default KV block size, in tokens."""


@dataclass(frozen=True)
class Request:
    """What to serve: quantization, context per request, concurrent users, and any fixed degree
    (None = search it)."""

    quantization: str
    context: int
    users: int = 1
    kv_dtype: str | None = None
    tensor: int | None = None
    pipeline: int | None = None
    data: int | None = None

    def kv(self) -> str:
        if self.kv_dtype is not None:
            return self.kv_dtype
        return "float32" if self.quantization == "float32" else "bf16"

    @property
    def fixed(self) -> bool:
        return None not in (self.tensor, self.pipeline, self.data)


def request_from_spec(spec: ClusterSpec, users: int = 1) -> Request:
    par = spec.serving.parallelism
    model = spec.serving.model

    def degree(value: int | str) -> int | None:
        return value if isinstance(value, int) else None

    return Request(
        quantization=model.quantization,
        context=model.max_context,
        users=users,
        tensor=degree(par.tensor),
        pipeline=degree(par.pipeline),
        data=degree(par.data),
    )


def architecture_for_spec(spec: ClusterSpec) -> Architecture | None:
    """The catalogue's architecture for the spec's hf_id (or model directory name), if known."""
    source = spec.serving.model
    for name in (source.hf_id, source.path):
        if name and catalogue.find(name.rstrip("/")):
            return architecture_from_name(name.rstrip("/"))
    return None


# --- the plan ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    tp: int
    pp: int
    dp: int

    def __str__(self) -> str:
        return f"TP={self.tp} x PP={self.pp} x DP={self.dp}"


@dataclass(frozen=True)
class Placement:
    """One device's share: which replica and stage, its layers, and its attention heads."""

    node: str
    device_index: int
    replica: int
    stage: int
    tp_rank: int
    layers: range
    heads: range
    kv_heads: range


@dataclass(frozen=True)
class Stage:
    """One pipeline stage, sized for the weakest device that runs it in any replica."""

    index: int
    layers: range
    nodes: tuple[str, ...]
    device: Device
    weights_bytes: int
    """Per device."""
    kv_bytes_per_token: int
    """Per device, per further token."""
    budget_bytes: int | None
    """Per device: what the engine may use (None on a CPU worker, whose weights live in RAM)."""
    kv_space_bytes: int
    kv_tokens: int


@dataclass(frozen=True)
class Evaluation:
    layout: Layout
    stages: tuple[Stage, ...]
    kv_tokens: int
    """Tokens one replica can keep in its KV cache: its fullest stage decides."""
    problems: tuple[str, ...]

    @property
    def fits(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class Plan:
    model: str
    quantization: str
    kv_dtype: str
    context: int
    users: int
    parameters: int
    weights_bytes: int
    kv_bytes_per_token: int
    kv_bytes_at_context: int
    layout: Layout
    stages: tuple[Stage, ...]
    placements: tuple[Placement, ...]
    fits: bool
    needs_cluster: bool
    max_context_tokens: int
    concurrent_sequences: int
    reason: tuple[str, ...]
    warnings: tuple[str, ...]
    errors: tuple[Problem, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "quantization": self.quantization,
            "kv_cache_dtype": self.kv_dtype,
            "context": self.context,
            "users": self.users,
            "parameters": self.parameters,
            "weights_bytes": self.weights_bytes,
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "kv_bytes_at_context": self.kv_bytes_at_context,
            "layout": {"tp": self.layout.tp, "pp": self.layout.pp, "dp": self.layout.dp},
            "fits": self.fits,
            "needs_cluster": self.needs_cluster,
            "max_context_tokens": self.max_context_tokens,
            "concurrent_sequences": self.concurrent_sequences,
            "stages": [
                {
                    "stage": stage.index + 1,
                    "layers": [stage.layers.start, stage.layers.stop - 1],
                    "nodes": list(stage.nodes),
                    "device": stage.device.model,
                    "weights_bytes_per_device": stage.weights_bytes,
                    "kv_bytes_per_token_per_device": stage.kv_bytes_per_token,
                    "kv_tokens": stage.kv_tokens,
                }
                for stage in self.stages
            ],
            "reason": list(self.reason),
            "warnings": list(self.warnings),
            "errors": [problem.message for problem in self.errors],
        }


def _gb(value: int) -> str:
    """A whole-model size: GB as model cards give them, MB for the lab's tiny models."""
    return f"{value / GB:,.1f} GB" if value >= GB / 10 else f"{value / 10**6:,.1f} MB"


def _count(value: int) -> str:
    return f"{value / 1e9:,.1f} B" if value >= 10**8 else f"{value / 1e6:,.1f} M"


def _gib(value: float) -> str:
    return f"{value / GIB:,.1f} GiB"


def _per_token(value: int) -> str:
    return f"{value / KIB:,.0f} KiB" if value >= KIB else f"{value} bytes"


def _device_budget(device: Device, settings: EngineSettings) -> tuple[int, str]:
    """Bytes the engine may use on this device, and how that was reckoned."""
    assert device.memory_gib is not None
    share = settings.unified_memory_fraction if device.unified else settings.gpu_memory_utilization
    why = "macOS GPU wired-memory share" if device.unified else "gpu_memory_utilization"
    return int(device.memory_gib * GIB * share), f"{device.memory_gib:g} GiB x {share:g} {why}"


def _assign(hardware: Hardware, layout: Layout) -> list[list[list[tuple[NodeHardware, int]]]]:
    """[replica][stage] -> the (node, device index) of each TP rank. Ranks fill devices in node
    order, stage after stage, replica after replica, so a TP group never leaves a node when TP
    divides every node's device count."""
    flat = [(node, index) for node in hardware.nodes for index in range(len(node.devices))]
    group = layout.tp
    return [
        [
            flat[(replica * layout.pp + stage) * group : (replica * layout.pp + stage + 1) * group]
            for stage in range(layout.pp)
        ]
        for replica in range(layout.dp)
    ]


def _evaluate(
    a: Architecture,
    hardware: Hardware,
    layout: Layout,
    request: Request,
    settings: EngineSettings,
) -> Evaluation:
    kv_dtype = request.kv()
    assignment = _assign(hardware, layout)
    stage_layers = pipeline_stages(a.layers, layout.pp)
    stages, problems = [], []
    for index, layers in enumerate(stage_layers):
        part = Weights()
        for layer in layers:
            part = part + layer_weights(a, layer)
        if index == 0:
            part = part + embedding_weights(a)
        if index == layout.pp - 1:
            # A tied lm_head on a later stage than the embedding is a copy of it (vLLM loads it).
            tied_copy = a.tie_embeddings and layout.pp > 1
            part = part + head_weights(a) + (embedding_weights(a) if tied_copy else Weights())
        # TP shards every matrix; the few replicated vectors are noise at this scale.
        weights = math.ceil(part.bytes(request.quantization) / layout.tp)
        per_token = kv_bytes_per_token(a, kv_dtype, layout.tp, layers)
        ranks = [rank for replica in assignment for rank in replica[index]]
        devices = [node.devices[i] for node, i in ranks]
        nodes = tuple(dict.fromkeys(node.name for node, _ in assignment[0][index]))
        gpus = [d for d in devices if d.memory_gib is not None]
        if gpus:
            device = min(gpus, key=lambda d: d.memory_gib or 0)
            budget, how = _device_budget(device, settings)
            overhead = int(settings.runtime_overhead_gib * GIB)
            space = budget - weights - overhead
            if space <= 0:
                problems.append(
                    f"stage {index + 1} (layers {layers.start}-{layers.stop - 1}): "
                    f"{_gib(weights)} of weights + {settings.runtime_overhead_gib:g} GiB runtime per "
                    f"device exceed the {_gib(budget)} one {device.model} gives the engine ({how})"
                )
        else:
            device, budget = devices[0], None
            space = int(settings.cpu_kv_cache_gib * GIB)
        tokens = kv_tokens_in(a, space, kv_dtype, layout.tp, layers, settings.block_size)
        stages.append(
            Stage(index, layers, nodes, device, weights, per_token, budget, space, tokens)
        )
    kv_tokens = min(stage.kv_tokens for stage in stages)
    if not problems and kv_tokens < min(request.context, a.max_position):
        worst = min(stages, key=lambda s: s.kv_tokens)
        need = kv_bytes(a, request.context, kv_dtype, layout.tp, worst.layers)
        problems.append(
            f"the KV cache of one {request.context:,}-token request needs {_gib(need)} per device "
            f"in stage {worst.index + 1}, which has {_gib(max(worst.kv_space_bytes, 0))} left after "
            f"weights and runtime: at most {kv_tokens:,} tokens fit"
        )
    return Evaluation(layout, tuple(stages), kv_tokens, tuple(problems))


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _layouts(a: Architecture, hardware: Hardware, request: Request) -> list[Layout]:
    """Every layout of all devices the engine allows and the request does not rule out."""
    total = sum(len(node.devices) for node in hardware.nodes)
    per_node = [len(node.devices) for node in hardware.nodes]
    layouts = []
    for tp in _divisors(total):
        # vLLM keeps a TP group inside one node; Exo shards tensors across Macs.
        if hardware.engine == "vllm" and any(count % tp for count in per_node):
            continue
        if tensor_parallel_problem(a, tp):
            continue
        for pp in _divisors(total // tp):
            layout = Layout(tp, pp, total // (tp * pp))
            wanted = (request.tensor, request.pipeline, request.data)
            actual = (layout.tp, layout.pp, layout.dp)
            if pp <= a.layers and all(w in (None, v) for w, v in zip(wanted, actual, strict=True)):
                layouts.append(layout)
    return layouts


def _rank(evaluation: Evaluation, request: Request) -> tuple[bool, bool, int, int, int]:
    """Preference among layouts: fits; room for every user and the 2x headroom; then as many
    replicas as possible (throughput); then fewer pipeline stages (no bubbles), i.e. more TP."""
    layout = evaluation.layout
    comfortable = evaluation.kv_tokens >= HEADROOM * request.context
    serves = layout.dp * (evaluation.kv_tokens // request.context) >= request.users
    return (evaluation.fits, comfortable and serves, layout.dp, -layout.pp, layout.tp)


def _placements(a: Architecture, hardware: Hardware, evaluation: Evaluation) -> list[Placement]:
    layout = evaluation.layout
    q_per_rank = a.heads // layout.tp
    kv_per_rank = kv_heads_per_rank(a, layout.tp)
    placements = []
    for replica, stages in enumerate(_assign(hardware, layout)):
        for stage, ranks in enumerate(stages):
            for tp_rank, (node, index) in enumerate(ranks):
                # Replicated KV heads: rank r serves KV head r * kv_heads // tp.
                kv_first = (tp_rank * a.kv_heads // layout.tp) if not a.mla else 0
                placements.append(
                    Placement(
                        node=node.name,
                        device_index=index,
                        replica=replica,
                        stage=stage,
                        tp_rank=tp_rank,
                        layers=evaluation.stages[stage].layers,
                        heads=range(tp_rank * q_per_rank, (tp_rank + 1) * q_per_rank),
                        kv_heads=range(0)
                        if a.mla
                        else range(kv_first, min(a.kv_heads, kv_first + kv_per_rank)),
                    )
                )
    return placements


def _hardware_warnings(hardware: Hardware, request: Request) -> tuple[list[str], list[Problem]]:
    warnings: list[str] = []
    errors: list[Problem] = []
    quant_loc: Loc = ("serving", "model", "quantization")
    models = sorted({device.model for _, device in hardware.devices()})
    if len(models) > 1:
        warnings.append(
            f"mixed devices ({', '.join(models)}): each stage is sized for its smallest device, "
            "and a pipeline runs at the pace of its slowest stage"
        )
    for model in models:
        if model == "cpu":
            continue
        info = gpu_info(model)
        if info is None:
            warnings.append(
                f"{model}: not in the planner's GPU table, so FP8 and power go unchecked"
            )
            continue
        capability = info.compute_capability
        if request.quantization != "fp8":
            continue
        if capability is None:
            errors.append(Problem(quant_loc, f"{model}: MLX has no FP8 weights; use int8 or int4"))
        elif capability < 8.9:
            # vLLM's fp8 method falls back to weight-only FP8 through Marlin before Ada.
            warnings.append(
                f"{model} ({info.generation}, compute capability {capability}) has no FP8 "
                "tensor cores (Ada 8.9, Hopper 9.0 and newer do): vLLM runs FP8 checkpoints as "
                "weight-only FP8 (Marlin), same memory, slower than on FP8 hardware"
            )
    if request.quantization in GGUF_QUANTIZATIONS:
        if hardware.engine == "exo":
            errors.append(Problem(quant_loc, "Exo (MLX) does not load GGUF files"))
        else:
            warnings.append("vLLM's GGUF loading is experimental: prefer AWQ/GPTQ int4 or FP8")
    for node in hardware.nodes:
        watts = [gpu_info(d.model) for d in node.devices]
        tdp = sum(info.tdp_watts for info in watts if info and info.tdp_watts)
        if node.psu_watts and tdp > PSU_SHARE * node.psu_watts:
            warnings.append(
                f"{node.name}: its GPUs draw up to {tdp} W (TDP), {tdp / node.psu_watts:.0%} of the "
                f"{node.psu_watts} W PSU, above {PSU_SHARE:.0%}: power-limit them "
                "(nvidia-smi -pl) or fit a bigger PSU, as transients exceed TDP"
            )
        if node.pcie_lanes is not None and node.pcie_lanes <= 4:
            warnings.append(
                f"{node.name}: a GPU sits on a PCIe x{node.pcie_lanes} link; tensor-parallel "
                "all-reduces will wait on it"
            )
    return warnings, errors


def _explain(
    a: Architecture,
    hardware: Hardware,
    request: Request,
    settings: EngineSettings,
    chosen: Evaluation,
    single: Evaluation,
    alternatives: list[Evaluation],
) -> list[str]:
    """The reasons for the layout, in plain words and with the numbers behind them."""
    layout = chosen.layout
    kv_dtype = request.kv()
    active = f" ({_count(active_parameters(a))} active per token)" if a.experts else ""
    lines = [
        f"{a.name}: {_count(parameters(a))} parameters{active}, "
        f"{_gb(weights_bytes(a, request.quantization))} of weights at {request.quantization}; KV cache "
        f"{_per_token(kv_bytes_per_token(a, kv_dtype))} per token at {kv_dtype}, "
        f"{_gb(kv_bytes(a, request.context, kv_dtype))} for one {request.context:,}-token request."
    ]
    device = single.stages[0].device
    if single.fits:
        lines.append(
            f"One {device.model} holds it with room for {single.kv_tokens:,} tokens: "
            "no cluster needed."
        )
    else:
        lines.append(f"One {device.model} cannot: {single.problems[0]}. It needs several devices.")
    if not chosen.fits:
        lines.append(f"No layout of these devices holds it; the largest replica is {layout}.")
    elif request.fixed:
        lines.append(f"The inventory fixes the layout: {layout}.")
    else:
        spare = ", the other devices as replicas" if layout.dp > 1 else ""
        if chosen.kv_tokens >= HEADROOM * request.context:
            lines.append(
                f"Chosen {layout}: the fewest devices per replica that hold the weights and leave "
                f"KV room for {HEADROOM}x the {request.context:,}-token context{spare}."
            )
        else:
            lines.append(
                f"Chosen {layout}: no layout leaves KV room for {HEADROOM}x the "
                f"{request.context:,}-token context; this one serves the most requests{spare}."
            )
    if layout.tp > 1:
        kv = (
            "the whole MLA latent each"
            if a.mla
            else f"{kv_heads_per_rank(a, layout.tp)} of {a.kv_heads} KV heads each"
        )
        where = (
            "which is why vLLM keeps the group inside one node"
            if hardware.engine == "vllm"
            else "which Exo carries between the Macs over RDMA"
        )
        lines.append(
            f"TP={layout.tp}: {layout.tp} devices share every layer of a stage, "
            f"{a.heads // layout.tp} of {a.heads} query heads and {kv}; each layer ends in an "
            f"all-reduce among them, {where}."
        )
    if layout.pp > 1:
        spans = "; ".join(
            f"layers {s.layers.start}-{s.layers.stop - 1} on {', '.join(s.nodes)}"
            for s in chosen.stages
        )
        lines.append(
            f"PP={layout.pp}: {spans}. Only activations cross between stages, a few MB per "
            "batch, so a node-to-node network suffices."
        )
    if layout.dp > 1:
        lines.append(f"DP={layout.dp}: {layout.dp} independent replicas share the requests.")
    stage = max(chosen.stages, key=lambda s: s.weights_bytes)
    if stage.budget_bytes is not None:
        lines.append(
            f"Per device: {_gib(stage.weights_bytes)} of weights + "
            f"{settings.runtime_overhead_gib:g} GiB runtime of {_gib(stage.budget_bytes)} "
            f"usable leave {_gib(max(stage.kv_space_bytes, 0))} for KV at "
            f"{_per_token(stage.kv_bytes_per_token)} per token."
        )
    context_fits = min(chosen.kv_tokens, a.max_position)
    limit = " (the model's own limit)" if chosen.kv_tokens >= a.max_position else ""
    sequences = layout.dp * (chosen.kv_tokens // request.context)
    lines.append(
        f"Longest request that fits: {context_fits:,} tokens{limit}; at {request.context:,} tokens, "
        f"{sequences} such request{'' if sequences == 1 else 's'} at once."
    )
    if chosen.fits:
        lines.extend(_compare(request, chosen, alternatives))
    return lines


def _compare(request: Request, chosen: Evaluation, alternatives: list[Evaluation]) -> list[str]:
    """What the planner would pick instead of a fixed layout, or else why a replica on fewer
    devices (hence more replicas) falls short."""
    best = max(alternatives, key=lambda e: _rank(e, request))
    if _rank(best, request) > _rank(chosen, request):
        sequences = best.layout.dp * (best.kv_tokens // request.context)
        return [
            f"The planner would choose {best.layout}: room for {best.kv_tokens:,} tokens per "
            f"replica, {sequences} requests of {request.context:,} tokens at once."
        ]
    size = chosen.layout.tp * chosen.layout.pp
    smaller = [e for e in alternatives if e.layout.tp * e.layout.pp < size]
    if not smaller:
        return []
    # The largest replica short of the chosen one, the best of its size: the real contender.
    runner_up = max(smaller, key=lambda e: (e.fits, e.layout.tp * e.layout.pp, _rank(e, request)))
    sequences = runner_up.layout.dp * (runner_up.kv_tokens // request.context)
    if not runner_up.fits:
        why = runner_up.problems[0]
    elif runner_up.kv_tokens < HEADROOM * request.context:
        why = (
            f"it leaves room for {runner_up.kv_tokens:,} tokens per replica, under the "
            f"{HEADROOM}x headroom of {HEADROOM * request.context:,}"
        )
    else:
        why = f"it holds {sequences} requests at once, for {request.users} users"
    return [f"Not {runner_up.layout} with fewer devices per replica: {why}."]


def plan(
    a: Architecture,
    hardware: Hardware,
    request: Request,
    settings: EngineSettings | None = None,
) -> Plan:
    """Size the model on this hardware and choose (or check) its layout."""
    settings = settings or EngineSettings()
    if request.quantization not in WEIGHT_BYTES:
        raise PlanError(
            f"unknown quantization {request.quantization!r}: {', '.join(QUANTIZATIONS)}"
        )
    if request.kv() not in KV_BYTES:
        raise PlanError(f"unknown KV cache dtype {request.kv()!r}: {', '.join(KV_BYTES)}")
    if request.context < 1 or request.users < 1:
        raise PlanError("the context and the number of users must be at least 1")
    warnings, errors = _hardware_warnings(hardware, request)
    if request.context > a.max_position:
        errors.append(
            Problem(
                ("serving", "model", "max_context"),
                f"{request.context:,} tokens exceed {a.name}'s limit of {a.max_position:,} "
                "(max_position_embeddings)",
            )
        )

    layouts = _layouts(a, hardware, request)
    if not layouts:
        return _refused(a, hardware, request, settings, warnings, errors)
    evaluations = [_evaluate(a, hardware, layout, request, settings) for layout in layouts]
    chosen = max(evaluations, key=lambda e: _rank(e, request))
    if not chosen.fits:
        # Nothing fits: report the largest replica, whose shortfall is the smallest.
        chosen = max(evaluations, key=lambda e: (e.layout.tp * e.layout.pp, -e.layout.pp))
        for problem in chosen.problems:
            errors.append(Problem(("serving", "parallelism"), f"{chosen.layout}: {problem}"))
    # Every layout the hardware allows, fixed degrees or not: what the explanation compares with.
    free = replace(request, tensor=None, pipeline=None, data=None)
    alternatives = [
        _evaluate(a, hardware, layout, free, settings) for layout in _layouts(a, hardware, free)
    ]

    biggest = max((d for _, d in hardware.devices()), key=lambda d: d.memory_gib or 0)
    single_hw = Hardware(hardware.engine, (NodeHardware("one", (biggest,)),))
    single = _evaluate(a, single_hw, Layout(1, 1, 1), request, settings)

    sequences = chosen.layout.dp * (chosen.kv_tokens // request.context)
    if chosen.fits:
        if sequences < request.users:
            warnings.append(
                f"{request.users} users at {request.context:,} tokens each need "
                f"{request.users} full requests in KV at once; this layout holds {sequences}: "
                "the rest wait"
            )
        elif chosen.kv_tokens < HEADROOM * request.context:
            warnings.append(
                f"KV room for {chosen.kv_tokens:,} tokens per replica, under the {HEADROOM}x "
                f"headroom rule of thumb ({HEADROOM * request.context:,}): long requests will queue"
            )
    pcie_only = [
        node.name
        for node in hardware.nodes
        if node.link == "pcie" and len(node.devices) >= chosen.layout.tp > 2
    ]
    if pcie_only:
        warnings.append(
            f"{', '.join(pcie_only)}: tensor parallel over {chosen.layout.tp} GPUs on PCIe only "
            "(no NVLink): every layer all-reduces across the cards over PCIe; expect well below "
            "NVLink throughput, and try TP=2 with more pipeline stages if it still fits"
        )
    if any(d.memory_gib is None for _, d in hardware.devices()):
        per_worker = max(stage.weights_bytes for stage in chosen.stages)
        warnings.append(
            f"CPU workers keep their weights ({_gib(per_worker)} each) in RAM, which the inventory "
            f"does not record, beside the {settings.cpu_kv_cache_gib:g} GiB KV cache "
            "(VLLM_CPU_KVCACHE_SPACE): check each node has room"
        )
    return Plan(
        **_sizing(a, request),
        layout=chosen.layout,
        stages=chosen.stages,
        placements=tuple(_placements(a, hardware, chosen)),
        fits=chosen.fits and not errors,
        needs_cluster=not single.fits,
        max_context_tokens=min(chosen.kv_tokens, a.max_position),
        concurrent_sequences=sequences,
        reason=tuple(_explain(a, hardware, request, settings, chosen, single, alternatives)),
        warnings=tuple(warnings),
        errors=tuple(errors),
    )


def _sizing(a: Architecture, request: Request) -> dict[str, Any]:
    """What a plan says of the model whatever the layout: its size, and its KV cache per token."""
    kv_dtype = request.kv()
    return {
        "model": a.name,
        "quantization": request.quantization,
        "kv_dtype": kv_dtype,
        "context": request.context,
        "users": request.users,
        "parameters": parameters(a),
        "weights_bytes": weights_bytes(a, request.quantization),
        "kv_bytes_per_token": kv_bytes_per_token(a, kv_dtype),
        "kv_bytes_at_context": kv_bytes(a, request.context, kv_dtype),
    }


def _refused(
    a: Architecture,
    hardware: Hardware,
    request: Request,
    settings: EngineSettings,
    warnings: list[str],
    errors: list[Problem],
) -> Plan:
    """No layout is allowed at all (the fixed TP breaks vLLM's head rules, or the degrees do not
    multiply to the devices): the plan says why and sizes nothing per device."""
    loc: Loc = ("serving", "parallelism")
    problem = tensor_parallel_problem(a, request.tensor) if request.tensor else None
    errors.append(
        Problem(loc, f"tensor {request.tensor}: {problem}")
        if problem
        else Problem(loc, f"no layout of these devices allows {_wanted(request)}")
    )
    layout = Layout(request.tensor or 1, request.pipeline or 1, request.data or 1)
    return Plan(
        **_sizing(a, request),
        layout=layout,
        stages=(),
        placements=(),
        fits=False,
        needs_cluster=True,
        max_context_tokens=0,
        concurrent_sequences=0,
        reason=(f"No layout is possible: {errors[-1].message}.",),
        warnings=tuple(warnings),
        errors=tuple(errors),
    )


def _wanted(request: Request) -> str:
    parts = [
        f"{name} {value}"
        for name, value in (
            ("tensor", request.tensor),
            ("pipeline", request.pipeline),
            ("data", request.data),
        )
        if value is not None
    ]
    return " x ".join(parts) or "any layout"


def plan_spec(
    spec: ClusterSpec, a: Architecture, settings: EngineSettings | None = None, users: int = 1
) -> Plan:
    """Plan the spec's own model, quantization, context and (fixed or auto) layout, with the
    spec's engine settings unless others are given."""
    settings = settings or settings_from_spec(spec)
    return plan(a, hardware_from_spec(spec), request_from_spec(spec, users), settings)


def settings_from_spec(spec: ClusterSpec) -> EngineSettings:
    return EngineSettings(
        gpu_memory_utilization=spec.serving.gpu_memory_utilization,
        cpu_kv_cache_gib=spec.serving.cpu_kv_cache_gib,
    )


def spec_problems(spec: ClusterSpec, settings: EngineSettings | None = None) -> list[Problem]:
    """Why this valid spec cannot serve its model, located for `validate` and the deploys.

    Models the catalogue does not know are not checked here: `aicluster plan --model config.json`
    checks them from their config."""
    a = architecture_for_spec(spec)
    if a is None:
        return []
    return list(plan_spec(spec, a, settings).errors)
