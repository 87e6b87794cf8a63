"""Operation plans of roles/base (tests/roles/plan.py): a real host gets its clock, kernel settings
and swap handled; a container (the lab) only what is its own.

The container and swap facts are read from REAL outputs (tests/fixtures/system/)."""

from __future__ import annotations

from pathlib import Path

from pyinfra.facts.files import FindInFile
from pyinfra.facts.server import Os, Which

from aicluster import system
from aicluster.facts.system import ActiveSwaps, Container
from roles.base import base
from tests.roles.plan import ROOT, Facts, HostPlan, captured, plan_role, spec_from_inventory

SYSTEM = ROOT / "tests/fixtures/system"
NO_CONTAINER: Facts = {Container: None}
NSPAWN: Facts = {Container: captured(Container, SYSTEM / "detect-virt-container-nspawn.txt")}
NO_SWAP: Facts = {ActiveSwaps: captured(ActiveSwaps, SYSTEM / "proc-swaps-none.txt")}


def plan(tmp_path: Path, facts: Facts) -> HostPlan:
    spec = spec_from_inventory("homelab")
    name = spec["nodes"][0]["name"]
    # A Debian host: Linux, with the shadow tools (pyinfra's facts, given as pyinfra's values).
    debian: Facts = {Os: "Linux", Which: lambda command: f"/usr/sbin/{command}"}
    return plan_role(base, spec, tmp_path, {name: {**debian, **facts}})[name]


def test_a_real_host_gets_chrony_kernel_settings_and_no_swap(tmp_path: Path) -> None:
    host = plan(tmp_path, {**NO_CONTAINER, **NO_SWAP})
    assert "chrony" in host.op("chrony keeps the clock in sync").commands[-1]
    assert host.op("chrony running and enabled").commands
    sysctl = host.op(system.SYSCTL_FILE)
    assert sysctl.uploads[system.SYSCTL_FILE] == system.sysctl_conf()
    assert "kernel.numa_balancing = 0" in system.sysctl_conf()
    applied = host.op("Kernel settings applied")
    assert applied.after_change_of == (system.SYSCTL_FILE,)
    assert applied.commands == (f"sysctl -e -q -p {system.SYSCTL_FILE}",)
    assert "No swap at boot (fstab entries commented out)" in host.names()
    assert "Swap off now" not in host.names()  # /proc/swaps lists none


def test_memlock_is_unlimited_everywhere(tmp_path: Path) -> None:
    for facts in ({**NO_CONTAINER, **NO_SWAP}, NSPAWN):
        upload = (
            plan(tmp_path, facts)
            .op(f"memlock unlimited for logins ({system.LIMITS_FILE})")
            .uploads[system.LIMITS_FILE]
        )
        assert "*\thard\tmemlock\tunlimited" in upload


def test_a_container_leaves_clock_kernel_and_swap_to_its_host(tmp_path: Path) -> None:
    host = plan(tmp_path, NSPAWN)
    assert not any("chrony" in name or "swap" in name.lower() for name in host.names())
    assert system.SYSCTL_FILE not in host.names()
    assert any("belong to the host of this systemd-nspawn container" in n for n in host.noops)


def test_active_swap_is_turned_off_and_fstab_commented(tmp_path: Path) -> None:
    swapping = {ActiveSwaps: [{"filename": "/swap.img", "type": "file", "size_kib": 4194304}]}
    fstab = {FindInFile: lambda **kwargs: ["/swap.img none swap sw 0 0"]}
    host = plan(tmp_path, {**NO_CONTAINER, **swapping, **fstab})
    assert host.op("Swap off now").commands == ("swapoff -a",)
    commented = host.op("No swap at boot (fstab entries commented out)").commands
    assert commented and "sed" in commented[0] and "/etc/fstab" in commented[0]
