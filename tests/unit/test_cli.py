"""The command line: help for every command, and the lab's refusal without root or Linux."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from aicluster import lab, simulation
from aicluster.cli import main


def test_help_lists_every_command_in_one_line() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("validate", "plan", "parse", "complete", "lab"):
        line = next(line for line in result.output.splitlines() if line.strip().startswith(command))
        _, summary = line.split(None, 1)  # the command and its one-line summary
        assert not summary.endswith("..."), line


@pytest.mark.parametrize(
    "args", [["lab", "up"], ["lab", "down"], ["lab", "status"], ["lab", "ssh", "node1"]]
)
def test_lab_needs_root(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    monkeypatch.setattr(lab.os, "geteuid", lambda: 1000)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert "the lab needs root" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_lab_needs_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lab.sys, "platform", "darwin")
    result = CliRunner().invoke(main, ["lab", "up"])
    assert result.exit_code == 2
    assert "the lab runs on Linux only" in result.output


def test_unknown_profile_is_refused_before_anything_runs() -> None:
    result = CliRunner().invoke(main, ["lab", "up", "--profile", "a100"])
    assert result.exit_code == 2
    assert (
        "'a100' is not one of 'cpu', 'fault-nvlink', 'fault-pcie-width', 'h100', 'h200'"
        in result.output
    )


@pytest.mark.parametrize(
    ("kind", "capture", "key"),
    [
        ("nvidia-smi-query", "h200/query-gpu-csv.txt", "gpus"),
        ("nvidia-smi-query", "h100/nvidia-smi-q.txt", "gpus"),
        ("nvidia-topo", "h100/topo-m.txt", "links"),
        ("nvlink-status", "h200/nvlink-s.txt", "gpus"),
    ],
)
def test_parse_prints_json_of_a_real_capture(kind: str, capture: str, key: str) -> None:
    result = CliRunner().invoke(main, ["parse", kind, str(simulation.CAPTURES / capture)])
    assert result.exit_code == 0, result.output
    assert key in json.loads(result.output)


def test_parse_refuses_truncated_input_in_one_line(tmp_path: Path) -> None:
    text = (simulation.CAPTURES / "h200" / "nvidia-smi-q.txt").read_text()
    cut = tmp_path / "cut.txt"
    cut.write_text(text[: len(text) // 2])
    result = CliRunner().invoke(main, ["parse", "nvidia-smi-query", str(cut)])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_validate_refuses_an_explicit_layout_that_cannot_hold_the_model(tmp_path: Path) -> None:
    data = yaml.safe_load(
        (Path(__file__).parents[2] / "inventories" / "h100_workstation.yaml").read_text()
    )
    data["serving"]["model"] = {"hf_id": "meta-llama/Llama-3.1-405B-Instruct", "max_context": 8192}
    (tmp_path / "big.yaml").write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "big.yaml")])
    assert result.exit_code == 2
    assert f"{tmp_path / 'big.yaml'}: serving.parallelism: TP=4 x PP=1 x DP=1:" in result.output
    assert "GiB of weights" in result.output
