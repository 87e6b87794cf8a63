"""NVIDIA driver decisions: which kernel modules, which packages, what to hold, load and refuse.

Pure functions of the spec and of facts already read (no I/O): roles/nvidia_driver turns a
DriverPlan into operations, `aicluster validate` uses the flavour rules through the spec.

Sources of the rules and package names (checked 2026):
- Open kernel modules run on "any Turing or later GPU": NVIDIA/open-gpu-kernel-modules README,
  "Compatible GPUs" (its table starts at PCI device 1E02, the TITAN RTX). Blackwell and Grace
  Hopper are supported by the open modules only; 580 is the last branch for Maxwell, Pascal, Volta.
- NVIDIA Driver Installation Guide (docs.nvidia.com/datacenter/tesla/driver-installation-guide):
  network repository through cuda-keyring_1.1-1_all.deb; branch chosen with
  nvidia-driver-pinning-<branch>, then `nvidia-open` (open) or `cuda-drivers` (proprietary);
  from 590 Ubuntu drops the branch from package names ("Ubuntu 590 package renames":
  nvidia-dkms-580-open -> nvidia-dkms-open, libnvidia-compute-580 -> libnvidia-compute, ...),
  before 590 the names carry it (nvidia-open-570, cuda-drivers-570, nvidia-fabricmanager-570).
- Ubuntu archive (packages.ubuntu.com): Canonical-signed precompiled modules
  linux-modules-nvidia-<branch>-server[-open]-<kernel flavour | kernel release>, user space
  nvidia-headless-no-dkms-<branch>-server[-open] and nvidia-utils-<branch>-server.
- Debian 12 archive (packages.debian.org/bookworm): branch 535 only, nvidia-driver (non-free) with
  nvidia-kernel-dkms (non-free) or nvidia-open-kernel-dkms (contrib); no fabric manager.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from aicluster.spec import ClusterSpec, Node

Source = Literal["cuda-repo", "distro", "preinstalled"]
KernelModules = Literal["auto", "open", "proprietary"]
Flavour = Literal["open", "proprietary"]


class Generation(Enum):
    """GPU architecture generations, as far as they decide the kernel module flavour."""

    KEPLER_OR_OLDER = "Kepler or older"
    MAXWELL = "Maxwell"
    PASCAL = "Pascal"
    VOLTA = "Volta"
    TURING = "Turing"
    AMPERE = "Ampere"
    ADA = "Ada Lovelace"
    HOPPER = "Hopper"
    GRACE_HOPPER = "Grace Hopper"
    BLACKWELL = "Blackwell"


PROPRIETARY_ONLY = frozenset({Generation.MAXWELL, Generation.PASCAL, Generation.VOLTA})
OPEN_ONLY = frozenset({Generation.GRACE_HOPPER, Generation.BLACKWELL})
LAST_BRANCH_BEFORE_TURING = 580
FIRST_BLACKWELL_BRANCH = 570
# From 590 the CUDA repository's Ubuntu packages lose the branch from their names.
FIRST_UNVERSIONED_BRANCH = 590
# Debian 12 ships one branch; NVIDIA's pinning packages are how its CUDA repository picks one.
DEBIAN12_BRANCH = 535
FIRST_DEBIAN_PINNING_BRANCH = 580

# Model names as nvidia-smi prints them (the spec's gpus[].model). First match wins: GH200 before H200.
MODEL_GENERATIONS: tuple[tuple[re.Pattern[str], Generation], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), generation)
    for pattern, generation in (
        (r"\bGH200\b", Generation.GRACE_HOPPER),
        (r"\bG?B[1-3]00\b|RTX 50[5-9]0|RTX PRO \d{4} Blackwell|Blackwell", Generation.BLACKWELL),
        (r"\bH(100|200|800|20)\b", Generation.HOPPER),
        (r"RTX 40[5-9]0|\bL40S?\b|\bL4\b|\bL20\b|RTX \d{4} Ada", Generation.ADA),
        (r"RTX 30[5-9]0|\bA(100|800|10|30|40|16|2)\b|RTX A\d{4}|\bA\d{4}\b", Generation.AMPERE),
        (
            r"RTX 20[6-8]0|GTX 16[5-6]0|TITAN RTX|Quadro RTX|\bT4\b|\bT(400|600|1000)\b",
            Generation.TURING,
        ),
        (r"\bV100\b|TITAN V\b|GV100", Generation.VOLTA),
        (
            r"\bP(100|40|4|6000|5000|4000|2000)\b|GTX 10[5-8]0|TITAN Xp?\b|Quadro P\d+",
            Generation.PASCAL,
        ),
        (r"\bM(60|40|10|6000|5000|4000)\b|GTX 9[5-8]0|GTX 750|Quadro M\d+", Generation.MAXWELL),
        (r"\bK(80|40|20|10)\b|GTX 7[6-8]0|GTX 6[5-9]0", Generation.KEPLER_OR_OLDER),
    )
)

# PCI device ids of NVIDIA GPU functions (pci.ids, vendor 10de, by chip: GM10x/GM20x, GP10x,
# GV100, TU10x/TU11x, GA10x, GH100, AD10x, GB10x/GB20x). Every id in the open modules' README
# table is 0x1E02 or above, which is where Turing starts. Ids outside these ranges are not guessed.
PCI_GENERATIONS: tuple[tuple[int, int, Generation], ...] = (
    (0x1340, 0x13FF, Generation.MAXWELL),
    (0x1400, 0x143F, Generation.MAXWELL),
    (0x17C0, 0x17FF, Generation.MAXWELL),
    (0x15F0, 0x15FF, Generation.PASCAL),
    (0x1B00, 0x1D7F, Generation.PASCAL),
    (0x1D80, 0x1DFF, Generation.VOLTA),
    (0x1E00, 0x1FFF, Generation.TURING),
    (0x2180, 0x21FF, Generation.TURING),
    (0x2080, 0x20FF, Generation.AMPERE),
    (0x2200, 0x223F, Generation.AMPERE),
    (0x2400, 0x25FF, Generation.AMPERE),
    (0x2300, 0x233F, Generation.HOPPER),
    (0x2340, 0x234F, Generation.GRACE_HOPPER),
    (0x2680, 0x28FF, Generation.ADA),
    (0x2900, 0x29FF, Generation.BLACKWELL),
    (0x2B00, 0x2FFF, Generation.BLACKWELL),
    (0x3100, 0x31FF, Generation.BLACKWELL),
)

# nvidia-smi's compute_cap, by major version (CUDA C Programming Guide, compute capabilities).
COMPUTE_CAPABILITY_GENERATIONS = {
    "5": Generation.MAXWELL,
    "6": Generation.PASCAL,
    "8": Generation.AMPERE,
    "9": Generation.HOPPER,
    "10": Generation.BLACKWELL,
    "12": Generation.BLACKWELL,
}

CUDA_REPOSITORY = "https://developer.download.nvidia.com/compute/cuda/repos"
CUDA_KEYRING = "cuda-keyring_1.1-1_all.deb"
CUDA_REPO_DISTROS = {
    ("ubuntu", "22.04"): "ubuntu2204",
    ("ubuntu", "24.04"): "ubuntu2404",
    ("debian", "12"): "debian12",
}
CUDA_REPO_ARCHES = {"x86_64": "x86_64", "aarch64": "sbsa"}

NOUVEAU_BLACKLIST_FILE = "/etc/modprobe.d/blacklist-nouveau.conf"
PEERMEM_FILE = "/etc/modules-load.d/nvidia-peermem.conf"
# DKMS signing keys the distributions create: Debian's dkms, Ubuntu's shim-signed.
MOK_KEYS = {"debian": "/var/lib/dkms/mok.pub", "ubuntu": "/var/lib/shim-signed/mok/MOK.der"}


class DriverError(ValueError):
    """A driver plan that cannot work; the message names the node, the field and what to do."""


def generation_of_model(model: str) -> Generation | None:
    """The generation of a GPU named as nvidia-smi names it; None when the name is not known."""
    return next((gen for pattern, gen in MODEL_GENERATIONS if pattern.search(model)), None)


def generation_of_pci_device(device_id: str) -> Generation | None:
    """The generation of an NVIDIA GPU PCI device id ("2330", "0x2330"); None outside known ranges."""
    number = int(device_id.lower().removeprefix("0x"), 16)
    return next((gen for low, high, gen in PCI_GENERATIONS if low <= number <= high), None)


def generation_of_compute_capability(capability: str) -> Generation | None:
    """The generation of a compute capability such as "9.0"; 7.x and 8.9 name two generations each."""
    major, _, minor = capability.partition(".")
    if major == "7":
        return Generation.VOLTA if minor in ("0", "2") else Generation.TURING
    if capability == "8.9":
        return Generation.ADA
    return COMPUTE_CAPABILITY_GENERATIONS.get(major)


def branch_number(branch: str) -> int:
    """570 for "570" and "570-open"."""
    return int(branch.removesuffix("-open"))


def requested_flavour(branch: str | None, kernel_modules: KernelModules) -> KernelModules:
    """What the spec asks for: a "-open" branch is a request for the open modules."""
    if branch is not None and branch.endswith("-open") and kernel_modules == "auto":
        return "open"
    return kernel_modules


def flavour_problem(
    generation: Generation, branch: str | None, kernel_modules: KernelModules
) -> str | None:
    """Why the requested flavour or branch cannot drive this generation, or None."""
    asked = requested_flavour(branch, kernel_modules)
    name = generation.value
    if generation is Generation.KEPLER_OR_OLDER:
        return f"{name} GPUs are not supported by any current driver branch (470 was the last)"
    if asked == "open" and generation in PROPRIETARY_ONLY:
        return (
            f"{name} GPUs need the proprietary kernel modules (open modules start with Turing): "
            "drop the -open suffix and set nvidia_driver.kernel_modules to auto or proprietary"
        )
    if asked == "proprietary" and generation in OPEN_ONLY:
        return f"{name} GPUs run the open kernel modules only: set nvidia_driver.kernel_modules to auto or open"
    if branch is not None:
        number = branch_number(branch)
        if generation in PROPRIETARY_ONLY and number > LAST_BRANCH_BEFORE_TURING:
            return (
                f"{name} GPUs are supported up to branch {LAST_BRANCH_BEFORE_TURING}, not {number}"
            )
        if generation is Generation.BLACKWELL and number < FIRST_BLACKWELL_BRANCH:
            return f"Blackwell GPUs need branch {FIRST_BLACKWELL_BRANCH} or later, not {number}"
    return None


def choose_flavour(generation: Generation, kernel_modules: KernelModules) -> Flavour:
    """Open for Turing and newer, proprietary before; an explicit choice wins (checked first)."""
    if kernel_modules != "auto":
        return kernel_modules
    return "proprietary" if generation in PROPRIETARY_ONLY else "open"


@dataclass(frozen=True)
class HostFacts:
    """What the node reports, already parsed by aicluster.facts."""

    distribution: str
    """os-release ID: ubuntu, debian."""
    version: str
    """os-release VERSION_ID: 22.04, 24.04, 12."""
    machine: str
    """uname -m: x86_64, aarch64."""
    kernel_release: str
    """uname -r."""
    pci_gpu_ids: tuple[str, ...] = ()
    """PCI device ids of the NVIDIA GPU functions (seen with or without a driver)."""
    nvswitches: int = 0
    compute_capabilities: tuple[str, ...] = ()
    """nvidia-smi's compute_cap per GPU, when a driver answers."""
    loaded_driver: str | None = None
    """Version of the loaded NVIDIA kernel module (or what nvidia-smi reports), None without one."""
    loaded_open: bool | None = None
    secure_boot: bool | None = None
    """True when the firmware enforces Secure Boot; None when the node has no EFI variables."""
    enrolled_keys: frozenset[str] = frozenset()
    """MOK key files (MOK_KEYS) that are enrolled."""


