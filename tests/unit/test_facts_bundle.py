"""Several facts in one command (aicluster/facts/bundle.py), run for real by this machine's shell:
each fact must come back exactly as when its command runs alone."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from pyinfra.api.exceptions import FactProcessError
from pyinfra.api.facts import FactBase
from pyinfra.facts.files import File
from pyinfra.facts.server import Arch, KernelVersion, LinuxDistribution

from aicluster.facts.bundle import Bundle, Request, bundle_command, bundle_process
from aicluster.facts.nvidia import NvidiaDriverVersion, NvidiaSmiQuery
from aicluster.facts.system import ActiveSwaps


def shell(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=False)


def alone(kind: type[FactBase[Any]], kwargs: dict[str, Any]) -> Any:
    """The fact as pyinfra reads it by itself: its own command, default() for no output."""
    fact = kind()
    required = fact.requires_command(**kwargs)
    if required and shell(f"command -v {required}").returncode != 0:
        return fact.default()
    command = fact.command(**kwargs)
    result = shell(command if isinstance(command, str) else command.get_raw_value())
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    return fact.process(lines) if lines else fact.default()


REQUESTS: list[Request] = [
    (LinuxDistribution, {}),
    (Arch, {}),
    (KernelVersion, {}),
    (File, {"path": "/etc/os-release"}),
    (File, {"path": "/nonexistent-aicluster-test"}),
    (ActiveSwaps, {}),
    (NvidiaDriverVersion, {}),  # no NVIDIA driver here: no output, the default
    (NvidiaSmiQuery, {}),  # nvidia-smi absent: the default, as pyinfra gives it
]


def test_one_command_gives_what_each_command_gives_alone() -> None:
    result = shell(bundle_command(REQUESTS))
    assert result.returncode == 0, result.stderr
    values = bundle_process(REQUESTS, result.stdout.splitlines())
    assert values == [alone(kind, kwargs) for kind, kwargs in REQUESTS]
    assert values[1] == shell("uname -m").stdout.strip()


def test_the_fact_runs_its_command_and_process() -> None:
    fact = Bundle()
    command = fact.command(requests=REQUESTS[1:3])
    assert fact.process(shell(command).stdout.splitlines()) == [
        shell("uname -m").stdout.strip(),
        shell("uname -r").stdout.strip(),
    ]
    assert Bundle.default() == []


class _Fails(FactBase[str]):
    def command(self) -> str:
        return "echo half; exit 3"


def test_a_failed_command_fails_the_host_with_the_facts_name() -> None:
    requests: list[Request] = [(Arch, {}), (_Fails, {})]
    output = shell(bundle_command(requests)).stdout.splitlines()
    with pytest.raises(FactProcessError, match="_Fails: its command exited with status 3"):
        bundle_process(requests, output)


def test_output_cut_short_is_refused() -> None:
    output = shell(bundle_command(REQUESTS[1:3])).stdout.splitlines()
    with pytest.raises(FactProcessError, match="1 outputs for 2 facts"):
        bundle_process(REQUESTS[1:3], output[:-1])
    with pytest.raises(FactProcessError, match="more outputs than the 1 asked"):
        bundle_process(REQUESTS[1:2], output)
