"""The planner against independent references: published parameter counts, KV-cache sizes, vLLM's
own rules and logs, and the field's sizing figures. Each test names its source."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from aicluster import catalogue, tinymodel
from aicluster import plan as P
from aicluster.inventory import load_spec
from aicluster.spec import ClusterSpec, ModelSource

INVENTORIES = Path(__file__).parents[2] / "inventories"

# The lab's tiny model, as aicluster/tinymodel.py writes its config.json: 4 layers, 2 KV heads of
# 64, float32.
TINY_LLAMA: dict[str, Any] = tinymodel.config()

# meta-llama/Llama-3.2-3B's config.json as citsjtu2020/LLM-Prof sglang/Model_Config.md keeps it:
# 24 query heads over 8 KV heads, head_dim 128, tied embeddings.
LLAMA_3_2_3B: dict[str, Any] = {
    "model_type": "llama",
    "head_dim": 128,
    "hidden_size": 3072,
    "intermediate_size": 8192,
    "max_position_embeddings": 131072,
    "num_attention_heads": 24,
    "num_hidden_layers": 28,
    "num_key_value_heads": 8,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "vocab_size": 128256,
}


def model(name: str) -> P.Architecture:
    return P.architecture_from_name(name)


def homelab() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((INVENTORIES / "homelab.yaml").read_text())
    return data


# --- parameters ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "published", "tolerance"),
    [
        # Model cards and the issue: Llama 3.1 70B is 70.6 B (llmrun.dev lists Llama 3.3 70B's
        # "Parameters 70.6B"; dexiio.pages.dev "70.55B-parameter").
        ("meta-llama/Llama-3.1-70B-Instruct", 70.6e9, 0.001),
        ("meta-llama/Llama-3.3-70B-Instruct", 70.6e9, 0.001),
        # Meta names them for their size: 8 B and 405 B.
        ("meta-llama/Llama-3.1-8B-Instruct", 8.0e9, 0.005),
        ("meta-llama/Llama-3.1-405B-Instruct", 405e9, 0.005),
        # tenstorrent/tt-metal models/demos/deepseek_v3/reference/README_WEIGHTS.md (DeepSeek's
        # README_WEIGHTS): "Total parameters: 671B" for the 61 main layers, MTP module excluded.
        ("deepseek-ai/DeepSeek-V3", 671e9, 0.001),
        # keras-team/keras-hub keras_hub/src/models/qwen3_moe/qwen3_moe_presets.py:
        # "params": 30532122624 for qwen3_moe_30b_a3b_en, counted from the real weights.
        ("Qwen/Qwen3-30B-A3B", 30_532_122_624, 0.0),
        # The name: 235 B total, 22 B active.
        ("Qwen/Qwen3-235B-A22B", 235e9, 0.001),
        # openai/gpt-oss README.md: "117B parameters" and "21B parameters".
        ("openai/gpt-oss-120b", 117e9, 0.005),
        ("openai/gpt-oss-20b", 21e9, 0.005),
        # Moonshot's description (quoted in Helicone/helicone packages/cost/models/authors/
        # moonshotai/kimi-k2/models.ts): "1 trillion total parameters".
        ("moonshotai/Kimi-K2-Instruct", 1e12, 0.03),
    ],
)
def test_parameters_match_published_totals(name: str, published: float, tolerance: float) -> None:
    counted = P.parameters(model(name))
    assert abs(counted - published) <= tolerance * published, f"{counted:,} vs {published:,.0f}"


@pytest.mark.parametrize(
    ("name", "published", "embedding_counted"),
    [
        # README_WEIGHTS.md (tenstorrent/tt-metal copy): "Activation parameters: 36.6B
        # (including 0.9B for the output Head)", i.e. without the embedding table.
        ("deepseek-ai/DeepSeek-V3", 36.6e9, False),
        # openai/gpt-oss README.md: "5.1B active parameters" and "3.6B active parameters".
        ("openai/gpt-oss-120b", 5.1e9, False),
        ("openai/gpt-oss-20b", 3.6e9, False),
        # keras-team/keras-hub qwen3_moe_presets.py: "3.3 billion activated", embedding included.
        ("Qwen/Qwen3-30B-A3B", 3.3e9, True),
    ],
)
def test_active_parameters_match_published_figures(
    name: str, published: float, embedding_counted: bool
) -> None:
    a = model(name)
    active = P.active_parameters(a) + (a.vocab * a.hidden if embedding_counted else 0)
    assert active == pytest.approx(published, rel=0.02)


def test_tied_embeddings_are_counted_once() -> None:
    untied = P.architecture_from_config({**LLAMA_3_2_3B, "tie_word_embeddings": False})
    tied = P.architecture_from_config(LLAMA_3_2_3B)
    assert P.parameters(untied) - P.parameters(tied) == 128256 * 3072


# --- weights by quantization --------------------------------------------------------------------


def test_the_inventory_quantizations_are_all_understood() -> None:
    field = ModelSource.model_fields["quantization"].annotation
    assert set(get_args(field)) == set(P.SPEC_QUANTIZATIONS)
    assert set(P.QUANTIZATIONS) == set(P.WEIGHT_BYTES)
    assert "float32" in P.QUANTIZATIONS and "float32" in P.KV_BYTES


def test_weights_bytes_follow_the_stated_rule() -> None:
    a = model("meta-llama/Llama-3.1-70B-Instruct")
    whole = P.model_weights(a)
    assert P.weights_bytes(a, "bf16") == 2 * P.parameters(a)
    assert P.weights_bytes(a, "float32") == 4 * P.parameters(a)
    # int4: 0.5 byte + one fp16 scale per 128 weights in the blocks; embeddings stay 16-bit.
    expected = whole.quantized * (0.5 + 2 / 128) + whole.kept * 2
    assert P.weights_bytes(a, "int4") == pytest.approx(expected, abs=1)
    assert P.weights_bytes(a, "fp8") == whole.quantized + 2 * whole.kept


def test_llama_3_3_70b_at_q4_needs_a_cluster_of_24_gb_cards_but_not_a_192_gb_mac() -> None:
    """The field's figure: Llama 3.3 70B at Q4 is about 40 GB of weights plus about 10 GB of KV
    cache at 32K context. dexiio.pages.dev/llm/model/llama-3.3-70b lists the Q4_K_M file at 39.6 GB
    and 5.2 GB more memory going from 16K to 32K of context (so about 10 GB for 32K)."""
    a = model("Llama-3.3-70B-Instruct")
    request = P.Request("int4", 32768)
    card = P.plan(a, P.parse_gpus("1xRTX3090"), request)
    assert card.weights_bytes == pytest.approx(40e9, rel=0.05)
    assert card.kv_bytes_at_context == pytest.approx(10e9, rel=0.1)
    assert not card.fits and card.needs_cluster
    mac = P.plan(a, P.parse_gpus("1xM2-Ultra:192"), request)
    assert mac.fits and not mac.needs_cluster
    assert mac.layout == P.Layout(1, 1, 1)
    assert "no cluster needed" in mac.reason[1]


# --- KV cache -----------------------------------------------------------------------------------


def test_llama_3_1_70b_kv_is_320_kib_per_token() -> None:
    # 2 (K and V) x 80 layers x 8 KV heads x 128 x 2 bytes.
    assert P.kv_bytes_per_token(model("meta-llama/Llama-3.1-70B-Instruct"), "bf16") == 320 * 1024


def test_deepseek_v3_mla_kv_is_one_latent_per_layer() -> None:
    # 61 layers x (kv_lora_rank 512 + qk_rope_head_dim 64) x 2 bytes: no x2, no heads.
    a = model("deepseek-ai/DeepSeek-V3")
    assert P.kv_bytes_per_token(a, "bf16") == 61 * 576 * 2
    # Replicated on every TP rank, unlike GQA heads.
    assert P.kv_bytes_per_token(a, "bf16", tp=8) == 61 * 576 * 2


def test_qwen3_235b_kv_is_188_kib_per_token() -> None:
    assert P.kv_bytes_per_token(model("Qwen/Qwen3-235B-A22B"), "bf16") == 188 * 1024


def test_head_dim_is_read_from_the_config_not_derived() -> None:
    a = model("Qwen/Qwen3-32B")
    assert (a.head_dim, a.hidden // a.heads) == (128, 80)
    assert P.kv_bytes_per_token(a, "bf16") == 2 * 64 * 8 * 128 * 2


def test_kv_heads_split_under_tp_and_replicate_beyond_their_number() -> None:
    """vLLM LlamaAttention (vllm/model_executor/models/llama.py): num_kv_heads = max(1, total // tp)."""
    llama = model("meta-llama/Llama-3.1-70B-Instruct")
    assert P.kv_bytes_per_token(llama, "bf16", tp=4) == 320 * 1024 // 4
    qwen = model("Qwen/Qwen3-235B-A22B")
    assert P.kv_heads_per_rank(qwen, 8) == 1
    assert P.kv_bytes_per_token(qwen, "bf16", tp=8) == P.kv_bytes_per_token(qwen, "bf16", tp=4)


def test_sliding_window_layers_stop_growing_at_their_window() -> None:
    a = model("openai/gpt-oss-20b")  # 12 full + 12 sliding layers, window 128, 8 KV heads of 64
    per_layer = 2 * 8 * 64 * 2
    assert P.kv_bytes_per_token(a, "bf16") == 12 * per_layer
    assert P.kv_bytes(a, 10_000, "bf16") == per_layer * (12 * 10_000 + 12 * 128)


def test_cpu_kv_cache_capacity_matches_vllm_log_on_the_lab_model() -> None:
    """DESIGN.md: vLLM's CPU log said "CPU KV cache size: 524288 tokens" for the lab's 4-layer,
    2-KV-head, head_dim-64 float32 model with PP=2 and VLLM_CPU_KVCACHE_SPACE=1:
    1 GiB / (2 layers x 2 x 2 heads x 64 x 4 bytes)."""
    tiny = P.architecture_from_config(TINY_LLAMA, "lab-tiny-llama")
    assert P.cpu_kv_cache_tokens(tiny, 1, "float32", pp=2) == 524_288
    # The same rule through a whole plan of two CPU nodes.
    nodes = tuple(P.NodeHardware(f"node{i}", (P.Device("cpu", None),)) for i in (1, 2))
    settings = P.EngineSettings(cpu_kv_cache_gib=1)
    request = P.Request("float32", 2048, tensor=1, pipeline=2, data=1)  # the lab's layout
    result = P.plan(tiny, P.Hardware("vllm", nodes), request, settings)
    assert result.layout == P.Layout(1, 2, 1)
    assert [stage.kv_tokens for stage in result.stages] == [524_288, 524_288]
    assert result.max_context_tokens == 2048  # the model's own limit
    assert any("VLLM_CPU_KVCACHE_SPACE" in warning for warning in result.warnings)


# --- vLLM's layout rules ------------------------------------------------------------------------


def test_tp_must_divide_the_attention_heads() -> None:
    """vllm/config.py ModelConfig.verify_with_parallel_config: "Total number of attention heads
    ({n}) must be divisible by tensor parallel size ({tp})"."""
    llama = model("meta-llama/Llama-3.1-70B-Instruct")
    assert P.tensor_parallel_problem(llama, 8) is None
    problem = P.tensor_parallel_problem(llama, 3)
    assert problem is not None and "64 attention heads" in problem


def test_tp_must_split_or_replicate_the_kv_heads_evenly() -> None:
    """vllm/model_executor/models/llama.py: total_num_kv_heads % tp == 0 when there are at least
    tp of them, else tp % total_num_kv_heads == 0."""
    small = P.architecture_from_config(LLAMA_3_2_3B)
    assert P.tensor_parallel_problem(small, 8) is None  # 24 heads, 8 KV heads: split
    assert P.tensor_parallel_problem(small, 24) is None  # 8 KV heads, each on 3 ranks
    problem = P.tensor_parallel_problem(small, 12)  # 24 % 12 == 0, but 12 vs 8 KV heads
    assert problem is not None and "8 KV heads" in problem


def test_pipeline_stages_split_layers_as_vllm_does() -> None:
    """vllm/distributed/utils.py get_pp_indices: the remainder goes to the stages before the last."""
    assert [len(s) for s in P.pipeline_stages(61, 2)] == [31, 30]
    assert [len(s) for s in P.pipeline_stages(61, 4)] == [15, 15, 16, 15]
    assert P.pipeline_stages(80, 2) == [range(0, 40), range(40, 80)]


def test_an_explicit_tp_that_breaks_the_head_rule_is_refused() -> None:
    a = P.architecture_from_config(LLAMA_3_2_3B)
    hardware = P.parse_gpus("12xH100")
    result = P.plan(a, hardware, P.Request("bf16", 8192, tensor=12, pipeline=1, data=1))
    assert not result.fits
    assert "tensor 12" in result.errors[-1].message
    assert result.errors[-1].loc == ("serving", "parallelism")


# --- the inventories ----------------------------------------------------------------------------


def test_homelab_runs_tp4_pp2_and_says_why() -> None:
    spec = load_spec(INVENTORIES / "homelab.yaml")
    a = P.architecture_for_spec(spec)
    assert a is not None and a.name == "meta-llama/Llama-3.3-70B-Instruct"
    result = P.plan_spec(spec, a)
    assert result.fits and not result.errors
    assert result.layout == P.Layout(4, 2, 1)
    assert result.needs_cluster
    assert result.max_context_tokens == 131072
    text = "\n".join(result.reason)
    assert "layers 0-39 on gpu1; layers 40-79 on gpu2" in text
    assert "16 of 64 query heads and 2 of 8 KV heads" in text
    # Why not one node per replica: too little KV room left beside 1/4 of the weights.
    assert "Not TP=4 x PP=1 x DP=2 with fewer devices per replica" in text
    assert "under the 2x headroom of 65,536" in text
    warnings = "\n".join(result.warnings)
    assert "no FP8 tensor cores" in warnings  # RTX 3090: Ampere 8.6
    assert "1400 W (TDP), 88% of the 1600 W PSU" in warnings
    assert "PCIe only" in warnings


def test_auto_layout_chooses_what_the_homelab_fixes() -> None:
    spec = load_spec(INVENTORIES / "homelab.yaml")
    a = P.architecture_for_spec(spec)
    assert a is not None
    result = P.plan(a, P.hardware_from_spec(spec), P.Request("fp8", 32768))
    assert result.layout == P.Layout(4, 2, 1)
    assert result.reason[2].startswith("Chosen TP=4 x PP=2 x DP=1")


def test_a_fixed_layout_is_compared_with_the_planner_choice() -> None:
    data = homelab()
    data["serving"]["model"]["quantization"] = "int4"  # 39.5 GB: one node per replica suffices
    spec = ClusterSpec.model_validate(data)
    a = P.architecture_for_spec(spec)
    assert a is not None
    result = P.plan_spec(spec, a, users=20)
    assert result.fits and result.layout == P.Layout(4, 2, 1)
    assert "The planner would choose TP=4 x PP=1 x DP=2" in result.reason[-1]
    assert any("20 users" in w and "the rest wait" in w for w in result.warnings)


def test_spare_gpus_become_replicas() -> None:
    result = P.plan(model("Llama-3.1-8B"), P.parse_gpus("8xH100"), P.Request("bf16", 32768))
    assert result.layout == P.Layout(1, 1, 8)
    assert not result.needs_cluster
    assert result.concurrent_sequences >= 8


@pytest.mark.parametrize(
    "inventory", ["homelab", "h100_workstation", "multinode_ib", "mac_studios"]
)
def test_every_example_inventory_fits(inventory: str) -> None:
    spec = load_spec(INVENTORIES / f"{inventory}.yaml")
    assert P.spec_problems(spec) == []


def test_a_layout_that_does_not_fit_is_refused_with_the_numbers() -> None:
    data = homelab()
    data["serving"]["model"]["quantization"] = "bf16"
    data["serving"]["model"]["max_context"] = 131072
    problems = P.spec_problems(ClusterSpec.model_validate(data))
    assert len(problems) == 1
    assert problems[0].loc == ("serving", "parallelism")
    assert problems[0].message.startswith("TP=4 x PP=2 x DP=1: the KV cache of one 131,072-token")
    assert "at most 9" in problems[0].message and "tokens fit" in problems[0].message


def test_a_context_beyond_the_model_limit_is_refused() -> None:
    data = homelab()
    data["serving"]["model"]["max_context"] = 200_000
    problems = P.spec_problems(ClusterSpec.model_validate(data))
    assert problems[0].loc == ("serving", "model", "max_context")
    assert "limit of 131,072" in problems[0].message


def test_models_the_catalogue_does_not_know_are_left_to_plan() -> None:
    data = homelab()
    data["serving"]["model"] = {"path": "/models/private", "max_context": 4096}
    assert P.spec_problems(ClusterSpec.model_validate(data)) == []


# --- hardware -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "generation", "capability"),
    [
        ("NVIDIA GeForce RTX 3090", "Ampere", 8.6),
        ("NVIDIA GeForce RTX 4090", "Ada", 8.9),
        ("NVIDIA A100-SXM4-80GB", "Ampere", 8.0),
        ("NVIDIA H100 80GB HBM3", "Hopper", 9.0),
        ("NVIDIA H200", "Hopper", 9.0),
        ("NVIDIA B200", "Blackwell", 10.0),
        ("NVIDIA L40S", "Ada", 8.9),
        ("Apple M3 Ultra", "Apple silicon", None),
    ],
)
def test_gpu_generations(name: str, generation: str, capability: float | None) -> None:
    info = P.gpu_info(name)
    assert info is not None
    assert (info.generation, info.compute_capability) == (generation, capability)