def os_of(distribution: dict[str, Any]) -> tuple[str, str]:
    """(ID, VERSION_ID) from pyinfra's LinuxDistribution fact."""
    meta = distribution.get("release_meta") or {}
    return str(meta.get("ID", "")).lower(), str(meta.get("VERSION_ID", ""))


@dataclass(frozen=True)
class DriverPlan:
    """Everything roles/nvidia_driver does on one node, decided up front."""

    node: str
    source: Source
    branch: int
    flavour: Flavour
    generation: Generation
    keyring_url: str | None
    """cuda-keyring .deb of NVIDIA's repository (source cuda-repo)."""
    headers: tuple[str, ...]
    """Kernel headers for a DKMS build, installed before the driver."""
    pinning: tuple[str, ...]
    """The branch-pinning package, installed before the driver so apt resolves within the branch."""
    packages: tuple[str, ...]
    hold: tuple[str, ...]
    """Packages apt-mark holds: unattended upgrades must not move libraries past the loaded module."""
    fabricmanager: str | None
    """Package of NVIDIA Fabric Manager (NVSwitch systems), the driver's own branch."""
    peermem: bool
    """Load nvidia-peermem at boot: GPUDirect RDMA over InfiniBand/RoCE."""
    dkms: bool
    """The modules are built on the node (Secure Boot then needs an enrolled key)."""
    reboot_reason: str | None
    """Why the loaded module is not the planned one yet; None when it is."""
    debian_components: tuple[str, ...] = ()
    """Debian archive components the packages come from beyond main (a stock Debian 12 has main
    and non-free-firmware only)."""

    @property
    def install(self) -> bool:
        return self.source != "preinstalled"


