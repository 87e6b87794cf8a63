"""The command line: help for every command, and the lab's refusal without root or Linux."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from aicluster import lab
from aicluster.cli import main


def test_help_lists_every_command_in_one_line() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("validate", "lab"):
        line = next(line for line in result.output.splitlines() if line.strip().startswith(command))
        assert len(line.split(None, 1)) == 2  # the command and its one-line summary


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
    assert "'a100' is not one of 'cpu', 'h100', 'h200'" in result.output