def test_fp8_needs_ada_or_newer_and_mlx_has_none() -> None:
    a = model("Llama-3.1-8B")
    request = P.Request("fp8", 8192)
    assert not P.plan(a, P.parse_gpus("1xRTX4090"), request).warnings
    ampere = P.plan(a, P.parse_gpus("1xRTX3090"), request)
    assert any("no FP8 tensor cores" in w for w in ampere.warnings)
    mac = P.plan(a, P.parse_gpus("1xM4-Max:128"), request)
    assert not mac.fits and "MLX has no FP8" in mac.errors[0].message


def test_mixed_gpus_and_narrow_links_are_warned_about() -> None:
    node = P.NodeHardware(
        "box",
        (P.Device("NVIDIA GeForce RTX 3090", 24), P.Device("NVIDIA GeForce RTX 4090", 24)),
        "pcie",
        pcie_lanes=4,
    )
    result = P.plan(model("Llama-3.1-8B"), P.Hardware("vllm", (node,)), P.Request("bf16", 4096))
    warnings = "\n".join(result.warnings)
    assert "mixed devices" in warnings and "PCIe x4" in warnings


@pytest.mark.parametrize(
    ("text", "count", "memory"),
    [("4xRTX3090", 4, 24), ("8 x H100", 8, 80), ("H200", 1, 141), ("2xMI300X:192", 2, 192)],
)
def test_parse_gpus(text: str, count: int, memory: float) -> None:
    hardware = P.parse_gpus(text, nodes=2)
    assert len(hardware.nodes) == 2
    assert [d.memory_gib for d in hardware.nodes[0].devices] == [memory] * count