def nouveau_blacklist() -> str:
    return (
        "# Written by aicluster (roles/nvidia_driver): nouveau must not claim the GPUs before nvidia.\n"
        "blacklist nouveau\n"
        "options nouveau modeset=0\n"
    )


def peermem_modules() -> str:
    return "# Written by aicluster (roles/nvidia_driver): GPUDirect RDMA for NCCL over InfiniBand/RoCE.\nnvidia-peermem\n"


def node_generation(node: Node, facts: HostFacts, loc: str) -> Generation:
    """One generation for the node, from the spec's models checked against what the node reports."""
    from_spec = {generation_of_model(group.model) for group in node.gpus}
    reported = {generation_of_pci_device(d) for d in facts.pci_gpu_ids}
    reported |= {generation_of_compute_capability(c) for c in facts.compute_capabilities}
    reported.discard(None)
    known = from_spec - {None} or reported
    if not known:
        models = ", ".join(sorted({group.model for group in node.gpus}))
        raise DriverError(
            f"{loc}.gpus: cannot tell the generation of {models} and the node reports no known "
            "NVIDIA PCI device: name the model as nvidia-smi prints it"
        )
    if reported and not reported <= known:
        found = ", ".join(sorted(g.value for g in reported if g))
        listed = ", ".join(sorted(g.value for g in known if g))
        raise DriverError(
            f"{loc}.gpus: the spec lists {listed} GPUs but the node has {found} (hardware swapped?): "
            "correct the spec, then run again"
        )
    if known & PROPRIETARY_ONLY and known & OPEN_ONLY:
        names = " and ".join(sorted(g.value for g in known if g))
        raise DriverError(f"{loc}.gpus: no kernel module flavour drives both {names} GPUs")
    # Mixed generations: the most restrictive decides (a Pascal card keeps the node proprietary).
    ordered = [g for g in Generation if g in known]
    restricted = [g for g in ordered if g in PROPRIETARY_ONLY or g is Generation.KEPLER_OR_OLDER]
    return restricted[0] if restricted else ordered[-1]


