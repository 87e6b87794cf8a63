"""GPU checks: the driver answers, the GPUs are the spec's, healthy, on full links.

Thresholds follow the field's node health checks (Azure HPC health checks, LBNL NHC, DCGM level 1):
any pending retirement/remap or volatile uncorrectable ECC error fails; idle PCIe generation
drops are power saving, not faults (width is what a bad riser or slot changes).
"""

from __future__ import annotations

from typing import Any

import pytest
import testinfra.host

from aicluster.checks import fail, warn
from aicluster.checks.context import Target, gpu_count, run
from aicluster.facts import ParseError
from aicluster.facts.nvidia import (
    PCI_SYSFS_COMMAND,
    parse_nvidia_driver_version,
    parse_nvidia_smi_query,
    parse_nvidia_topo,
    parse_nvlink_status,
    parse_pci_devices,
    parse_xid_events,
)
from aicluster.spec import RDMA_FABRICS, ClusterSpec, Node

DRIVER_FIX = "see `dmesg | grep -i nvrm`; (re)install the driver: roles/nvidia_driver"


def _needs_gpus(node: Node) -> None:
    if not node.gpus:
        pytest.skip(f"{node.name} has no GPUs in the spec")


def _parsed(parser: Any, text: str, what: str) -> dict[str, Any]:
    try:
        result: dict[str, Any] = parser(text)
    except ParseError as error:
        fail(f"{what} printed something unexpected: {error}")
    return result


@pytest.fixture(scope="module")
def smi_run(host: testinfra.host.Host) -> Any:
    """`nvidia-smi -q`, run once per host for every GPU check."""
    return host.run("nvidia-smi -q")


@pytest.fixture(scope="module")
def smi(smi_run: Any) -> dict[str, Any] | None:
    """`nvidia-smi -q`, parsed; None when nvidia-smi does not answer."""
    if smi_run.rc != 0:
        return None
    try:
        parsed: dict[str, Any] = parse_nvidia_smi_query(smi_run.stdout)
    except ParseError:
        return None
    return parsed


def _gpus(smi: dict[str, Any] | None, node: Node) -> list[dict[str, Any]]:
    _needs_gpus(node)
    if smi is None:
        fail("nvidia-smi does not answer", DRIVER_FIX)
    gpus: list[dict[str, Any]] = smi["gpus"]
    return gpus


def _gpu(smi: dict[str, Any] | None, node: Node, gpu: Target) -> dict[str, Any]:
    for found in _gpus(smi, node):
        if found["index"] == gpu.value:
            return found
    # Counted once, by gpu_count_and_model: a missing GPU is not also a failure of each check.
    pytest.skip(f"nvidia-smi lists no GPU {gpu.value}: see gpu_count_and_model")


def test_nvidia_smi_responds(node: Node, smi_run: Any) -> None:
    """The NVIDIA driver is loaded and nvidia-smi answers (nothing else works without it)."""
    _needs_gpus(node)
    if smi_run.rc != 0:
        lines = (smi_run.stdout + smi_run.stderr).strip().splitlines()
        fail(f"nvidia-smi: exit {smi_run.rc}: {lines[-1] if lines else 'no output'}", DRIVER_FIX)


def test_gpu_count_and_model(node: Node, smi: dict[str, Any] | None) -> None:
    """The node has exactly the GPUs the spec lists, model by model, in index order."""
    found = [gpu["name"] for gpu in _gpus(smi, node)]
    expected = node.device_models()
    if [name.casefold() for name in found] != [name.casefold() for name in expected]:
        fail(
            f"spec: {_summary(expected)}; nvidia-smi: {_summary(found) or 'no GPU'}",
            "reseat or replace the missing/other GPU, or change the spec (and the layout) to the "
            "hardware: `aicluster plan` says how it splits now",
        )


def _summary(models: list[str]) -> str:
    counts: dict[str, int] = {}
    for model in models:
        counts[model] = counts.get(model, 0) + 1
    return ", ".join(f"{count} x {model}" for model, count in counts.items())


def test_driver_branch_as_pinned(host: testinfra.host.Host, node: Node, spec: ClusterSpec) -> None:
    """The loaded kernel module is the pinned branch and flavour (open or proprietary)."""
    _needs_gpus(node)
    pinned = spec.serving.versions.nvidia_driver_branch
    if pinned is None:
        pytest.skip("serving.versions.nvidia_driver_branch is not pinned")
    text = run(
        host, "cat /proc/driver/nvidia/version", "no NVIDIA kernel module loaded", DRIVER_FIX
    )
    loaded = _parsed(parse_nvidia_driver_version, text, "/proc/driver/nvidia/version")
    branch, _, flavour = pinned.partition("-")
    version = str(loaded["version"])
    problems = []
    if version.split(".")[0] != branch:
        problems.append(f"driver {version} is not branch {branch}")
    if (flavour == "open") != loaded["open_kernel_module"]:
        kind = "open" if loaded["open_kernel_module"] else "proprietary"
        problems.append(f"the {kind} kernel module is loaded, the pin is {pinned!r}")
    if problems:
        fail("; ".join(problems), "converge roles/nvidia_driver and reboot the node")


