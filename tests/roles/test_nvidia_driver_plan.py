"""Operation plans of roles/nvidia_driver: what it would run on each kind of node (tests/roles/plan.py).

aicluster's facts come from REAL outputs: the PCI bus of our H100 host (aicluster/captures/h100),
an 8 x A100 HGX with 6 NVSwitches and a GB200 tray (tests/fixtures/nvidia/lspci-*), nvidia-smi of
2 x RTX 3090 with driver 560 and of our H100 with 580 loaded, /proc/driver/nvidia/version of the
H100, and mokutil on a node without EFI. Where no real output exists (a Pascal card, a firmware
with Secure Boot on) the fact keeps its default or is given as the value the parser would return,
and the test says so. pyinfra's own facts (OS, kernel, architecture, files, packages, services) are
given as pyinfra's values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.files import Directory, File, Sha1File
from pyinfra.facts.server import Arch, KernelVersion, LinuxDistribution
from pyinfra.facts.systemd import SystemdEnabled, SystemdStatus

from aicluster import driver, simulation
from aicluster.facts.nvidia import NvidiaDriverVersion, NvidiaPciDevices, NvidiaSmiQuery
from aicluster.facts.secureboot import SecureBoot
from aicluster.facts.state import ManagedState
from roles.nvidia_driver import nvidia_driver
from tests.roles.plan import (
    ROOT,
    Facts,
    HostPlan,
    captured,
    converged_state,
    plan_role,
    spec_from_inventory,
)

CAPTURES = ROOT / "aicluster/captures"
NVIDIA_FIXTURES = ROOT / "tests/fixtures/nvidia"
NO_EFI = ROOT / "tests/fixtures/secureboot/mokutil-sb-state-no-efi-debian12.txt"

BLACKLIST = "nouveau blacklisted"
INITRAMFS = "initramfs updated (nouveau blacklisted)"
KEYRING = "NVIDIA CUDA repository keyring"
APT_UPDATE = "apt lists (CUDA repository added)"
HEADERS = "Headers of the running kernel"
HOLD = "Driver packages held against unattended upgrades"
PEERMEM_ON = "nvidia-peermem loaded at boot (RDMA fabric)"
PEERMEM_OFF = "no nvidia-peermem at boot"
PERSISTENCED = "nvidia-persistenced enabled"
FABRICMANAGER = "nvidia-fabricmanager enabled"
APT_INSTALL = (
    'DEBIAN_FRONTEND=noninteractive apt-get -y -o Dpkg::Options::="--force-confdef" '
    '-o Dpkg::Options::="--force-confold" install '
)


@dataclass(frozen=True)
class Os:
    id: str
    version: str
    kernel: str

    def facts(self, arch: str) -> Facts:
        return {
            LinuxDistribution: {"release_meta": {"ID": self.id, "VERSION_ID": self.version}},
            KernelVersion: self.kernel,
            Arch: arch,
        }


UBUNTU22 = Os("ubuntu", "22.04", "5.15.0-91-generic")
UBUNTU24 = Os("ubuntu", "24.04", "6.8.0-45-generic")
DEBIAN12 = Os("debian", "12", "6.1.0-18-amd64")
OSES = [pytest.param(UBUNTU22, id="ubuntu22.04"), pytest.param(UBUNTU24, id="ubuntu24.04"),
        pytest.param(DEBIAN12, id="debian12")]  # fmt: skip


@dataclass(frozen=True)
class Gpu:
    """A GPU generation: the spec's model name and what such a node reports before the deploy."""

    model: str
    flavour: str
    arch: str
    reported: Callable[[], Facts]


def _h100() -> Facts:
    # Our H100 host's PCI bus, before any driver: nvidia-smi and /proc answer nothing yet.
    return {NvidiaPciDevices: captured(NvidiaPciDevices, CAPTURES / "h100/pci.txt")}


def _rtx3090() -> Facts:
    # 2 x RTX 3090 running driver 560 (real nvidia-smi -q); no PCI capture of that host exists.
    return {
        NvidiaSmiQuery: captured(NvidiaSmiQuery, NVIDIA_FIXTURES / "nvidia-smi-q-2x-rtx3090.txt")
    }