def plan_driver(spec: ClusterSpec, node: Node, facts: HostFacts) -> DriverPlan:
    """The driver plan of a node with NVIDIA GPUs, or DriverError naming what to change."""
    loc = f"nodes.{node.name}"
    settings = spec.nvidia_driver
    pinned = spec.serving.versions.nvidia_driver_branch
    if pinned is None:
        raise DriverError(
            f"serving.versions.nvidia_driver_branch: pin the driver branch for {node.name}'s GPUs"
        )
    generation = node_generation(node, facts, loc)
    problem = flavour_problem(generation, pinned, settings.kernel_modules)
    if problem:
        raise DriverError(f"{loc}.gpus: {problem}")
    flavour = choose_flavour(generation, requested_flavour(pinned, settings.kernel_modules))
    branch = branch_number(pinned)
    reboot = _reboot_reason(facts, branch, flavour)
    if settings.source == "preinstalled":
        if reboot:
            raise DriverError(f"{loc}: nvidia_driver.source is preinstalled but {reboot}")
        return DriverPlan(
            node.name,
            "preinstalled",
            branch,
            flavour,
            generation,
            None,
            (),
            (),
            (),
            (),
            None,
            _peermem(spec),
            False,
            None,
        )
    base: dict[str, Any] = {
        "node": node.name,
        "branch": branch,
        "flavour": flavour,
        "generation": generation,
        "peermem": _peermem(spec),
        "reboot_reason": reboot,
    }
    if settings.source == "cuda-repo":
        plan = _cuda_repo(facts, branch, flavour, loc, base)
    else:
        plan = _distro(facts, branch, flavour, loc, base)
    if plan.fabricmanager is None and facts.nvswitches:
        raise DriverError(
            f"{loc}: {facts.nvswitches} NVSwitch devices need NVIDIA Fabric Manager, which "
            f"{facts.distribution} {facts.version} does not package: use nvidia_driver.source cuda-repo"
        )
    _secure_boot(plan, facts, loc)
    return plan


