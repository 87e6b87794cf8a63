"""System checks: memory stays resident, limits fit RDMA, kernel settings hold, disk and clock."""

from __future__ import annotations

import pytest
import testinfra.host

from aicluster import system
from aicluster.checks import fail, warn
from aicluster.checks.context import Target, run
from aicluster.facts.system import parse_proc_swaps
from aicluster.spec import Node

# Below this the node cannot unpack a wheel or write a log; below WARN a model download fails.
DISK_FAIL_GIB = 1
DISK_WARN_GIB = 10


def test_swap_off(host: testinfra.host.Host, container: str | None) -> None:
    """No swap is in use: a swapped-out KV cache or Ray object store stalls every request."""
    swaps = parse_proc_swaps(run(host, "cat /proc/swaps", "cannot read /proc/swaps"))
    if not swaps:
        return
    names = ", ".join(s["filename"] for s in swaps)
    if container:
        warn(f"the host of this {container} container swaps to {names}", "swapoff -a on the host")
    fail(f"swap is on: {names}", "swapoff -a; converge roles/base (it comments swap out of fstab)")


def test_service_memlock_unlimited(host: testinfra.host.Host, unit: Target) -> None:
    """aicluster's services may lock memory without limit (RDMA and pinned buffers need it)."""
    if unit.value == "aicluster-firewall":
        pytest.skip("a oneshot loading nftables rules")
    value = run(host, f"systemctl show -p LimitMEMLOCK --value {unit.value}", "systemctl").strip()
    if value != str(2**64 - 1) and value != "infinity":
        fail(
            f"{unit.value}: LimitMEMLOCK={value}",
            "converge roles/ray and roles/vllm (LimitMEMLOCK=infinity)",
        )


def test_kernel_setting(
    host: testinfra.host.Host, sysctl_key: Target, container: str | None
) -> None:
    """Each kernel setting of roles/base holds (see aicluster/system.py for why each is set)."""
    if container:
        pytest.skip(f"kernel settings belong to the host of this {container} container")
    key = sysctl_key.id
    result = host.run(f"sysctl -n {key}")
    if result.rc != 0:
        pytest.skip(f"this kernel has no {key}")
    actual = " ".join(result.stdout.split())
    expected = " ".join(str(sysctl_key.value).split())
    if actual != expected:
        fail(
            f"{key} = {actual}, expected {expected}", f"sysctl -p {system.SYSCTL_FILE} (roles/base)"
        )


def test_disk_space(host: testinfra.host.Host) -> None:
    """The file systems holding the root, the runtime and the models have room left."""
    out = run(host, "df -P -k / /opt /var/lib 2>/dev/null | tail -n +2", "df")
    short = []
    for line in sorted(set(out.strip().splitlines())):
        fields = line.split()
        free_gib = int(fields[3]) / 2**20
        if free_gib < DISK_WARN_GIB:
            short.append((free_gib, fields[5]))
    if not short:
        return
    listed = ", ".join(f"{mount} has {free:.1f} GiB free" for free, mount in short)
    fix = "free space (old venvs, model caches, journal: journalctl --vacuum-size=1G)"
    if min(free for free, _ in short) < DISK_FAIL_GIB:
        fail(listed, fix)
    warn(listed, fix)


def test_clock_synchronised(host: testinfra.host.Host, node: Node, container: str | None) -> None:
    """The node's clock is disciplined by NTP (chrony): Ray, NCCL timeouts and logs compare times."""
    if container:
        pytest.skip(f"the clock belongs to the host of this {container} container")
    synced = host.run("timedatectl show -p NTPSynchronized --value").stdout.strip()
    if synced != "yes":
        fail(
            f"{node.name}: clock not synchronised (NTPSynchronized={synced or 'unknown'})",
            "systemctl status chrony; chronyc sources (roles/base installs chrony)",
        )
