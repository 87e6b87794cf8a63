"""The example inventories load in pyinfra itself, and a bad spec stops pyinfra before it connects."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aicluster.inventory import load_spec, pyinfra_groups

INVENTORIES = Path(__file__).parents[2] / "inventories"
BIN = Path(sys.executable).parent


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=cwd, check=False)


@pytest.mark.parametrize("name", ["homelab", "h100_workstation", "multinode_ib", "mac_studios"])
def test_pyinfra_loads_example_inventory(name: str) -> None:
    result = run(str(BIN / "pyinfra"), str(INVENTORIES / f"{name}.py"), "debug-inventory")
    assert result.returncode == 0, result.stderr
    shown = result.stdout + result.stderr  # pyinfra logs to stderr
    spec = load_spec(INVENTORIES / f"{name}.yaml")
    for node in spec.nodes:
        assert f"[{node.name}]" in shown
        assert f'"ssh_hostname": "{node.ssh.address}"' in shown
    assert f"--> Groups: nodes, head, {spec.cluster.engine}, {name}" in shown


def test_groups_split_head_workers_and_engine() -> None:
    spec = load_spec(INVENTORIES / "homelab.yaml")
    groups = pyinfra_groups(spec, INVENTORIES / "homelab.yaml")
    assert [name for name, _ in groups["head"]] == ["gpu1"]
    assert [name for name, _ in groups["workers"]] == ["gpu2"]
    assert [name for name, _ in groups["vllm"]] == ["gpu1", "gpu2"]
    assert groups["exo"] == []
    data = dict(groups["nodes"])["gpu2"]
    assert data["_sudo"] is True  # user ubuntu: every operation through sudo
    assert data["aicluster_data_address"] == "10.10.0.12"


def test_invalid_spec_stops_pyinfra_before_connecting(tmp_path: Path) -> None:
    text = (INVENTORIES / "homelab.yaml").read_text()
    mixed = text.replace(
        "      - {model: NVIDIA GeForce RTX 3090, count: 4, memory_gib: 24}\n    accelerator_link: pcie\n"
        "    fabric:\n      - {kind: ethernet, interface: enp5s0, rate_gbps: 10, mtu: 9000}\n"
        "    psu_watts: 1600\n\nserving",
        "      - {model: NVIDIA GeForce RTX 3090, count: 3, memory_gib: 24}\n"
        "      - {model: NVIDIA GeForce RTX 4090, count: 1, memory_gib: 24}\n    accelerator_link: pcie\n"
        "    psu_watts: 1600\n\nserving",
    )
    assert mixed != text
    (tmp_path / "mixed.yaml").write_text(mixed)
    shutil.copy(INVENTORIES / "homelab.py", tmp_path / "mixed.py")
    # A deploy that would fail loudly if pyinfra ever got as far as running it.
    (tmp_path / "deploy.py").write_text("raise SystemExit('deploy reached')\n")
    result = run(
        str(BIN / "pyinfra"), "-y", str(tmp_path / "mixed.py"), str(tmp_path / "deploy.py")
    )
    assert result.returncode == 2
    assert (
        f"{tmp_path / 'mixed.yaml'}: nodes.gpu2.gpus: tensor-parallel group of GPUs 0-3 mixes"
        in result.stderr
    )
    assert "Traceback" not in result.stderr + result.stdout
    assert "Connecting" not in result.stdout + result.stderr
    assert "deploy reached" not in result.stderr


def test_validate_command_exit_codes(tmp_path: Path) -> None:
    good = run(str(BIN / "aicluster"), "validate", str(INVENTORIES / "homelab.yaml"))
    assert good.returncode == 0, good.stderr
    (tmp_path / "bad.yaml").write_text("cluster: [\n")
    bad = run(
        str(BIN / "aicluster"),
        "validate",
        str(INVENTORIES / "homelab.yaml"),
        str(tmp_path / "bad.yaml"),
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith(f"{tmp_path / 'bad.yaml'}: line 2 column 1: not valid YAML")
    assert "Traceback" not in bad.stderr