def _peermem(spec: ClusterSpec) -> bool:
    return spec.cluster.fabric in ("infiniband", "roce")


def _reboot_reason(facts: HostFacts, branch: int, flavour: Flavour) -> str | None:
    if facts.loaded_driver is None:
        return "no NVIDIA kernel module is loaded"
    loaded = int(facts.loaded_driver.split(".")[0])
    if loaded != branch:
        return f"the loaded kernel module is {facts.loaded_driver}, not branch {branch}"
    if facts.loaded_open is not None and facts.loaded_open != (flavour == "open"):
        running = "open" if facts.loaded_open else "proprietary"
        return f"the loaded kernel module is {running}, not {flavour}"
    return None


def _cuda_repo(
    facts: HostFacts, branch: int, flavour: Flavour, loc: str, base: dict[str, Any]
) -> DriverPlan:
    distro = CUDA_REPO_DISTROS.get((facts.distribution, facts.version))
    arch = CUDA_REPO_ARCHES.get(facts.machine)
    if distro is None or arch is None:
        supported = ", ".join(f"{d} {v}" for d, v in CUDA_REPO_DISTROS)
        raise DriverError(
            f"{loc}.os: NVIDIA's CUDA repository is set up here for {supported} on x86_64/aarch64, "
            f"not {facts.distribution} {facts.version} {facts.machine}"
        )
    open_ = flavour == "open"
    if facts.distribution == "debian":
        if branch < FIRST_DEBIAN_PINNING_BRANCH:
            raise DriverError(
                f"serving.versions.nvidia_driver_branch: on Debian the CUDA repository is pinned by "
                f"branch from {FIRST_DEBIAN_PINNING_BRANCH} (nvidia-driver-pinning-<branch>), not {branch}"
            )
        pinning: tuple[str, ...] = (f"nvidia-driver-pinning-{branch}",)
        meta = "nvidia-open" if open_ else "cuda-drivers"
        module = "nvidia-kernel-open-dkms" if open_ else "nvidia-kernel-dkms"
        packages = (meta,)
        hold = (*pinning, meta, module)
        fabricmanager = (
            "nvidia-fabricmanager"
            if branch >= FIRST_UNVERSIONED_BRANCH
            else f"nvidia-fabricmanager-{branch}"
        )
    elif branch >= FIRST_UNVERSIONED_BRANCH:
        pinning = (f"nvidia-driver-pinning-{branch}",)
        meta = "nvidia-open" if open_ else "cuda-drivers"
        packages = (meta,)
        hold = (*pinning, meta, "nvidia-dkms-open" if open_ else "nvidia-dkms", "libnvidia-compute")
        fabricmanager = "nvidia-fabricmanager"
    else:
        pinning = ()
        meta = f"nvidia-open-{branch}" if open_ else f"cuda-drivers-{branch}"
        packages = (meta,)
        module = f"nvidia-dkms-{branch}-open" if open_ else f"nvidia-dkms-{branch}"
        hold = (meta, module, f"libnvidia-compute-{branch}")
        fabricmanager = f"nvidia-fabricmanager-{branch}"
    return DriverPlan(
        source="cuda-repo",
        # NVIDIA's Debian instructions enable contrib: its DKMS packages depend on it.
        debian_components=("contrib",) if facts.distribution == "debian" else (),
        keyring_url=f"{CUDA_REPOSITORY}/{distro}/{arch}/{CUDA_KEYRING}",
        headers=(f"linux-headers-{facts.kernel_release}",),
        pinning=pinning,
        packages=packages,
        hold=hold + ((fabricmanager,) if facts.nvswitches else ()),
        fabricmanager=fabricmanager if facts.nvswitches else None,
        dkms=True,
        **base,
    )


UBUNTU_KERNEL = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+-[0-9]+-(?P<flavour>[a-z0-9-]+)")


