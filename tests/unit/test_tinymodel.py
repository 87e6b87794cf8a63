"""The demo model is the same bytes for a seed, has every tensor a Llama loads, and a usable tokenizer.

Expected values are written out here from the model's description, not read back from the module,
so a change to the generator that changes the model fails a test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2
import pytest
from safetensors import safe_open
from tokenizers import Tokenizer

from aicluster.tinymodel import write_tiny_llama

FILES = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("tinyllama")
    write_tiny_llama(dest, seed=0)
    return dest


def read_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def test_same_seed_gives_identical_files(model: Path, tmp_path: Path) -> None:
    write_tiny_llama(tmp_path, seed=0)
    assert {p.name for p in model.iterdir()} == FILES
    assert {p.name for p in tmp_path.iterdir()} == FILES
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (model / name).read_bytes(), name


def test_another_seed_changes_only_the_weights(model: Path, tmp_path: Path) -> None:
    write_tiny_llama(tmp_path, seed=1)
    for name in FILES - {"model.safetensors"}:
        assert (tmp_path / name).read_bytes() == (model / name).read_bytes(), name
    assert (tmp_path / "model.safetensors").read_bytes() != (
        model / "model.safetensors"
    ).read_bytes()


def test_config_describes_the_tiny_llama(model: Path) -> None:
    config = read_json(model / "config.json")
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["model_type"] == "llama"
    assert config["num_hidden_layers"] == 4
    assert config["hidden_size"] == 256
    assert config["num_attention_heads"] == 4
    assert config["num_key_value_heads"] == 2
    assert config["head_dim"] == 64  # vLLM's CPU attention refuses 16
    assert config["intermediate_size"] == 512
    assert config["max_position_embeddings"] >= 2048
    assert config["torch_dtype"] == "float32"
    assert config["tie_word_embeddings"] is False
    assert config["rms_norm_eps"] > 0
    assert config["rope_theta"] > 0
    assert 512 <= config["vocab_size"] <= 2048
    generation = read_json(model / "generation_config.json")
    assert generation["bos_token_id"] == config["bos_token_id"]
    assert generation["eos_token_id"] == config["eos_token_id"]


def test_weights_have_every_llama_tensor_with_the_config_shapes(model: Path) -> None:
    config = read_json(model / "config.json")
    vocab, hidden = config["vocab_size"], config["hidden_size"]
    head_dim, ffn = config["head_dim"], config["intermediate_size"]
    q, kv = config["num_attention_heads"] * head_dim, config["num_key_value_heads"] * head_dim
    expected = {
        "model.embed_tokens.weight": (vocab, hidden),
        "model.norm.weight": (hidden,),
        "lm_head.weight": (vocab, hidden),
    }
    for layer in range(config["num_hidden_layers"]):
        expected |= {
            f"model.layers.{layer}.self_attn.q_proj.weight": (q, hidden),
            f"model.layers.{layer}.self_attn.k_proj.weight": (kv, hidden),
            f"model.layers.{layer}.self_attn.v_proj.weight": (kv, hidden),
            f"model.layers.{layer}.self_attn.o_proj.weight": (hidden, q),
            f"model.layers.{layer}.mlp.gate_proj.weight": (ffn, hidden),
            f"model.layers.{layer}.mlp.up_proj.weight": (ffn, hidden),
            f"model.layers.{layer}.mlp.down_proj.weight": (hidden, ffn),
            f"model.layers.{layer}.input_layernorm.weight": (hidden,),
            f"model.layers.{layer}.post_attention_layernorm.weight": (hidden,),
        }
    with safe_open(str(model / "model.safetensors"), framework="numpy") as weights:
        assert weights.metadata() == {"format": "pt"}  # transformers refuses other formats
        found = {name: weights.get_tensor(name) for name in weights.keys()}  # noqa: SIM118 (safe_open is not iterable)
    assert {name: tensor.shape for name, tensor in found.items()} == expected
    assert {str(tensor.dtype) for tensor in found.values()} == {"float32"}
    embed = found["model.embed_tokens.weight"]
    assert 0.015 < float(embed.std()) < 0.025  # small random weights, not zeros or garbage
    assert (found["model.norm.weight"] == 1.0).all()


@pytest.mark.parametrize(
    "text",
    ["Hello, cluster! How are you?", "  two spaces,\ttabs\nand lines", "héllo, 日本語, emoji 🚀"],
)
def test_tokenizer_round_trips_text(model: Path, text: str) -> None:
    tokenizer = Tokenizer.from_file(str(model / "tokenizer.json"))
    config = read_json(model / "config.json")
    ids = tokenizer.encode(text).ids
    assert ids[0] == config["bos_token_id"]
    assert all(0 <= i < config["vocab_size"] for i in ids)
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_tokenizer_files_agree_with_the_config(model: Path) -> None:
    tokenizer = Tokenizer.from_file(str(model / "tokenizer.json"))
    config = read_json(model / "config.json")
    settings = read_json(model / "tokenizer_config.json")
    special = read_json(model / "special_tokens_map.json")
    assert tokenizer.get_vocab_size() == config["vocab_size"]
    assert tokenizer.token_to_id(settings["bos_token"]) == config["bos_token_id"]
    assert tokenizer.token_to_id(settings["eos_token"]) == config["eos_token_id"]
    assert tokenizer.token_to_id(settings["pad_token"]) == config["pad_token_id"]
    assert special == {key: settings[key] for key in ("bos_token", "eos_token", "pad_token")}
    assert settings["tokenizer_class"] == "PreTrainedTokenizerFast"


def test_chat_template_renders_a_conversation(model: Path) -> None:
    settings = read_json(model / "tokenizer_config.json")
    template = jinja2.Environment().from_string(settings["chat_template"])
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    prompt = template.render(
        messages=messages,
        add_generation_prompt=True,
        bos_token=settings["bos_token"],
        eos_token=settings["eos_token"],
    )
    assert prompt == "<s><|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\n"
