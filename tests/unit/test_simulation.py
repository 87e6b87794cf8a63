"""Simulated hardware replays real captures exactly, and says that it is a simulation."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from aicluster import simulation
from aicluster.facts.nvidia import NvidiaSmiQuery

CAPTURES = simulation.CAPTURES


@pytest.mark.parametrize("profile", ["h100", "h200"])
def test_every_nvidia_smi_capture_is_replayable(profile: str) -> None:
    replayed = {" ".join(capture.argv) for _, capture in simulation.replayable(profile)}
    assert {
        "nvidia-smi",
        "nvidia-smi -L",
        "nvidia-smi -q",
        "nvidia-smi topo -m",
        "nvidia-smi nvlink -s",
    } <= replayed
    # Shell pipelines and scripts are not single commands: they are never replayed.
    assert not any(argv.startswith(("uname", "python3", "lsmod")) for argv in replayed)


def test_read_capture_keeps_output_and_exit_status() -> None:
    capture = simulation.read_capture((CAPTURES / "h200" / "nvidia-smi-L.txt").read_text())
    assert capture is not None
    assert capture.argv == ("nvidia-smi", "-L")
    assert capture.output == "GPU 0: NVIDIA H200 (UUID: GPU-d74fea8f-5b34-c58a-50d1-55bcc66f8cb3)\n"
    assert capture.exit_status == 0
    refused = simulation.read_capture((CAPTURES / "h200" / "q-fabric.txt").read_text())
    assert refused is not None and refused.exit_status != 0  # the real driver refused -d FABRIC


def test_spec_gpus_come_from_the_real_query_capture() -> None:
    assert simulation.spec_gpus("h200") == [
        {"model": "NVIDIA H200", "count": 1, "memory_gib": 140.4}
    ]
    assert simulation.spec_gpus("h100") == [
        {"model": "NVIDIA H100 80GB HBM3", "count": 1, "memory_gib": 79.6}
    ]
    assert simulation.spec_gpus("cpu") == []


def test_installed_nvidia_smi_replays_the_capture_byte_for_byte(tmp_path: Path) -> None:
    simulation.install(tmp_path, "h200")
    script = tmp_path / "usr/local/bin/nvidia-smi"
    marker = (tmp_path / simulation.MARKER).read_text()
    assert marker.startswith("SIMULATION: this lab machine has no H200 GPU.")
    for path, capture in simulation.replayable("h200"):
        result = subprocess.run(
            [sys.executable, str(script), *capture.argv[1:]],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.stdout == capture.output, path.name
        assert result.returncode == capture.exit_status, path.name


def test_installed_nvidia_smi_refuses_what_was_never_captured(tmp_path: Path) -> None:
    simulation.install(tmp_path, "h100")
    script = tmp_path / "usr/local/bin/nvidia-smi"
    result = subprocess.run(
        [sys.executable, str(script), "-r"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert "aicluster lab simulation (h100): no real capture of `nvidia-smi -r`" in result.stderr


def test_cpu_profile_installs_nothing(tmp_path: Path) -> None:
    simulation.install(tmp_path, "cpu")
    assert list(tmp_path.iterdir()) == []


def test_fault_profiles_describe_their_hardware_from_the_real_outputs() -> None:
    assert simulation.spec_gpus("fault-pcie-width") == [
        {"model": "NVIDIA GeForce RTX 4060 Ti", "count": 2, "memory_gib": 16.0}
    ]
    assert simulation.spec_accelerator_link("fault-pcie-width") == "pcie"
    assert simulation.spec_gpus("fault-nvlink") == [
        {"model": "NVIDIA RTX A6000", "count": 3, "memory_gib": 48.0}
    ]
    assert simulation.spec_accelerator_link("fault-nvlink") == "nvlink"


def test_a_capture_of_nvidia_smi_a_answers_nvidia_smi_q(tmp_path: Path) -> None:
    simulation.install(tmp_path, "fault-pcie-width")
    script = tmp_path / "usr/local/bin/nvidia-smi"
    fixture = (
        Path(__file__).parents[1] / "fixtures/nvidia/nvidia-smi-q-2x-rtx4060ti-reduced-width.txt"
    )
    for option in ("-q", "-a", "--query"):
        result = subprocess.run(
            [sys.executable, str(script), option], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0
        assert result.stdout == fixture.read_text()


@pytest.mark.parametrize(
    ("capture", "fixture"),
    [
        ("fault-pcie-width/nvidia-smi-a.txt", "nvidia-smi-q-2x-rtx4060ti-reduced-width.txt"),
        ("fault-nvlink/topo-m.txt", "topo-m-3x-rtx-a6000-nvlink-bridge.txt"),
        ("fault-nvlink/nvlink-s.txt", "nvlink-s-3x-rtx-a6000-one-gpu-inactive.txt"),
    ],
)
def test_fault_profiles_replay_the_public_fixtures_byte_for_byte(
    capture: str, fixture: str
) -> None:
    replayed = simulation.read_capture((CAPTURES / capture).read_text())
    assert replayed is not None and replayed.exit_status == 0
    original = (Path(__file__).parents[1] / "fixtures/nvidia" / fixture).read_text()
    assert replayed.output == original + ("" if original.endswith("\n") else "\n")


@pytest.mark.parametrize("profile", ["h100", "h200"])
def test_the_nvidia_smi_query_fact_asks_exactly_what_was_captured(profile: str) -> None:
    # So simulated lab machines answer the fact the roles read, with the real output.
    asked = shlex.split(NvidiaSmiQuery().command())
    assert asked in [list(capture.argv) for _, capture in simulation.replayable(profile)]