def test_persistence_mode_on(node: Node, smi: dict[str, Any] | None, gpu: Target) -> None:
    """Persistence mode is on, so the driver stays initialised between processes."""
    if _gpu(smi, node, gpu)["persistence_mode"] is not True:
        fail(
            f"persistence mode is off on GPU {gpu.value}",
            "systemctl enable --now nvidia-persistenced",
        )


def test_ecc_enabled(node: Node, smi: dict[str, Any] | None, gpu: Target) -> None:
    """ECC is on wherever the GPU has it (consumer cards have none: skipped)."""
    found = _gpu(smi, node, gpu)
    if found["ecc_enabled"] is None:
        pytest.skip(f"{found['name']} has no ECC")
    if not found["ecc_enabled"]:
        fail(f"ECC is off on GPU {gpu.value}", f"nvidia-smi -i {gpu.value} -e 1, then reboot")


def _counters(found: dict[str, Any], prefix: str) -> dict[str, int]:
    counts = {}
    for key, value in found.get("fields", {}).items():
        if key.startswith(prefix) and "uncorrectable" in key and value not in (None, "N/A"):
            try:
                counts[key.removeprefix(prefix)] = int(value)
            except ValueError:
                continue
    return counts


def test_no_uncorrected_ecc_errors(node: Node, smi: dict[str, Any] | None, gpu: Target) -> None:
    """No uncorrectable ECC error since the driver loaded (volatile counters)."""
    found = _gpu(smi, node, gpu)
    if found["ecc_enabled"] is None:
        pytest.skip(f"{found['name']} has no ECC")
    errors = {k: v for k, v in _counters(found, "ecc errors / volatile / ").items() if v}
    if errors:
        listed = ", ".join(f"{k} {v}" for k, v in errors.items())
        fail(
            f"GPU {gpu.value}: {listed}",
            "drain the node, reset the GPU (nvidia-smi -r) or reboot; repeated errors: RMA",
        )


PENDING = {
    "retired pages / pending page blacklist": "a page retirement is pending",
    "retired pages / pending page retirement": "a page retirement is pending",
    "remapped rows / pending": "a row remapping is pending",
    "remapped rows / remapping failure occurred": "a row remapping FAILED",
}


def test_no_pending_retired_pages_or_remapped_rows(
    node: Node, smi: dict[str, Any] | None, gpu: Target
) -> None:
    """No memory page retirement or row remapping waits for a GPU reset, and none failed."""
    fields = _gpu(smi, node, gpu).get("fields", {})
    pending = [why for key, why in PENDING.items() if str(fields.get(key, "")).lower() == "yes"]
    if pending:
        fail(
            f"GPU {gpu.value}: {'; '.join(pending)}",
            "drain the node and reset the GPU (nvidia-smi -r -i N) or reboot; a remapping "
            "failure means RMA",
        )


def test_pcie_link_at_full_width(node: Node, smi: dict[str, Any] | None, gpu: Target) -> None:
    """The GPU's PCIe link runs at its full width (a loose riser or a wrong slot halves it)."""
    found = _gpu(smi, node, gpu)
    current, maximum = found["pcie_width_current"], found["pcie_width_max"]
    if current is None or maximum is None:
        pytest.skip("nvidia-smi does not report the PCIe link width")
    if current < maximum:
        fail(
            f"GPU {gpu.value} ({found['pci_address']}) runs at x{current} of x{maximum}",
            "reseat the GPU/riser, or move it to a full x16 slot (check the board manual)",
        )


