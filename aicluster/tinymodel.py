"""The lab's demo model: a tiny Llama with random weights, made offline and byte for byte the same.

Lab machines have no GPU and should not download gigabytes of weights, yet the deploys must prove
that vLLM really loads and serves a model. A 4-layer Llama with random weights and a tokenizer
trained here on a few paragraphs is enough for that: vLLM's CPU build loads it in seconds and
serves it through the OpenAI API (completions and chat). Its text is noise; its shapes are real,
so the planner's memory math can be checked against what vLLM reports for it.

Only numpy, safetensors and tokenizers are needed (the `lab` extra), never torch: the model is
written on the control machine and copied to the nodes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

VOCAB_SIZE = 768
HIDDEN_SIZE = 256
NUM_LAYERS = 4
NUM_HEADS = 4
NUM_KV_HEADS = 2
# vLLM's CPU attention refuses head_dim 16; 64 works (hidden_size / num_heads).
HEAD_DIM = 64
INTERMEDIATE_SIZE = 512
MAX_POSITIONS = 2048
INIT_STD = 0.02

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
# Trained first, so their ids are 0, 1, 2 as in most Llama checkpoints.
SPECIAL_TOKENS = (PAD, BOS, EOS)
PAD_ID, BOS_ID, EOS_ID = range(len(SPECIAL_TOKENS))

# Plain role markers, so a chat turn reads like text to a tokenizer that has never seen one.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

# The tokenizer's training text: carried here so that training needs no download and always sees
# the same bytes. It holds enough distinct words for byte-level BPE to learn VOCAB_SIZE tokens.
CORPUS = """\
aicluster turns a handful of bare machines into a working local inference cluster, and proves it.
One validated description of the cluster, deploys that converge hosts to it, and readiness checks
that say, node by node, whether the cluster is ready to serve a model.
Does this model and its context even need a cluster? Count the weights, the key and value cache,
the activations and the overhead, then compare the total with the memory of every graphics card.
One node with several identical GPUs runs tensor parallel: every layer is split across the cards,
and they exchange partial results after each attention and feed-forward block over NVLink or PCIe.
Several nodes run pipeline parallel across the network: each node holds a contiguous range of
layers and passes the hidden states of a batch to the next node, over InfiniBand, RoCE or Ethernet.
Mac Studios chained over Thunderbolt split the layers the same way and reach each other by RDMA.
The scheduler admits a request when its prompt fits in the free blocks of the paged cache; long
prompts are chunked, and the server streams tokens back as soon as the sampler has chosen them.
A readiness check reads the driver version, the GPU count and memory, the link rate and the MTU,
the firewall rules, the listening ports and the health endpoint, and says what to do when it fails.
Facts are thin: the command runs on the host, a pure function parses its output, and tests feed
that function real output captured from real machines, never text written by hand.
The quick brown fox jumps over the lazy dog while the five boxing wizards jump quickly.
Pack my box with five dozen liquor jugs; sphinx of black quartz, judge my vow.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 16 32 64 128 256 512 1024 2048 4096 8192 65536 3.14 2.71 1e-5.
Symbols: ( ) [ ] { } < > = + - * / % & | ^ ~ ! ? @ # $ _ : ; , . ' " ` \\ and a newline.
Hello! How are you today? I am fine, thank you. What is the capital of France? Paris is.
Once upon a time there was a small model that could count to ten and tell a short story.
It lived on a cluster of computers in a quiet laboratory, and every morning it said hello.
The engineers asked it questions, and it answered with random words, because nobody had trained it.
Still, it loaded quickly, it served every request, and it never ran out of memory.
"""


def write_tiny_llama(dest: Path, seed: int = 0) -> None:
    """Write a loadable tiny Llama (config, weights, tokenizer) into dest, the same bytes per seed."""
    dest.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer()
    tokenizer.save(str(dest / "tokenizer.json"))
    vocab_size = tokenizer.get_vocab_size()
    _write_json(dest / "config.json", _config(vocab_size))
    _write_json(
        dest / "generation_config.json",
        {"bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID},
    )
    _write_json(dest / "tokenizer_config.json", _tokenizer_config())
    _write_json(
        dest / "special_tokens_map.json",
        {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD},
    )
    # transformers loads a safetensors file only when its metadata says the format is "pt".
    weights = dest / "model.safetensors"
    save_file(_weights(vocab_size, seed), str(weights), metadata={"format": "pt"})
    # safetensors creates the file owner-only; a server running as another user must read it.
    weights.chmod(0o644)


def config() -> dict[str, Any]:
    """The config.json the model is written with: what the planner reads to size it."""
    return _config(VOCAB_SIZE)


def _train_tokenizer() -> Tokenizer:
    """Byte-level BPE: every string has an encoding (no unknown token) and decodes back exactly."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS.splitlines(keepends=True), trainer=trainer)
    # Encoded text starts with BOS, as Llama's prompts do.
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, BOS_ID)]
    )
    return tokenizer


