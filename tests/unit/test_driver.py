"""The NVIDIA driver decisions (aicluster/driver.py) for each source, OS and GPU generation.

GPUs come from the spec's model names and, where a case needs the node's own view, from REAL PCI
outputs (aicluster/captures, tests/fixtures/nvidia) parsed by the NvidiaPciDevices parser.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from aicluster import driver
from aicluster.driver import DriverError, Generation, HostFacts
from aicluster.facts.nvidia import parse_pci_devices
from aicluster.spec import ClusterSpec, Node

ROOT = Path(__file__).parents[2]
PASCAL, RTX3090, H100, B200 = (
    "Tesla P100-PCIE-16GB",
    "NVIDIA GeForce RTX 3090",
    "NVIDIA H100 80GB HBM3",
    "NVIDIA B200",
)
UBUNTU22 = HostFacts("ubuntu", "22.04", "x86_64", "5.15.0-91-generic")
UBUNTU24 = HostFacts("ubuntu", "24.04", "x86_64", "6.8.0-45-generic")
DEBIAN12 = HostFacts("debian", "12", "x86_64", "6.1.0-18-amd64")


def pci(path: Path) -> dict[str, Any]:
    return parse_pci_devices(path.read_text())


def with_pci(facts: HostFacts, path: Path) -> HostFacts:
    found = pci(path)
    ids = tuple(d["device_id"] for d in found["gpus"])
    return replace(facts, pci_gpu_ids=ids, nvswitches=len(found["nvswitches"]))


H100_PCI = ROOT / "aicluster/captures/h100/pci.txt"
A100_NVSWITCH_LSPCI = ROOT / "tests/fixtures/nvidia/lspci-nn-8x-a100-sxm-6-nvswitch.txt"
GB200_LSPCI = ROOT / "tests/fixtures/nvidia/lspci-gb200-no-nn.txt"


def cluster(
    model: str, branch: str, inventory: str = "h100_workstation", **settings: Any
) -> tuple[ClusterSpec, Node]:
    data = yaml.safe_load((ROOT / "inventories" / f"{inventory}.yaml").read_text())
    for node in data["nodes"]:
        node["gpus"][0]["model"] = model
    data["serving"]["versions"]["nvidia_driver_branch"] = branch
    data["nvidia_driver"] = settings
    spec = ClusterSpec.model_validate(data)
    return spec, spec.nodes[0]


def plan(model: str, branch: str, facts: HostFacts, **settings: Any) -> driver.DriverPlan:
    spec, node = cluster(model, branch, **settings)
    return driver.plan_driver(spec, node, facts)


def refusal(model: str, branch: str, facts: HostFacts, **settings: Any) -> str:
    with pytest.raises(DriverError) as error:
        plan(model, branch, facts, **settings)
    return str(error.value)


@pytest.mark.parametrize(
    ("model", "generation", "flavour"),
    [(PASCAL, Generation.PASCAL, "proprietary"), (RTX3090, Generation.AMPERE, "open"),
     (H100, Generation.HOPPER, "open"), (B200, Generation.BLACKWELL, "open")],
)  # fmt: skip
@pytest.mark.parametrize(
    "facts", [UBUNTU22, UBUNTU24, DEBIAN12], ids=["ubuntu22", "ubuntu24", "debian12"]
)
def test_cuda_repo_580_on_every_os_and_generation(
    model: str, generation: Generation, flavour: str, facts: HostFacts
) -> None:
    result = plan(model, "580", facts)
    assert (result.generation, result.flavour, result.source) == (generation, flavour, "cuda-repo")
    distro = {"22.04": "ubuntu2204", "24.04": "ubuntu2404", "12": "debian12"}[facts.version]
    assert (
        result.keyring_url
        == f"https://developer.download.nvidia.com/compute/cuda/repos/{distro}/x86_64/cuda-keyring_1.1-1_all.deb"
    )
    assert result.headers == (f"linux-headers-{facts.kernel_release}",)
    assert result.dkms and result.fabricmanager is None and not result.peermem
    open_ = flavour == "open"
    if facts.distribution == "debian":
        assert result.pinning == ("nvidia-driver-pinning-580",)
        assert result.packages == ("nvidia-open" if open_ else "cuda-drivers",)
    else:
        # Before 590 the branch is in the Ubuntu package names; no pinning package needed.
        assert result.pinning == ()
        assert result.packages == ("nvidia-open-580" if open_ else "cuda-drivers-580",)
        assert "libnvidia-compute-580" in result.hold
    assert set(result.packages) <= set(result.hold)


def test_cuda_repo_590_pins_the_branch_and_uses_unversioned_names() -> None:
    result = plan(RTX3090, "590", UBUNTU24)
    assert result.pinning == ("nvidia-driver-pinning-590",)
    assert result.packages == ("nvidia-open",)
    assert result.hold == (
        "nvidia-driver-pinning-590",
        "nvidia-open",
        "nvidia-dkms-open",
        "libnvidia-compute",
    )
    assert plan(PASCAL, "580", UBUNTU24, kernel_modules="proprietary").hold == (
        "cuda-drivers-580", "nvidia-dkms-580", "libnvidia-compute-580")  # fmt: skip


@pytest.mark.parametrize("facts", [UBUNTU22, UBUNTU24], ids=["ubuntu22", "ubuntu24"])
def test_ubuntu_distro_uses_signed_precompiled_modules(facts: HostFacts) -> None:
    result = plan(H100, "570-open", facts, source="distro")
    assert result.packages == (
        f"linux-modules-nvidia-570-server-open-{facts.kernel_release}",
        "linux-modules-nvidia-570-server-open-generic",
        "nvidia-headless-no-dkms-570-server-open",
        "nvidia-utils-570-server",
    )
    assert (result.headers, result.keyring_url, result.dkms) == ((), None, False)
    assert plan(PASCAL, "570", facts, source="distro").packages[0].startswith(
        "linux-modules-nvidia-570-server-5."
    ) is (facts is UBUNTU22)


def test_debian12_distro_is_branch_535_built_by_dkms() -> None:
    result = plan(RTX3090, "535", DEBIAN12, source="distro")
    assert result.packages == ("nvidia-open-kernel-dkms", "nvidia-driver")
    assert result.headers == ("linux-headers-6.1.0-18-amd64",) and result.dkms
    assert plan(PASCAL, "535", DEBIAN12, source="distro").packages[0] == "nvidia-kernel-dkms"
    assert "Debian 12 packages branch 535 only, not 570" in refusal(
        RTX3090, "570", DEBIAN12, source="distro"
    )
    # Blackwell needs 570 or later, which Debian 12 does not package (seen here from the PCI bus).
    assert "Blackwell GPUs need branch 570 or later, not 535" in refusal(
        "NVIDIA Mystery GPU", "535", with_pci(DEBIAN12, GB200_LSPCI), source="distro"
    )


def test_generation_from_real_pci_ids() -> None:
    assert {driver.generation_of_pci_device(d["device_id"]) for d in pci(H100_PCI)["gpus"]} == {
        Generation.HOPPER
    }
    h200 = pci(ROOT / "aicluster/captures/h200/pci.txt")["gpus"]
    assert driver.generation_of_pci_device(h200[0]["device_id"]) is Generation.HOPPER
    assert {
        driver.generation_of_pci_device(d["device_id"]) for d in pci(A100_NVSWITCH_LSPCI)["gpus"]
    } == {Generation.AMPERE}
    assert {driver.generation_of_pci_device(d["device_id"]) for d in pci(GB200_LSPCI)["gpus"]} == {
        Generation.BLACKWELL
    }
    assert driver.generation_of_compute_capability("9.0") is Generation.HOPPER
    assert driver.generation_of_compute_capability("8.6") is Generation.AMPERE


def test_nvswitch_present_adds_fabric_manager_of_the_same_branch() -> None:
    facts = with_pci(UBUNTU22, A100_NVSWITCH_LSPCI)
    assert facts.nvswitches == 6
    result = plan("NVIDIA A100-SXM4-80GB", "570-open", facts)
    assert (
        result.fabricmanager == "nvidia-fabricmanager-570"
        and "nvidia-fabricmanager-570" in result.hold
    )
    assert plan("NVIDIA A100-SXM4-80GB", "590", facts).fabricmanager == "nvidia-fabricmanager"
    assert plan(H100, "570-open", with_pci(UBUNTU22, H100_PCI)).fabricmanager is None
    message = refusal(
        "NVIDIA A100-SXM4-80GB", "535", replace(DEBIAN12, nvswitches=6), source="distro"
    )
    assert "6 NVSwitch devices need NVIDIA Fabric Manager" in message


def test_rdma_fabric_loads_peermem() -> None:
    spec, node = cluster(H100, "570-open", inventory="multinode_ib")
    assert driver.plan_driver(spec, node, UBUNTU22).peermem
    assert driver.peermem_modules().splitlines()[-1] == "nvidia-peermem"
    assert not plan(H100, "570-open", UBUNTU22).peermem


def test_secure_boot_stops_dkms_until_the_key_is_enrolled() -> None:
    on = replace(UBUNTU22, secure_boot=True)
    message = refusal(H100, "570-open", on)
    assert message.startswith("nodes.h100: Secure Boot is on")
    assert "mokutil --import /var/lib/shim-signed/mok/MOK.der" in message
    assert "mokutil --import /var/lib/dkms/mok.pub" in refusal(
        RTX3090, "535", replace(DEBIAN12, secure_boot=True), source="distro"
    )
    assert plan(
        H100, "570-open", replace(on, enrolled_keys=frozenset({driver.MOK_KEYS["ubuntu"]}))
    ).dkms
    # Canonical signs the precompiled modules: nothing to enrol.
    assert not plan(H100, "570-open", on, source="distro").dkms
    assert plan(H100, "570-open", replace(UBUNTU22, secure_boot=False)).dkms


def test_refused_flavours_name_the_node_and_field() -> None:
    # A model the spec cannot place: the node's PCI ids decide, and refuse the forced flavour.
    gb200 = with_pci(UBUNTU24, GB200_LSPCI)
    assert refusal("NVIDIA Mystery GPU", "580", gb200, kernel_modules="proprietary") == (
        "nodes.h100.gpus: Blackwell GPUs run the open kernel modules only: set nvidia_driver.kernel_modules to auto or open")  # fmt: skip
    assert driver.flavour_problem(Generation.PASCAL, "590", "auto") == (
        "Pascal GPUs are supported up to branch 580, not 590")  # fmt: skip
    assert "need the proprietary kernel modules" in str(
        driver.flavour_problem(Generation.VOLTA, "570-open", "auto")
    )
    assert "not supported by any current driver branch" in str(
        driver.flavour_problem(Generation.KEPLER_OR_OLDER, "470", "auto")
    )
    # The spec says H100, the node has a GB200 board: a swap is reported, not installed over.
    message = refusal(H100, "580", with_pci(UBUNTU24, GB200_LSPCI))
    assert message.startswith(
        "nodes.h100.gpus: the spec lists Hopper GPUs but the node has Blackwell"
    )
    # An unknown model name is taken from the node's PCI ids.
    assert (
        plan("NVIDIA Mystery GPU", "580", with_pci(UBUNTU24, H100_PCI)).generation
        is Generation.HOPPER
    )
    assert "cannot tell the generation of NVIDIA Mystery GPU" in refusal(
        "NVIDIA Mystery GPU", "580", UBUNTU24
    )
    assert "not ubuntu 20.04" in refusal(H100, "580", replace(UBUNTU22, version="20.04"))
    assert "not an Ubuntu archive kernel" in refusal(
        H100, "580", replace(UBUNTU22, kernel_release="6.18.44-custom"), source="distro"
    )


def test_preinstalled_verifies_the_loaded_branch() -> None:
    loaded = replace(UBUNTU22, loaded_driver="580.159.04", loaded_open=True)
    result = plan(H100, "580-open", loaded, source="preinstalled")
    assert (result.install, result.packages, result.reboot_reason) == (False, (), None)
    message = refusal(H100, "570-open", loaded, source="preinstalled")
    assert (
        message
        == "nodes.h100: nvidia_driver.source is preinstalled but the loaded kernel module is 580.159.04, not branch 570"
    )
    assert "no NVIDIA kernel module is loaded" in refusal(
        H100, "580", UBUNTU22, source="preinstalled"
    )


def test_reboot_reason_until_the_planned_module_is_loaded() -> None:
    assert plan(H100, "580", UBUNTU22).reboot_reason == "no NVIDIA kernel module is loaded"
    proprietary = replace(UBUNTU22, loaded_driver="580.159.04", loaded_open=False)
    assert (
        plan(H100, "580", proprietary).reboot_reason
        == "the loaded kernel module is proprietary, not open"
    )
    assert plan(H100, "580", replace(proprietary, loaded_open=True)).reboot_reason is None


def test_nouveau_blacklist() -> None:
    assert driver.nouveau_blacklist().splitlines()[1:] == [
        "blacklist nouveau",
        "options nouveau modeset=0",
    ]


def test_os_from_pyinfra_linux_distribution_fact() -> None:
    fact = {
        "name": "Ubuntu",
        "major": 22,
        "minor": 4,
        "release_meta": {"ID": "ubuntu", "VERSION_ID": "22.04"},
    }
    assert driver.os_of(fact) == ("ubuntu", "22.04")