@pytest.fixture(scope="module")
def nvlink(host: testinfra.host.Host) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(`nvidia-smi topo -m`, `nvidia-smi nvlink -s`), parsed; None when they do not answer."""
    topo = host.run("nvidia-smi topo -m")
    links = host.run("nvidia-smi nvlink -s")
    if topo.rc != 0 or links.rc != 0:
        return None
    return (
        _parsed(parse_nvidia_topo, topo.stdout, "nvidia-smi topo -m"),
        _parsed(parse_nvlink_status, links.stdout, "nvidia-smi nvlink -s"),
    )


def test_nvlink_links_active(node: Node, gpu: Target, nvlink: Any) -> None:
    """Every NVLink of a GPU that should have NVLink is up (an inactive link halves bandwidth or
    sends tensor-parallel traffic over PCIe)."""
    _needs_gpus(node)
    if nvlink is None:
        fail("nvidia-smi topo -m / nvlink -s do not answer", DRIVER_FIX)
    topo, status = nvlink
    name = f"GPU{gpu.value}"
    peers = topo["links"].get(name, {})
    by_topology = any(cell.startswith("NV") for cell in peers.values())
    expected = by_topology or (node.accelerator_link == "nvlink" and gpu_count(node) > 1)
    if not expected:
        pytest.skip(f"GPU {gpu.value} has no NVLink peer (topology, spec)")
    entry = next((g for g in status["gpus"] if g["index"] == gpu.value), None)
    if entry is None or not entry["links"]:
        why = entry["unavailable"] if entry else "nvlink -s lists no links"
        fail(f"GPU {gpu.value}: no active NVLink ({why})", _NVLINK_FIX)
    inactive = [link["link"] for link in entry["links"] if not link["active"]]
    if inactive:
        fail(f"GPU {gpu.value}: links {inactive} inactive", _NVLINK_FIX)


_NVLINK_FIX = (
    "reseat the NVLink bridge (consumer cards) or check the fabric manager (NVSwitch); "
    "`nvidia-smi nvlink -e` shows error counters"
)


def test_no_fatal_xid_since_boot(host: testinfra.host.Host, node: Node) -> None:
    """No Xid in the kernel log since boot says the GPU needs a reset or is failing."""
    _needs_gpus(node)
    result = host.run("journalctl -k -b -o short-monotonic --no-pager -g NVRM 2>/dev/null || dmesg")
    events = _parsed(parse_xid_events, result.stdout, "the kernel log")["events"]
    fatal = [e for e in events if e["fatal"]]
    if fatal:
        listed = "; ".join(
            f"Xid {e['xid']} on {e['device']}: {e['detail'][:80]}" for e in fatal[:3]
        )
        fail(
            f"{len(fatal)} fatal Xid since boot: {listed}",
            "drain the node; reset the GPU or reboot; look the Xid up in NVIDIA's Xid catalogue",
        )
    if events:
        warn(
            f"{len(events)} non-fatal Xid since boot (first: Xid {events[0]['xid']})",
            "usually an application fault; watch for repeats",
        )


def test_fabric_manager_iff_nvswitch(host: testinfra.host.Host, node: Node) -> None:
    """With NVSwitches, nvidia-fabricmanager runs at the driver's version (without it CUDA fails
    to initialise on HGX boards); without NVSwitches it is not needed."""
    _needs_gpus(node)
    pci = _parsed(parse_pci_devices, host.run(PCI_SYSFS_COMMAND).stdout, "the PCI scan")
    if not pci["nvswitches"]:
        pytest.skip("no NVSwitch on the PCI bus")
    service = host.service("nvidia-fabricmanager")
    if not service.is_running:
        fail(
            f"{len(pci['nvswitches'])} NVSwitches, but nvidia-fabricmanager is not running",
            "install nvidia-fabricmanager at the driver's exact version; systemctl enable --now "
            "nvidia-fabricmanager (roles/nvidia_driver)",
        )
    driver = host.run("cat /proc/driver/nvidia/version").stdout
    loaded = str(
        _parsed(parse_nvidia_driver_version, driver, "/proc/driver/nvidia/version")["version"]
    )
    manager = host.run("nv-fabricmanager --version").stdout
    if loaded not in manager:
        fail(
            f"nvidia-fabricmanager is not at the driver's version {loaded}: {manager.strip()[:80]}",
            f"install nvidia-fabricmanager {loaded} and restart it",
        )


def test_gpudirect_rdma_available(host: testinfra.host.Host, node: Node, spec: ClusterSpec) -> None:
    """With an RDMA fabric, NCCL can move GPU memory straight to the NIC: nvidia_peermem is
    loaded, or the open kernel module offers DMA-BUF (kernel 5.12 and newer)."""
    _needs_gpus(node)
    if spec.cluster.fabric not in RDMA_FABRICS:
        pytest.skip(f"the fabric is {spec.cluster.fabric}: no RDMA")
    if host.run("test -d /sys/module/nvidia_peermem").rc == 0:
        return
    driver = host.run("cat /proc/driver/nvidia/version")
    kernel = host.run("uname -r").stdout.strip()
    major_minor = tuple(int(part) for part in kernel.split("-")[0].split(".")[:2])
    is_open = driver.rc == 0 and "Open Kernel Module" in driver.stdout
    if is_open and major_minor >= (5, 12):
        return
    fail(
        f"neither nvidia_peermem nor DMA-BUF (kernel {kernel}, "
        f"{'open' if is_open else 'proprietary'} module): NCCL copies through host memory",
        "modprobe nvidia_peermem (and list it in /etc/modules-load.d), or use the open module",
    )
