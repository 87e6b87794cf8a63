"""`aicluster plan` through click: both forms, --json, --svg, and every bad input as one line."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree

import pytest
from click.testing import CliRunner, Result

from aicluster import tinymodel
from aicluster.commands.plan import plan_command

INVENTORIES = Path(__file__).parents[2] / "inventories"
HOMELAB = str(INVENTORIES / "homelab.yaml")

# The lab's tiny model's config.json, as aicluster/tinymodel.py writes it.
TINY_CONFIG = tinymodel.config()


def run(*args: str) -> Result:
    return CliRunner().invoke(plan_command, list(args))


def test_inventory_form_explains_the_homelab_layout() -> None:
    result = run(HOMELAB)
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())  # rich wraps lines at the terminal width
    assert "TP=4 x PP=2 x DP=1" in flat
    assert "layers 0-39 on gpu1; layers 40-79 on gpu2" in flat
    assert "Longest request that fits: 131,072 tokens" in flat
    assert "warning:" in flat


def test_json_has_the_documented_shape() -> None:
    result = run(HOMELAB, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    for key in (
        "weights_bytes",
        "kv_bytes_per_token",
        "kv_bytes_at_context",
        "layout",
        "fits",
        "needs_cluster",
        "max_context_tokens",
        "warnings",
        "errors",
    ):
        assert key in data
    assert data["layout"] == {"tp": 4, "pp": 2, "dp": 1}
    assert data["kv_bytes_per_token"] == 320 * 1024
    assert data["fits"] is True and data["needs_cluster"] is True
    assert data["errors"] == []
    assert [stage["layers"] for stage in data["stages"]] == [[0, 39], [40, 79]]


def test_inventory_values_can_be_overridden() -> None:
    result = run(HOMELAB, "--quant", "int4", "--context", "8192", "--json")
    data = json.loads(result.output)
    assert (data["quantization"], data["context"]) == ("int4", 8192)


def test_ad_hoc_form_refuses_what_does_not_fit_with_exit_1() -> None:
    result = run(
        "--model", "Llama-3.3-70B", "--gpus", "1xRTX3090", "--quant", "int4", "--context", "32768"
    )
    assert result.exit_code == 1
    flat = " ".join(result.output.split())
    assert "does not fit" in flat
    assert "error: TP=1 x PP=1 x DP=1: stage 1 (layers 0-79)" in flat


def test_ad_hoc_form_says_when_no_cluster_is_needed() -> None:
    args = ["--model", "Llama-3.3-70B", "--gpus", "1xM2-Ultra:192", "--quant", "int4"]
    result = run(*args, "--context", "32768", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["needs_cluster"] is False and data["fits"] is True


def test_ad_hoc_form_over_several_nodes() -> None:
    result = run("--model", "Qwen/Qwen3-235B-A22B", "--gpus", "8xH100", "--nodes", "2", "--json")
    data = json.loads(result.output)
    assert result.exit_code == 0, result.output
    assert data["layout"]["tp"] == 8
    assert data["kv_bytes_per_token"] == 188 * 1024


def test_a_config_json_is_read_from_a_file_or_its_directory(tmp_path: Path) -> None:
    model_dir = tmp_path / "lab-tiny-llama"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps(TINY_CONFIG))
    for model in (str(model_dir), str(model_dir / "config.json")):
        result = run("--model", model, "--gpus", "1xRTX3090", "--json")
        assert result.exit_code == 0, result.output
        data = json.loads(result.output)
        assert data["model"] == "lab-tiny-llama"
        # Its config says float32: weights and KV stay float32, the context its 2,048 limit.
        assert (data["quantization"], data["kv_cache_dtype"]) == ("float32", "float32")
        assert data["context"] == 2048
        assert data["kv_bytes_per_token"] == 4 * 2 * 2 * 64 * 4


def test_an_inventory_with_an_unknown_model_takes_its_config(tmp_path: Path) -> None:
    inventory = tmp_path / "private.yaml"
    text = (INVENTORIES / "homelab.yaml").read_text()
    inventory.write_text(
        text.replace("hf_id: meta-llama/Llama-3.3-70B-Instruct", "path: /models/private")
    )
    result = run(str(inventory))
    assert result.exit_code == 2
    assert "give its config.json with --model" in result.output
    config = tmp_path / "config.json"
    config.write_text(json.dumps(TINY_CONFIG))
    result = run(str(inventory), "--model", str(config), "--context", "2048", "--json")
    assert result.exit_code == 0, result.output


def test_svg_draws_nodes_gpus_and_their_layers(tmp_path: Path) -> None:
    drawing = tmp_path / "homelab.svg"
    result = run(HOMELAB, "--svg", str(drawing))
    assert result.exit_code == 0, result.output
    root = ElementTree.fromstring(drawing.read_text())  # well-formed XML
    texts = [element.text or "" for element in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "gpu1" in texts and "gpu2" in texts
    assert texts.count("layers 0-39") == 4 and texts.count("layers 40-79") == 4
    assert "heads 48-63, KV 6-7" in texts
    assert "GPUs linked by PCIe" in texts
    assert "ethernet 10 Gb/s" in texts


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "acme/Nonexistent-7B", "--gpus", "1xH100"], "unknown model"),
        (["--model", "Llama-3.1-8B", "--gpus", "four RTX 3090s!"], "--gpus"),
        (["--model", "Llama-3.1-8B", "--gpus", "4xMI300X"], "unknown memory size"),
        (["--model", "/nonexistent/config.json", "--gpus", "1xH100"], "cannot read the model"),
        (["--model", "Llama-3.1-8B"], "give an INVENTORY, or --model and --gpus"),
        ([HOMELAB, "--gpus", "1xH100"], "--gpus and --nodes describe hardware without"),
        ([HOMELAB, "--nodes", "3"], "--gpus and --nodes describe hardware without"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert "Traceback" not in result.output


def test_malformed_config_json_is_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "config.json"
    broken.write_text("{not json")
    result = run("--model", str(broken), "--gpus", "1xH100")
    assert result.exit_code == 2
    assert result.output.startswith("aicluster plan: cannot read the model config")
    broken.write_text(json.dumps({"model_type": "llama"}))
    result = run("--model", str(broken), "--gpus", "1xH100")
    assert result.exit_code == 2
    assert "config.json has no num_hidden_layers" in result.output


def test_an_invalid_inventory_is_reported_like_validate(tmp_path: Path) -> None:
    inventory = tmp_path / "bad.yaml"
    inventory.write_text("cluster: {}\n")
    result = run(str(inventory))
    assert result.exit_code == 2
    assert all(line.startswith(f"{inventory}: ") for line in result.output.splitlines())


def test_an_unwritable_svg_is_one_line(tmp_path: Path) -> None:
    result = run(HOMELAB, "--svg", str(tmp_path / "missing" / "plan.svg"))
    assert result.exit_code == 2
    assert result.output.startswith("aicluster plan: cannot write")