@pytest.mark.parametrize("text", ["", "4x", "4x:24", "4xMI300X", "0xRTX3090", "4xRTX3090:lots"])
def test_malformed_gpus_are_refused(text: str) -> None:
    with pytest.raises(P.PlanError):
        P.parse_gpus(text)


# --- config.json --------------------------------------------------------------------------------


def test_multimodal_configs_are_read_from_their_text_config() -> None:
    a = P.architecture_from_config({"model_type": "kimi_k25", "text_config": catalogue.KIMI_K2})
    assert a.mla and a.layers == 61


@pytest.mark.parametrize(
    "broken",
    [
        {"hidden_size": 4096},
        {**TINY_LLAMA, "num_hidden_layers": "4"},
        {**TINY_LLAMA, "num_key_value_heads": True},
        {**TINY_LLAMA, "num_attention_heads": 0},
    ],
)
def test_malformed_configs_are_refused_with_a_message(broken: dict[str, Any]) -> None:
    with pytest.raises(P.PlanError):
        P.architecture_from_config(copy.deepcopy(broken))


def test_catalogue_names_match_leniently() -> None:
    assert P.architecture_from_name("mlx-community/Kimi-K2-Instruct-4bit").name == (
        "moonshotai/Kimi-K2-Instruct"
    )
    assert P.architecture_from_name("meta-llama/Llama-3.3-70B-Instruct-AWQ").layers == 80
    with pytest.raises(P.PlanError, match="unknown model"):
        P.architecture_from_name("acme/Nonexistent-7B")