def _config(vocab_size: int) -> dict[str, Any]:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": HIDDEN_SIZE,
        "intermediate_size": INTERMEDIATE_SIZE,
        "num_hidden_layers": NUM_LAYERS,
        "num_attention_heads": NUM_HEADS,
        "num_key_value_heads": NUM_KV_HEADS,
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "max_position_embeddings": MAX_POSITIONS,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "initializer_range": INIT_STD,
        "torch_dtype": "float32",
        "use_cache": True,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "pad_token_id": PAD_ID,
    }


def _tokenizer_config() -> dict[str, Any]:
    # PreTrainedTokenizerFast reads tokenizer.json as it is; a Llama tokenizer class would rebuild
    # the tokenizer from its own defaults instead.
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "model_max_length": MAX_POSITIONS,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }


def _tensor_shapes(vocab_size: int) -> dict[str, tuple[int, ...]]:
    """Every tensor vLLM's LlamaForCausalLM loads, by its checkpoint name, with its shape."""
    q_size, kv_size = NUM_HEADS * HEAD_DIM, NUM_KV_HEADS * HEAD_DIM
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab_size, HIDDEN_SIZE)}
    for layer in range(NUM_LAYERS):
        prefix = f"model.layers.{layer}"
        shapes |= {
            f"{prefix}.input_layernorm.weight": (HIDDEN_SIZE,),
            f"{prefix}.self_attn.q_proj.weight": (q_size, HIDDEN_SIZE),
            f"{prefix}.self_attn.k_proj.weight": (kv_size, HIDDEN_SIZE),
            f"{prefix}.self_attn.v_proj.weight": (kv_size, HIDDEN_SIZE),
            f"{prefix}.self_attn.o_proj.weight": (HIDDEN_SIZE, q_size),
            f"{prefix}.post_attention_layernorm.weight": (HIDDEN_SIZE,),
            f"{prefix}.mlp.gate_proj.weight": (INTERMEDIATE_SIZE, HIDDEN_SIZE),
            f"{prefix}.mlp.up_proj.weight": (INTERMEDIATE_SIZE, HIDDEN_SIZE),
            f"{prefix}.mlp.down_proj.weight": (HIDDEN_SIZE, INTERMEDIATE_SIZE),
        }
    shapes["model.norm.weight"] = (HIDDEN_SIZE,)
    shapes["lm_head.weight"] = (vocab_size, HIDDEN_SIZE)
    return shapes


def _weights(vocab_size: int, seed: int) -> dict[str, np.ndarray[Any, np.dtype[np.float32]]]:
    """Small normal weights drawn in a fixed order, so one seed always gives the same tensors.

    Norm weights are ones, as a fresh Llama has them: random norms would only add noise.
    """
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in _tensor_shapes(vocab_size).items():
        if name.endswith("norm.weight"):
            weights[name] = np.ones(shape, dtype=np.float32)
        else:
            weights[name] = rng.normal(0.0, INIT_STD, size=shape).astype(np.float32)
    return weights


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