def _distro(
    facts: HostFacts, branch: int, flavour: Flavour, loc: str, base: dict[str, Any]
) -> DriverPlan:
    open_ = flavour == "open"
    if facts.distribution == "ubuntu":
        kernel = UBUNTU_KERNEL.fullmatch(facts.kernel_release)
        if kernel is None:
            raise DriverError(
                f"{loc}: kernel {facts.kernel_release} is not an Ubuntu archive kernel, so Ubuntu has no "
                "precompiled NVIDIA modules for it: use nvidia_driver.source cuda-repo"
            )
        suffix = "-server-open" if open_ else "-server"
        modules = f"linux-modules-nvidia-{branch}{suffix}"
        # The running kernel's package now, the flavour's metapackage for the kernels to come.
        packages = (
            f"{modules}-{facts.kernel_release}",
            f"{modules}-{kernel.group('flavour')}",
            f"nvidia-headless-no-dkms-{branch}{suffix}",
            f"nvidia-utils-{branch}-server",
        )
        fabricmanager = f"nvidia-fabricmanager-{branch}"
        return DriverPlan(
            source="distro",
            keyring_url=None,
            headers=(),
            pinning=(),
            packages=packages,
            hold=(packages[0], *packages[2:]) + ((fabricmanager,) if facts.nvswitches else ()),
            fabricmanager=fabricmanager if facts.nvswitches else None,
            dkms=False,
            **base,
        )
    if facts.distribution == "debian" and facts.version == "12":
        if branch != DEBIAN12_BRANCH:
            raise DriverError(
                f"serving.versions.nvidia_driver_branch: Debian 12 packages branch {DEBIAN12_BRANCH} "
                f"only, not {branch}: pin {DEBIAN12_BRANCH} or use nvidia_driver.source cuda-repo"
            )
        module = "nvidia-open-kernel-dkms" if open_ else "nvidia-kernel-dkms"
        return DriverPlan(
            source="distro",
            # nvidia-driver and nvidia-kernel-dkms are in non-free, nvidia-open-kernel-dkms in contrib.
            debian_components=("contrib", "non-free"),
            keyring_url=None,
            headers=(f"linux-headers-{facts.kernel_release}",),
            pinning=(),
            packages=(module, "nvidia-driver"),
            hold=(module, "nvidia-driver"),
            fabricmanager=None,
            dkms=True,
            **base,
        )
    raise DriverError(
        f"{loc}.os: no distribution driver packages known for {facts.distribution} {facts.version}: "
        "use nvidia_driver.source cuda-repo"
    )


DEBIAN_COMPONENTS_FILE = "/etc/apt/sources.list.d/aicluster-debian-components.sources"
DEBIAN_MIRROR = "http://deb.debian.org/debian"


def debian_components_sources(components: tuple[str, ...], codename: str = "bookworm") -> str:
    """A deb822 source adding `components` of Debian's archive (the official redirector) next to
    whatever the node already uses for main."""
    return (
        "# Written by aicluster (roles/nvidia_driver): the NVIDIA driver's packages need these.\n"
        "Types: deb\n"
        f"URIs: {DEBIAN_MIRROR}\n"
        f"Suites: {codename} {codename}-updates\n"
        f"Components: {' '.join(components)}\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )


def _secure_boot(plan: DriverPlan, facts: HostFacts, loc: str) -> None:
    """Secure Boot rejects a DKMS-built module unless its signing key is enrolled (MOK)."""
    key = MOK_KEYS.get(facts.distribution, MOK_KEYS["debian"])
    if not (facts.secure_boot and plan.dkms) or key in facts.enrolled_keys:
        return
    create = (
        "dkms generate_mok"
        if facts.distribution == "debian"
        else "update-secureboot-policy --new-key"
    )
    raise DriverError(
        f"{loc}: Secure Boot is on and the driver's modules are built by DKMS, whose signing key "
        f"{key} is not enrolled, so the kernel would refuse them. On the node: 1) `{create}` "
        f"(if {key} does not exist), 2) `mokutil --import {key}` and choose a one-time password, "
        "3) reboot and, in the blue MOK Manager, choose Enroll MOK and enter that password, "
        "4) run the deploy again"
        + (
            " (or use nvidia_driver.source distro: Ubuntu's precompiled modules are signed)"
            if facts.distribution == "ubuntu"
            else ""
        )
    )