def _pascal() -> Facts:
    # No real output of a Pascal node is at hand: every NVIDIA fact keeps its default, and the
    # generation comes from the spec's model name alone.
    return {}


def _gb200() -> Facts:
    # A GB200 tray (Grace: aarch64), plain lspci of its 4 Blackwell GPUs (device 2941).
    return {NvidiaPciDevices: captured(NvidiaPciDevices, NVIDIA_FIXTURES / "lspci-gb200-no-nn.txt")}


H100 = Gpu("NVIDIA H100 80GB HBM3", "open", "x86_64", _h100)
RTX3090 = Gpu("NVIDIA GeForce RTX 3090", "open", "x86_64", _rtx3090)
PASCAL = Gpu("Tesla P100-PCIE-16GB", "proprietary", "x86_64", _pascal)
GB200 = Gpu("NVIDIA GB200", "open", "aarch64", _gb200)
GPUS = [pytest.param(H100, id="h100-hopper"), pytest.param(RTX3090, id="rtx3090-ampere"),
        pytest.param(PASCAL, id="p100-pascal"), pytest.param(GB200, id="gb200-blackwell")]  # fmt: skip


def node_facts(os: Os, gpu: Gpu, more: Facts | None = None) -> Facts:
    """A node as it is before the deploy: its OS, its GPUs' own reports, no Secure Boot (real
    mokutil output of a node without EFI), plus `more`."""
    return {
        **os.facts(gpu.arch),
        SecureBoot: captured(SecureBoot, NO_EFI),
        **gpu.reported(),
        **(more or {}),
    }


