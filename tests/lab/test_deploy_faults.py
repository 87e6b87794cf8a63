"""Faults during a converge: a node lost half-way, a run killed half-way, an inventory that is
wrong. The other nodes finish, the run says which host failed and why, and a re-run converges.

Collected right after test_deploy.py (the cluster is converged). Each fault is made on work that
restarts no service (the login limits file of roles/base), so nothing here waits for vLLM."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from aicluster import lab, system
from tests.lab.conftest import Lab
from tests.lab.test_deploy import DEPLOY, PYINFRA, REPO, converge

pytestmark = pytest.mark.lab
# The fault's own nftables table inside one machine's network namespace, removed by this name.
FAULT_TABLE = "aicluster_test_fault"


@pytest.fixture(scope="module")
def converged(lab_cluster: Lab) -> Lab:
    converge(lab_cluster.inventory.with_suffix(".py"))
    return lab_cluster


def remove_limits_file(cluster: Lab) -> None:
    for machine in cluster.nodes:
        assert lab.ssh(machine.name, "rm", "-f", system.LIMITS_FILE).returncode == 0


def has_limits_file(machine: lab.Machine) -> bool:
    return lab.ssh(machine.name, "test", "-f", system.LIMITS_FILE).returncode == 0


def converge_until_operations_start(cluster: Lab) -> subprocess.Popen[str]:
    """A converge, returned once pyinfra starts running operations (facts are all read)."""
    process = subprocess.Popen(
        [
            PYINFRA,
            "-y",
            "--json",
            str(cluster.inventory.with_suffix(".py")),
            DEPLOY,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    for line in process.stderr:
        if "Beginning operation run" in line:
            return process
    process.wait(timeout=60)
    pytest.fail(f"pyinfra ended before running operations: exit {process.returncode}")


@contextmanager
def unreachable(machine: lab.Machine) -> Iterator[None]:
    """SSH to `machine` is refused (TCP resets, in its own network namespace) until the end."""
    rules = (
        f"table inet {FAULT_TABLE} {{ chain input {{ type filter hook input priority -300; "
        "tcp dport 22 reject with tcp reset; }; }"
    )
    subprocess.run(["ip", "netns", "exec", machine.netns, "nft", rules], check=True)
    try:
        yield
    finally:
        subprocess.run(
            ["ip", "netns", "exec", machine.netns, "nft", "delete", "table", "inet", FAULT_TABLE],
            check=True,
        )


def test_a_node_lost_in_the_middle_of_a_converge(converged: Lab) -> None:
    lost = converged.nodes[1]
    remove_limits_file(converged)
    process = converge_until_operations_start(converged)
    with unreachable(lost):
        stdout, stderr = process.communicate(timeout=600)
    assert process.returncode != 0
    assert stdout.startswith("{"), stderr[-3000:]
    results: dict[str, Any] = json.loads(stdout)["results"]
    assert results["failed_hosts"] == [lost.name], stderr[-2000:]
    assert f"[{lost.name}]" in stderr and "Error" in stderr
    # The other nodes finished the run; the lost one is repaired by the next.
    assert [has_limits_file(m) for m in converged.nodes] == [m is not lost for m in converged.nodes]
    again = converge(converged.inventory.with_suffix(".py"))
    assert again["failed_hosts"] == []
    assert all(has_limits_file(m) for m in converged.nodes)
    assert converge(converged.inventory.with_suffix(".py"))["totals"]["success"] == 0


def test_a_converge_killed_half_way_is_finished_by_the_next(converged: Lab) -> None:
    remove_limits_file(converged)
    process = converge_until_operations_start(converged)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    again = converge(converged.inventory.with_suffix(".py"))
    assert again["failed_hosts"] == []
    assert all(has_limits_file(m) for m in converged.nodes)
    assert converge(converged.inventory.with_suffix(".py"))["totals"]["success"] == 0


def test_a_wrong_inventory_touches_no_host(converged: Lab, tmp_path: Path) -> None:
    head = converged.nodes[0]
    logins = "journalctl -u ssh --no-pager -o cat | grep -c 'Accepted publickey' || true"
    before = lab.ssh(head.name, "sh", "-c", logins).stdout
    text = converged.inventory.read_text()
    worker = converged.nodes[1]
    # Two nodes claiming one data address: refused before anything connects.
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        text.replace(f"data_address: {worker.data_address}", f"data_address: {head.data_address}")
    )
    broken.with_suffix(".py").write_text(converged.inventory.with_suffix(".py").read_text())
    run = subprocess.run(
        [PYINFRA, "-y", str(broken.with_suffix(".py")), DEPLOY],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode != 0
    assert f"{broken}: nodes.{worker.name}.data_address" in run.stderr + run.stdout
    assert "Connected" not in run.stdout + run.stderr
    # The login count of the head is read over SSH too: it goes up by exactly that one login.
    after = lab.ssh(head.name, "sh", "-c", logins).stdout
    assert int(after) == int(before) + 1
