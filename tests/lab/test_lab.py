"""The lab for real: machines boot, answer SSH, install packages, survive a kill and leave nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import testinfra

from aicluster import lab, simulation
from aicluster.inventory import load_spec
from tests.lab.conftest import HostSnapshot, Lab, nspawn_processes

pytestmark = pytest.mark.lab
BIN = Path(sys.executable).parent


def test_status_shows_every_machine_running_with_both_addresses(lab_cluster: Lab) -> None:
    result = subprocess.run(
        [str(BIN / "aicluster"), "lab", "status"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for machine in [*lab_cluster.nodes, lab_cluster.outsider]:
        row = next(line for line in result.stdout.splitlines() if f" {machine.name} " in line)
        assert "running" in row
        assert str(machine.mgmt_address) in row
        assert str(machine.data_address) in row


def test_up_twice_keeps_the_same_machines(lab_cluster: Lab) -> None:
    before = {m.name: (lab.nspawn_pid(m), _host_key(m)) for m in lab_cluster.nodes}
    lab_cluster.up()
    after = {m.name: (lab.nspawn_pid(m), _host_key(m)) for m in lab_cluster.nodes}
    assert after == before
    assert all(pid is not None for pid, _ in after.values())


def test_testinfra_reaches_every_node_with_its_two_interfaces(lab_cluster: Lab) -> None:
    for machine in lab_cluster.nodes:
        host = testinfra.get_host(f"ssh://{machine.name}", ssh_config=str(lab.ssh_config_path()))
        assert host.check_output("hostname") == machine.name
        assert str(machine.mgmt_address) in host.interface("mgmt0").addresses
        assert str(machine.data_address) in host.interface("data0").addresses
        assert host.service("ssh").is_running
        assert (
            host.file("/etc/aicluster-lab-simulation").exists is False
        )  # cpu profile: nothing simulated


def test_nodes_and_outsider_share_the_data_network(lab_cluster: Lab) -> None:
    head = lab_cluster.nodes[0].name
    for target in [*lab_cluster.nodes[1:], lab_cluster.outsider]:
        result = lab.ssh(head, "ping", "-c", "1", "-W", "2", str(target.data_address))
        assert result.returncode == 0, result.stdout + result.stderr


def test_pyinfra_installs_a_debian_package_on_every_node(lab_cluster: Lab) -> None:
    inventory = lab_cluster.inventory.with_suffix(".py")
    command = [
        str(BIN / "pyinfra"),
        "-y",
        str(inventory),
        "apt.packages",
        "packages=tree",
        "update=true",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    for machine in lab_cluster.nodes:
        installed = lab.ssh(machine.name, "dpkg-query", "-W", "-f=${Status}", "tree")
        assert installed.stdout == "install ok installed"


def test_a_killed_machine_is_repaired_by_up_with_its_disk(lab_cluster: Lab) -> None:
    victim = lab_cluster.nodes[1]
    assert lab.ssh(victim.name, "sh", "-c", "echo kept > /root/before-kill").returncode == 0
    key = _host_key(victim)
    pid = lab.nspawn_pid(victim)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while lab.nspawn_pid(victim) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    _, rows = lab.status()
    assert not next(row for row in rows if row.name == victim.name).running

    lab_cluster.up()

    _, rows = lab.status()
    assert all(row.running and row.ssh for row in rows)
    assert lab.nspawn_pid(victim) not in (None, pid)
    assert lab.ssh(victim.name, "cat", "/root/before-kill").stdout == "kept\n"
    assert _host_key(victim) == key  # the same machine, not a new one


def test_simulated_gpu_profile_replays_real_nvidia_smi(lab_cluster: Lab, tmp_path: Path) -> None:
    lab.down()
    try:
        lab.up(1, outsider=False, profile="h200", inventory=tmp_path / "sim.yaml")
        spec = load_spec(tmp_path / "sim.yaml")
        assert spec.nodes[0].gpus[0].model == "NVIDIA H200"
        replayed = lab.ssh("node1", "nvidia-smi", "-L")
        expected = simulation.read_capture(
            (simulation.CAPTURES / "h200" / "nvidia-smi-L.txt").read_text()
        )
        assert expected is not None
        assert replayed.stdout == expected.output
        marker = lab.ssh("node1", "cat", "/etc/aicluster-lab-simulation")
        assert marker.stdout.startswith("SIMULATION: this lab machine has no H200 GPU.")
    finally:
        lab.down()
        lab_cluster.up()


def test_down_twice_leaves_the_host_as_before(lab_cluster: Lab) -> None:
    lab.down()
    lab.down()
    after = HostSnapshot.take()
    assert after == lab_cluster.before
    assert nspawn_processes() == []
    assert not lab_cluster.inventory.exists()
    assert not (lab.STATE_DIR / "machines").exists()
    lab_cluster.up()  # leave the session's lab as the fixture promised it
    _, rows = lab.status()
    assert all(row.running and row.ssh for row in rows)


def _host_key(machine: lab.Machine) -> str:
    return (machine.root / "etc/ssh/ssh_host_ed25519_key.pub").read_text()