def cluster(
    inventory: str = "h100_workstation",
    model: str | None = None,
    branch: str | None = None,
    os: str | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """An inventory with every node's GPU model, OS, the pinned branch and nvidia_driver settings set."""

    def edit(data: dict[str, Any]) -> None:
        for node in data["nodes"]:
            if model:
                node["gpus"][0]["model"] = model
            if os:
                node["os"] = os
        if branch:
            data["serving"]["versions"]["nvidia_driver_branch"] = branch
        if settings:
            data["nvidia_driver"] = settings

    return spec_from_inventory(inventory, edit)


def plan_of(tmp_path: Path, spec: dict[str, Any], facts: Facts, node: str = "h100") -> HostPlan:
    return plan_role(nvidia_driver, spec, tmp_path, {node: facts})[node]


def installed_packages(plan: HostPlan, prefix: str) -> list[str]:
    (command,) = plan.find(prefix).commands
    assert command.startswith(APT_INSTALL), command
    return command.removeprefix(APT_INSTALL).split()


def held(plan: HostPlan) -> list[str]:
    (command,) = plan.op(HOLD).commands
    assert command.startswith("apt-mark hold "), command
    return command.removeprefix("apt-mark hold ").split()


def assert_common_install(plan: HostPlan) -> None:
    """What every installing plan does around the packages: nouveau out, daemons enabled, and the
    changes that only follow another change."""
    assert not plan.failed and not plan.errors
    blacklist = plan.op(BLACKLIST)
    assert "upload /etc/modprobe.d/blacklist-nouveau.conf" in blacklist.commands
    assert blacklist.uploads["/etc/modprobe.d/blacklist-nouveau.conf"].splitlines()[1:] == [
        "blacklist nouveau",
        "options nouveau modeset=0",
    ]
    assert plan.op(INITRAMFS).commands == ("update-initramfs -u",)
    assert plan.op(INITRAMFS).after_change_of == (BLACKLIST,)
    assert plan.op(HOLD).after_change_of == (plan.find("NVIDIA driver ").name,)
    assert plan.names().index(BLACKLIST) < plan.names().index(plan.find("NVIDIA driver ").name)
    # No driver is loaded yet (or an older one): the daemon is enabled for the next boot, not started.
    assert plan.op(PERSISTENCED).commands == ("systemctl enable nvidia-persistenced.service",)
    assert FABRICMANAGER not in plan.names()
    # Ethernet inventories: nothing loads nvidia-peermem (the file is absent, so nothing to remove).
    assert PEERMEM_ON not in plan.names() and plan.op(PEERMEM_OFF).commands == ()


def assert_reboot_needed(plan: HostPlan, reason: str) -> None:
    assert not any(name.startswith("Reboot") for name in plan.names())
    assert plan.warnings == [f"reboot needed: {reason}"]
    assert f"reboot needed ({reason}); nvidia_driver.allow_reboot is off" in plan.noops


def reboot_reason(gpu: Gpu, branch: int) -> str:
    if gpu is RTX3090:
        return f"the loaded kernel module is 560.35.03, not branch {branch}"
    return "no NVIDIA kernel module is loaded"


# ------------------------------------------------------------------------------------------------
# source x OS x generation
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gpu", GPUS)
@pytest.mark.parametrize("os", OSES)
def test_cuda_repo_installs_branch_580_from_nvidias_repository(
    tmp_path: Path, os: Os, gpu: Gpu
) -> None:
    plan = plan_of(tmp_path, cluster(model=gpu.model, branch="580", os=os.id), node_facts(os, gpu))
    assert_common_install(plan)
    distro = {"22.04": "ubuntu2204", "24.04": "ubuntu2404", "12": "debian12"}[os.version]
    arch = {"x86_64": "x86_64", "aarch64": "sbsa"}[gpu.arch]
    url = f"https://developer.download.nvidia.com/compute/cuda/repos/{distro}/{arch}/cuda-keyring_1.1-1_all.deb"
    keyring = plan.op(KEYRING)
    assert url in keyring.commands[0] and any("dpkg" in c for c in keyring.commands)
    assert plan.op(APT_UPDATE).commands == ("apt-get update",)
    assert plan.op(APT_UPDATE).after_change_of == (KEYRING,)
    assert installed_packages(plan, HEADERS) == [f"linux-headers-{os.kernel}"]
    open_ = gpu.flavour == "open"
    name = f"NVIDIA driver 580 ({gpu.flavour} kernel modules)"
    if os.id == "debian":
        # Debian's CUDA repository is pinned to the branch by a package, installed first.
        assert installed_packages(plan, "Driver branch 580 pinned") == ["nvidia-driver-pinning-580"]
        assert plan.names().index("Driver branch 580 pinned") < plan.names().index(name)
        meta = "nvidia-open" if open_ else "cuda-drivers"
        assert installed_packages(plan, name) == [meta]
        module = "nvidia-kernel-open-dkms" if open_ else "nvidia-kernel-dkms"
        assert held(plan) == ["nvidia-driver-pinning-580", meta, module]
        assert_debian_components(plan, "contrib")
    else:
        assert "apt lists (Debian components added)" not in plan.names()
        # Before 590 Ubuntu's package names carry the branch: no pinning package.
        assert not any(n.startswith("Driver branch") for n in plan.names())
        meta = "nvidia-open-580" if open_ else "cuda-drivers-580"
        assert installed_packages(plan, name) == [meta]
        module = "nvidia-dkms-580-open" if open_ else "nvidia-dkms-580"
        assert held(plan) == [meta, module, "libnvidia-compute-580"]
    assert_reboot_needed(plan, reboot_reason(gpu, 580))


@pytest.mark.parametrize("gpu", GPUS)
@pytest.mark.parametrize("os", [pytest.param(UBUNTU22, id="ubuntu22.04"),
                                pytest.param(UBUNTU24, id="ubuntu24.04")])  # fmt: skip
def test_ubuntu_distro_installs_canonicals_precompiled_modules(
    tmp_path: Path, os: Os, gpu: Gpu
) -> None:
    spec = cluster(model=gpu.model, branch="570", os=os.id, source="distro")
    plan = plan_of(tmp_path, spec, node_facts(os, gpu))
    assert_common_install(plan)
    # Ubuntu's archive: no NVIDIA repository, no headers (nothing is built on the node).
    assert KEYRING not in plan.names() and APT_UPDATE not in plan.names()
    assert HEADERS not in plan.names()
    suffix = "-server-open" if gpu.flavour == "open" else "-server"
    packages = [
        f"linux-modules-nvidia-570{suffix}-{os.kernel}",
        f"linux-modules-nvidia-570{suffix}-generic",
        f"nvidia-headless-no-dkms-570{suffix}",
        "nvidia-utils-570-server",
    ]
    assert installed_packages(plan, f"NVIDIA driver 570 ({gpu.flavour} kernel modules)") == packages
    # The running kernel's module package is held; the flavour's metapackage follows new kernels.
    assert held(plan) == [packages[0], *packages[2:]]
    assert_reboot_needed(plan, reboot_reason(gpu, 570))


def assert_debian_components(plan: HostPlan, components: str) -> None:
    """A stock Debian 12 has main only: the components the packages live in are added first, and
    apt's lists refreshed only when that source changed."""
    name = f"Debian {components.replace(' ', ' and ')} components"
    upload = plan.op(name).uploads[driver.DEBIAN_COMPONENTS_FILE]
    assert f"Components: {components}\n" in upload and "Suites: bookworm bookworm-updates" in upload
    update = plan.op("apt lists (Debian components added)")
    assert update.after_change_of == (name,)
    assert plan.names().index(name) < plan.names().index(HEADERS)


@pytest.mark.parametrize("gpu", [g for g in GPUS if g.values[0] is not GB200])
def test_debian12_distro_builds_branch_535_with_dkms(tmp_path: Path, gpu: Gpu) -> None:
    spec = cluster(model=gpu.model, branch="535", os="debian", source="distro")
    plan = plan_of(tmp_path, spec, node_facts(DEBIAN12, gpu))
    assert_common_install(plan)
    assert KEYRING not in plan.names()
    assert installed_packages(plan, HEADERS) == ["linux-headers-6.1.0-18-amd64"]
    module = "nvidia-open-kernel-dkms" if gpu.flavour == "open" else "nvidia-kernel-dkms"
    packages = [module, "nvidia-driver"]
    assert installed_packages(plan, f"NVIDIA driver 535 ({gpu.flavour} kernel modules)") == packages
    assert held(plan) == packages
    assert_debian_components(plan, "contrib non-free")
    assert_reboot_needed(plan, reboot_reason(gpu, 535))


def test_debian12_distro_refuses_blackwell(tmp_path: Path) -> None:
    # Debian 12 packages 535 only; Blackwell needs 570 (GB200 seen on the PCI bus): the spec
    # cannot know the OS release, so the role stops this node before changing anything.
    spec = cluster(model=GB200.model, branch="570", os="debian", source="distro")
    plan = plan_of(tmp_path, spec, node_facts(DEBIAN12, GB200))
    assert plan.failed and plan.ops == []
    assert plan.errors == [
        "serving.versions.nvidia_driver_branch: Debian 12 packages branch 535 only, not 570: "
        "pin 535 or use nvidia_driver.source cuda-repo"
    ]


def _h100_with_580_loaded() -> Facts:
    # Our H100 host as captured: 580.159.04, open kernel module, nvidia-smi answering.
    return {
        NvidiaPciDevices: captured(NvidiaPciDevices, CAPTURES / "h100/pci.txt"),
        NvidiaSmiQuery: captured(NvidiaSmiQuery, CAPTURES / "h100/query-gpu-csv.txt"),
        NvidiaDriverVersion: captured(NvidiaDriverVersion, CAPTURES / "h100/proc-driver.txt"),
    }


PREINSTALLED = [
    pytest.param(H100, "580-open", _h100_with_580_loaded, id="h100-580-open"),
    pytest.param(RTX3090, "560", _rtx3090, id="rtx3090-560"),
]


@pytest.mark.parametrize(("gpu", "branch", "reported"), PREINSTALLED)
@pytest.mark.parametrize("os", OSES)
def test_preinstalled_changes_nothing_when_the_pinned_branch_is_loaded(
    tmp_path: Path, os: Os, gpu: Gpu, branch: str, reported: Callable[[], Facts]
) -> None:
    spec = cluster(model=gpu.model, branch=branch, os=os.id, source="preinstalled")
    plan = plan_of(tmp_path, spec, {**node_facts(os, gpu), **reported()})
    assert plan.ops == [] and not plan.failed
    number = branch.removesuffix("-open")
    assert plan.noops == [
        f"loaded driver is branch {number} as pinned (preinstalled: nothing changed)"
    ]


@pytest.mark.parametrize("os", OSES)
def test_preinstalled_stops_the_node_on_another_branch(tmp_path: Path, os: Os) -> None:
    spec = cluster(model=H100.model, branch="570-open", os=os.id, source="preinstalled")
    plan = plan_of(tmp_path, spec, {**node_facts(os, H100), **_h100_with_580_loaded()})
    assert plan.failed and plan.ops == []
    assert plan.errors == [
        "nodes.h100: nvidia_driver.source is preinstalled but the loaded kernel module is "
        "580.159.04, not branch 570"
    ]


# ------------------------------------------------------------------------------------------------
# NVSwitch, fabric, Secure Boot, swapped hardware, lab simulation
# ------------------------------------------------------------------------------------------------

A100 = "NVIDIA A100-SXM4-80GB"


def _hgx_a100() -> Facts:
    # 8 x A100 SXM4 with 6 NVSwitches on the PCI bus (real lspci -nn).
    path = NVIDIA_FIXTURES / "lspci-nn-8x-a100-sxm-6-nvswitch.txt"
    return {**UBUNTU22.facts("x86_64"), NvidiaPciDevices: captured(NvidiaPciDevices, path)}


@pytest.mark.parametrize(
    ("branch", "package"),
    [("570-open", "nvidia-fabricmanager-570"), ("590", "nvidia-fabricmanager")],
)
def test_nvswitches_bring_fabric_manager_of_the_drivers_branch(
    tmp_path: Path, branch: str, package: str
) -> None:
    plan = plan_of(tmp_path, cluster(model=A100, branch=branch), _hgx_a100())
    number = branch.removesuffix("-open")
    driver_op = f"NVIDIA driver {number} (open kernel modules)"
    assert installed_packages(plan, driver_op)[-1] == package
    assert held(plan)[-1] == package
    # Enabled with the driver; it can only start once the new module is loaded.
    assert plan.op(FABRICMANAGER).commands == ("systemctl enable nvidia-fabricmanager.service",)


def test_no_nvswitch_no_fabric_manager(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, cluster(branch="570-open"), node_facts(UBUNTU22, H100))
    packages = installed_packages(plan, "NVIDIA driver 570 (open kernel modules)")
    assert packages == ["nvidia-open-570"]
    assert not any("fabricmanager" in p for p in held(plan))
    assert FABRICMANAGER not in plan.names()


def test_nvswitches_on_debian12_distro_stop_the_node(tmp_path: Path) -> None:
    facts = {**_hgx_a100(), **DEBIAN12.facts("x86_64")}
    plan = plan_of(tmp_path, cluster(model=A100, branch="535", os="debian", source="distro"), facts)
    assert plan.failed and plan.ops == []
    assert plan.errors == [
        "nodes.h100: 6 NVSwitch devices need NVIDIA Fabric Manager, which debian 12 does not "
        "package: use nvidia_driver.source cuda-repo"
    ]


def _rdma(fabric: str) -> dict[str, Any]:
    def edit(data: dict[str, Any]) -> None:
        data["cluster"]["fabric"] = fabric
        for node in data["nodes"]:
            for port in node["fabric"]:
                port["kind"] = fabric

    return spec_from_inventory("multinode_ib", edit)


@pytest.mark.parametrize("fabric", ["infiniband", "roce"])
def test_rdma_fabric_loads_nvidia_peermem_at_boot(tmp_path: Path, fabric: str) -> None:
    plans = plan_role(
        nvidia_driver,
        _rdma(fabric),
        tmp_path,
        {"hgx1": node_facts(UBUNTU22, H100), "hgx2": node_facts(UBUNTU22, H100)},
    )
    for plan in plans.values():
        peermem = plan.op(PEERMEM_ON)
        assert "upload /etc/modules-load.d/nvidia-peermem.conf" in peermem.commands
        content = peermem.uploads["/etc/modules-load.d/nvidia-peermem.conf"]
        assert content.splitlines()[-1] == "nvidia-peermem"
        assert PEERMEM_OFF not in plan.names()


def test_ethernet_removes_a_peermem_drop_in_left_from_an_rdma_fabric(tmp_path: Path) -> None:
    def file(path: str) -> dict[str, Any] | None:
        return {"mode": 644, "size": 15} if path == driver.PEERMEM_FILE else None

    plan = plan_of(tmp_path, cluster(), node_facts(UBUNTU22, H100, {File: file}))
    assert plan.op(PEERMEM_OFF).commands == ("rm -f /etc/modules-load.d/nvidia-peermem.conf",)
    assert PEERMEM_ON not in plan.names()


SECURE_BOOT_NO_KEY = {"secure_boot": True, "enrolled_keys": []}
"""mokutil's "SecureBoot enabled" with no key enrolled, as parse_secure_boot returns it: no real
output of an enforcing firmware is at hand (tests/fixtures/secureboot/PROVENANCE.md)."""


@pytest.mark.parametrize(
    ("os", "key", "create"),
    [
        pytest.param(UBUNTU22, "/var/lib/shim-signed/mok/MOK.der", "update-secureboot-policy --new-key", id="ubuntu22.04"),
        pytest.param(UBUNTU24, "/var/lib/shim-signed/mok/MOK.der", "update-secureboot-policy --new-key", id="ubuntu24.04"),
        pytest.param(DEBIAN12, "/var/lib/dkms/mok.pub", "dkms generate_mok", id="debian12"),
    ],
)  # fmt: skip
def test_secure_boot_on_stops_a_dkms_install_with_the_mok_steps(
    tmp_path: Path, os: Os, key: str, create: str
) -> None:
    spec = cluster(branch="580-open", os=os.id)
    plan = plan_of(tmp_path, spec, node_facts(os, H100, {SecureBoot: SECURE_BOOT_NO_KEY}))
    assert plan.failed and plan.ops == []
    (error,) = plan.errors
    assert error.startswith(
        "nodes.h100: Secure Boot is on and the driver's modules are built by DKMS"
    )
    for step in (f"1) `{create}`", f"2) `mokutil --import {key}`", "3) reboot", "Enroll MOK",
                 "4) run the deploy again"):  # fmt: skip
        assert step in error


def test_secure_boot_with_the_key_enrolled_installs(tmp_path: Path) -> None:
    enrolled = {"secure_boot": True, "enrolled_keys": [driver.MOK_KEYS["ubuntu"]]}
    plan = plan_of(
        tmp_path, cluster(branch="580-open"), node_facts(UBUNTU22, H100, {SecureBoot: enrolled})
    )
    assert_common_install(plan)


def test_secure_boot_on_ubuntu_distro_needs_no_key(tmp_path: Path) -> None:
    # Canonical signs its precompiled modules: nothing is built, nothing to enrol.
    spec = cluster(branch="570-open", source="distro")
    plan = plan_of(tmp_path, spec, node_facts(UBUNTU22, H100, {SecureBoot: SECURE_BOOT_NO_KEY}))
    assert_common_install(plan)


def test_swapped_gpu_stops_that_node_only(tmp_path: Path) -> None:
    # The spec says H100 on both servers; hgx2 now holds an 8 x A100 NVSwitch board.
    plans = plan_role(
        nvidia_driver,
        _rdma("infiniband"),
        tmp_path,
        {"hgx1": node_facts(UBUNTU22, H100), "hgx2": {**node_facts(UBUNTU22, H100), **_hgx_a100()}},
    )
    swapped = plans["hgx2"]
    assert swapped.failed and swapped.ops == []
    assert swapped.errors == [
        "nodes.hgx2.gpus: the spec lists Hopper GPUs but the node has Ampere (hardware swapped?): "
        "correct the spec, then run again"
    ]
    assert not plans["hgx1"].failed
    assert "nvidia-open-570" in installed_packages(
        plans["hgx1"], "NVIDIA driver 570 (open kernel modules)"
    )


def test_swapped_gpu_on_the_only_node_stops_the_run(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, cluster(branch="580"), node_facts(UBUNTU24, H100, _gb200()))
    assert plan.failed and plan.ops == []
    assert plan.errors[0].startswith(
        "nodes.h100.gpus: the spec lists Hopper GPUs but the node has Blackwell (hardware swapped?)"
    )


def _marker(path: str) -> dict[str, Any] | None:
    return {"mode": 644, "size": 120} if path == f"/{simulation.MARKER}" else None


def _lab_h100() -> Facts:
    # A lab machine replaying our H100's nvidia-smi: no /proc driver, no PCI device.
    return {
        **UBUNTU24.facts("x86_64"),
        File: _marker,
        NvidiaSmiQuery: captured(NvidiaSmiQuery, CAPTURES / "h100/query-gpu-csv.txt"),
    }


@pytest.mark.parametrize("source", ["cuda-repo", "distro"])
def test_lab_simulation_never_installs_a_driver(tmp_path: Path, source: str) -> None:
    plan = plan_of(tmp_path, cluster(branch="580-open", source=source), _lab_h100())
    assert plan.ops == [] and not plan.failed
    assert plan.noops == [
        "SIMULATION: lab machine with replayed GPU outputs: no driver is installed here"
    ]


def test_lab_simulation_checks_a_preinstalled_driver_against_the_replayed_nvidia_smi(
    tmp_path: Path,
) -> None:
    plan = plan_of(tmp_path, cluster(branch="580-open", source="preinstalled"), _lab_h100())
    assert plan.ops == [] and not plan.failed
    assert plan.noops == ["loaded driver is branch 580 as pinned (preinstalled: nothing changed)"]
    other = plan_of(tmp_path, cluster(branch="570-open", source="preinstalled"), _lab_h100())
    assert other.failed and "580.159.04, not branch 570" in other.errors[0]


def test_node_without_gpus_is_left_alone(tmp_path: Path) -> None:
    # A CPU-only node (as the lab's machines): no GPUs in the spec, so no fact is even needed.
    def cpu_only(data: dict[str, Any]) -> None:
        del data["nodes"][0]["gpus"], data["nodes"][0]["accelerator_link"]
        data["serving"]["parallelism"]["tensor"] = 1

    plan = plan_of(tmp_path, spec_from_inventory("h100_workstation", cpu_only), {})
    assert plan.ops == [] and not plan.failed
    assert plan.noops == ["no NVIDIA GPUs in the spec for this node"]


# ------------------------------------------------------------------------------------------------
# reboot and idempotence
# ------------------------------------------------------------------------------------------------


def test_allow_reboot_reboots_one_node_at_a_time(tmp_path: Path) -> None:
    spec = cluster(branch="580", allow_reboot=True)
    plan = plan_of(tmp_path, spec, node_facts(UBUNTU22, H100))
    reboot = plan.op("Reboot: no NVIDIA kernel module is loaded")
    assert plan.names()[-1] == reboot.name
    assert reboot.arguments["_serial"] is True
    assert "( sleep 1 && reboot ) </dev/null >/dev/null 2>&1 &" in reboot.commands
    assert plan.warnings == []
    assert plan.op(PERSISTENCED).commands == ("systemctl enable nvidia-persistenced.service",)


def _converged() -> Facts:
    """Our H100 host after the role ran and the node rebooted: the planned module loaded (real
    captures), the packages installed and held, the drop-in in place, the daemon running."""
    blacklist = driver.nouveau_blacklist()
    packages = ["cuda-keyring", "linux-headers-6.8.0-45-generic", "nvidia-open-580",
                "nvidia-dkms-580-open", "libnvidia-compute-580"]  # fmt: skip
    service = "nvidia-persistenced.service"

    def file(path: str) -> dict[str, Any] | None:
        return (
            {"mode": 644, "size": len(blacklist)} if path == driver.NOUVEAU_BLACKLIST_FILE else None
        )

    def directory(path: str) -> dict[str, Any] | None:
        return {"mode": 755} if path == str(Path(driver.NOUVEAU_BLACKLIST_FILE).parent) else None

    def sha1(path: str) -> str | None:
        if path == driver.NOUVEAU_BLACKLIST_FILE:
            return hashlib.sha1(blacklist.encode()).hexdigest()
        return None

    return {
        **node_facts(UBUNTU24, H100),
        **_h100_with_580_loaded(),
        File: file,
        Directory: directory,
        Sha1File: sha1,
        DebPackages: {name: ["1"] for name in packages},
        SystemdStatus: {service: True},
        SystemdEnabled: {service: True},
    }


def _first_and_second_run(
    tmp_path: Path, edit: Callable[[dict[str, Any]], None] | None = None, more: Facts | None = None
) -> tuple[HostPlan, HostPlan]:
    """The role on our H100 host with 580 open loaded, then again once the first run's operations
    ran (their result, changed by `edit`, is what the second run reads; `more`: pyinfra's facts
    that say the same)."""
    facts = {**node_facts(UBUNTU24, H100), **_h100_with_580_loaded()}
    spec = cluster(branch="580-open", os="ubuntu")
    first = plan_of(tmp_path, spec, facts)
    after = converged_state(first)

    def state(**probe: Any) -> dict[str, Any]:
        value = after(**probe)
        if edit:
            edit(value)
        return value

    return first, plan_of(tmp_path, spec, {**_converged(), **(more or {}), ManagedState: state})


def test_second_run_on_a_converged_node_sends_one_command_and_changes_nothing(
    tmp_path: Path,
) -> None:
    first, second = _first_and_second_run(tmp_path)
    assert first.runs(HOLD) and first.runs(KEYRING)
    assert second.ops == [] and not second.failed and second.warnings == []
    assert second.noops == ["2 files, 1 service and 5 packages as wanted"]


def test_one_drifted_file_reruns_the_role_where_the_rest_stays_put(tmp_path: Path) -> None:
    # The blacklist edited by hand: it is written again and the initramfs rebuilt; the packages
    # are installed and held, so holding waits for an install that does not come, and the
    # keyring is not downloaded again (it would change, and update the apt lists each run).
    def edited(state: dict[str, Any]) -> None:
        state["files"][driver.NOUVEAU_BLACKLIST_FILE]["sha1"] = "0" * 40

    _, plan = _first_and_second_run(tmp_path, edited, {Sha1File: lambda path: "0" * 40})
    assert not plan.failed and plan.warnings == []
    assert [op.name for op in plan.ops if plan.runs(op.name)] == [BLACKLIST, INITRAMFS]
    assert plan.op(HOLD).commands and not plan.runs(HOLD)
    assert plan.op(HOLD).after_change_of == (plan.find("NVIDIA driver ").name,)
    assert KEYRING not in plan.names() and APT_UPDATE not in plan.names()
    assert "cuda-keyring is installed" in plan.noops
    assert not any(name.startswith("Reboot") for name in plan.names())


def test_a_package_unheld_by_hand_is_held_again(tmp_path: Path) -> None:
    def unheld(state: dict[str, Any]) -> None:
        state["packages"]["libnvidia-compute-580"] = "ii"

    _, plan = _first_and_second_run(tmp_path, unheld)
    assert plan.runs(HOLD) and plan.op(HOLD).after_change_of == ()
    assert held(plan) == ["nvidia-open-580", "nvidia-dkms-580-open", "libnvidia-compute-580"]


def test_loaded_module_as_planned_starts_the_daemons_without_reboot(tmp_path: Path) -> None:
    # Our H100 host with 580 open loaded but nothing of the role on it yet (e.g. a hand install).
    facts = {**node_facts(UBUNTU24, H100), **_h100_with_580_loaded()}
    plan = plan_of(tmp_path, cluster(branch="580-open", allow_reboot=True), facts)
    assert plan.op(PERSISTENCED).commands == (
        "systemctl start nvidia-persistenced.service",
        "systemctl enable nvidia-persistenced.service",
    )
    assert not any(name.startswith("Reboot") for name in plan.names())
    assert plan.warnings == [] and plan.runs(HOLD) and plan.runs(INITRAMFS)
