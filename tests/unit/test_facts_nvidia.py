"""NVIDIA parsers on real outputs only: our H100/H200 captures and public outputs whose provenance is
in tests/fixtures/nvidia/PROVENANCE.md. Bad input must give a one-line ParseError, nothing else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pyinfra.api.exceptions import FactProcessError

from aicluster.facts import ParseError
from aicluster.facts.nvidia import (
    GPU_KEYS,
    PARSE_KINDS,
    PCI_SYSFS_COMMAND,
    QUERY_FIELDS,
    NvidiaDriverVersion,
    NvidiaPciDevices,
    NvidiaSmiQuery,
    NvidiaTopology,
    NvlinkStatus,
    parse_nvidia_driver_version,
    parse_nvidia_smi_query,
    parse_nvidia_topo,
    parse_nvlink_status,
    parse_pci_devices,
    parse_xid_events,
)

ROOT = Path(__file__).parents[2]
CAPTURES = ROOT / "aicluster" / "captures"
FIXTURES = ROOT / "tests" / "fixtures" / "nvidia"


def capture(profile: str, name: str) -> str:
    return (CAPTURES / profile / name).read_text()


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def body(text: str) -> str:
    """The output part of a capture file (what a user would paste without the wrapper)."""
    lines = text.rstrip("\n").split("\n")
    return "\n".join(lines[1:-1]) + "\n"


def without_fields(gpu: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in gpu.items() if key != "fields"}


def one_line_error(parser: Any, text: str, match: str) -> str:
    with pytest.raises(ParseError, match=match) as error:
        parser(text)
    message = str(error.value)
    assert len(message.splitlines()) == 1
    return message


# --- nvidia-smi --query-gpu on our hosts -------------------------------------------------------------

H200 = {
    "index": 0,
    "name": "NVIDIA H200",
    "uuid": "GPU-d74fea8f-5b34-c58a-50d1-55bcc66f8cb3",
    "bus_id": "00000000:00:06.0",
    "pci_address": "0000:00:06.0",
    "driver_version": "580.159.04",
    "vbios_version": "96.00.A5.00.1A",
    "serial": None,
    "minor_number": None,
    "memory_total_mib": 143771,
    "persistence_mode": True,
    "ecc_enabled": True,
    "mig_enabled": False,
    "pcie_gen_current": 5,
    "pcie_gen_max": 5,
    "pcie_width_current": 16,
    "pcie_width_max": 16,
    "compute_capability": "9.0",
    "power_limit_w": 700.0,
}


def test_h200_query_csv() -> None:
    parsed = parse_nvidia_smi_query(capture("h200", "query-gpu-csv.txt"))
    assert (parsed["format"], parsed["driver_version"], parsed["cuda_version"]) == (
        "csv",
        "580.159.04",
        None,
    )
    [gpu] = parsed["gpus"]
    assert without_fields(gpu) == H200
    # Every queried field is kept as printed, "[N/A]" as None.
    assert gpu["fields"]["retired_pages.pending"] is None
    assert gpu["fields"]["remapped_rows.pending"] == "No"
    assert gpu["fields"]["memory.used"] == "0 MiB"
    assert gpu["fields"]["clocks_event_reasons.active"] == "0x0000000000000001"


def test_h100_query_csv() -> None:
    [gpu] = parse_nvidia_smi_query(capture("h100", "query-gpu-csv.txt"))["gpus"]
    assert (gpu["name"], gpu["memory_total_mib"], gpu["uuid"]) == (
        "NVIDIA H100 80GB HBM3",
        81559,
        "GPU-486d48dd-01f1-18d4-9ef3-dc6e064c0f74",
    )
    assert (gpu["persistence_mode"], gpu["ecc_enabled"], gpu["pcie_gen_max"]) == (True, True, 5)


@pytest.mark.parametrize("profile", ["h100", "h200"])
def test_noheader_nounits_csv_takes_its_fields_from_the_capture_command(profile: str) -> None:
    with_units = parse_nvidia_smi_query(capture(profile, "query-gpu-csv.txt"))["gpus"][0]
    text = capture(profile, "query-gpu-csv-nounits.txt")
    [gpu] = parse_nvidia_smi_query(text)["gpus"]
    asked = text.split("--query-gpu=")[1].split()[0].split(",")
    assert list(gpu["fields"]) == asked
    for key in ("index", "name", "uuid", "bus_id", "driver_version", "memory_total_mib"):
        assert gpu[key] == with_units[key]
    assert (gpu["persistence_mode"], gpu["ecc_enabled"], gpu["pcie_width_max"]) == (True, True, 16)
    # Raw output without a header cannot be read without the field list...
    one_line_error(parse_nvidia_smi_query, body(text), "CSV without a header")
    # ...which a caller that knows its query passes in.
    assert parse_nvidia_smi_query(body(text), fields=asked)["gpus"] == [gpu]


# --- nvidia-smi -q on our hosts ----------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["h100", "h200"])
def test_query_q_agrees_with_the_query_csv(profile: str) -> None:
    q = parse_nvidia_smi_query(capture(profile, "nvidia-smi-q.txt"))
    csv = parse_nvidia_smi_query(capture(profile, "query-gpu-csv.txt"))
    assert (q["format"], q["driver_version"], q["cuda_version"]) == ("q", "580.159.04", "13.0")
    [from_q], [from_csv] = q["gpus"], csv["gpus"]
    assert from_q["compute_capability"] is None  # -q does not print it
    assert from_q["minor_number"] == 0
    for key in set(GPU_KEYS) - {"compute_capability", "minor_number", "serial"}:
        assert from_q[key] == from_csv[key], key
    assert from_q["fields"]["pci / gpu link info / link width / max"] == "16x"
    assert from_q["fields"]["fabric / state"] is None


def test_h200_query_q_values() -> None:
    [gpu] = parse_nvidia_smi_query(capture("h200", "nvidia-smi-q.txt"))["gpus"]
    assert without_fields(gpu) == {
        **H200,
        "serial": "1653724060764",
        "minor_number": 0,
        "compute_capability": None,
    }


def test_a_display_subset_or_a_refused_display_is_not_the_full_query() -> None:
    one_line_error(parse_nvidia_smi_query, capture("h100", "q-ecc.txt"), "no 'product name'")
    one_line_error(parse_nvidia_smi_query, capture("h100", "q-fabric.txt"), "Failed to parse")


# --- nvidia-smi -q from public hosts -----------------------------------------------------------------


def test_eight_h100_sxm_query_q() -> None:
    parsed = parse_nvidia_smi_query(fixture("nvidia-smi-q-8x-h100-sxm.txt"))
    assert (parsed["driver_version"], parsed["cuda_version"]) == ("565.57.01", "12.7")
    gpus = parsed["gpus"]
    assert [gpu["index"] for gpu in gpus] == list(range(8))
    assert [gpu["bus_id"][9:11] for gpu in gpus] == ["18", "2A", "3A", "5D", "9A", "AB", "BA", "DB"]
    assert {gpu["name"] for gpu in gpus} == {"NVIDIA H100 80GB HBM3"}
    assert all(gpu["ecc_enabled"] and gpu["persistence_mode"] for gpu in gpus)
    assert {(g["memory_total_mib"], g["pcie_gen_max"], g["pcie_width_max"]) for g in gpus} == {
        (81559, 5, 16)
    }
    assert without_fields(gpus[7]) == {
        "index": 7,
        "name": "NVIDIA H100 80GB HBM3",
        "uuid": "GPU-33135771-a848-ece1-b61e-489e221d663c",
        "bus_id": "00000000:DB:00.0",
        "pci_address": "0000:db:00.0",
        "driver_version": "565.57.01",
        "vbios_version": "96.00.74.00.01",
        "serial": "1654223055370",
        "minor_number": 7,
        "memory_total_mib": 81559,
        "persistence_mode": True,
        "ecc_enabled": True,
        "mig_enabled": False,
        "pcie_gen_current": 5,
        "pcie_gen_max": 5,
        "pcie_width_current": 16,
        "pcie_width_max": 16,
        "compute_capability": None,
        "power_limit_w": 700.0,
    }


def test_consumer_cards_have_no_ecc_and_index_is_not_the_minor_number() -> None:
    gpus = parse_nvidia_smi_query(fixture("nvidia-smi-q-2x-rtx3090.txt"))["gpus"]
    # A container given two of the host's GPUs: /dev/nvidia1 and /dev/nvidia6 are indices 0 and 1.
    assert [(g["index"], g["minor_number"], g["bus_id"]) for g in gpus] == [
        (0, 1, "00000000:41:00.0"),
        (1, 6, "00000000:81:00.0"),
    ]
    for gpu in gpus:
        assert (gpu["ecc_enabled"], gpu["mig_enabled"], gpu["serial"]) == (None, None, None)
        assert (gpu["pcie_gen_current"], gpu["pcie_gen_max"], gpu["pcie_width_max"]) == (1, 4, 16)
        assert (gpu["memory_total_mib"], gpu["power_limit_w"]) == (24576, 350.0)
    rtx4080 = parse_nvidia_smi_query(fixture("nvidia-smi-q-rtx4080-super.txt"))
    [gpu] = rtx4080["gpus"]
    assert (rtx4080["driver_version"], rtx4080["cuda_version"]) == ("595.71.05", "13.2")
    assert (gpu["name"], gpu["memory_total_mib"], gpu["persistence_mode"], gpu["ecc_enabled"]) == (
        "NVIDIA GeForce RTX 4080 SUPER",
        16376,
        False,
        None,
    )


def test_driver_610_renames_driver_and_cuda_versions_and_the_power_limit() -> None:
    parsed = parse_nvidia_smi_query(fixture("nvidia-smi-q-windows-rtx2080-super.txt"))
    assert (parsed["driver_version"], parsed["cuda_version"]) == ("610.62", "13.3")
    [gpu] = parsed["gpus"]
    # Windows: no persistence mode, no minor number; the index comes from the order.
    assert (gpu["index"], gpu["minor_number"], gpu["persistence_mode"]) == (0, None, None)
    assert (gpu["driver_version"], gpu["power_limit_w"], gpu["memory_total_mib"]) == (
        "610.62",
        250.0,
        8192,
    )
    assert gpu["fields"]["driver model / current"] == "WDDM"


def test_query_csv_with_every_field() -> None:
    [gpu] = parse_nvidia_smi_query(fixture("query-gpu-csv-h100-all-fields.txt"))["gpus"]
    assert len(gpu["fields"]) == 212
    assert (gpu["name"], gpu["compute_capability"], gpu["memory_total_mib"]) == (
        "NVIDIA H100 80GB HBM3",
        "9.0",
        81559,
    )
    assert (gpu["driver_version"], gpu["power_limit_w"], gpu["mig_enabled"]) == (
        "590.48.01",
        700.0,
        False,
    )
    assert gpu["fields"]["display_mode"] is None  # "[Requested functionality has been deprecated]"
    assert gpu["fields"]["pstate"] == "P0"
    assert gpu["fields"]["clocks_event_reasons_counters.sw_power_cap"] == "0 us"


# --- nvidia-smi topo -m ------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["h100", "h200"])
def test_topology_of_our_single_gpu_hosts(profile: str) -> None:
    text = capture(profile, "topo-m.txt")
    assert "\x1b[4m" in text  # the real header is underlined with ANSI escapes
    assert parse_nvidia_topo(text) == {
        "gpus": ["GPU0"],
        "nics": {},
        "links": {"GPU0": {"GPU0": "X"}},
        "cpu_affinity": {"GPU0": "0-15"},
        "numa_affinity": {"GPU0": "0"},
        "gpu_numa_id": {"GPU0": None},
    }


def test_topology_of_an_nvlink_bridged_pair_beside_a_third_gpu() -> None:
    text = fixture("topo-m-3x-rtx-a6000-nvlink-bridge.txt")
    assert parse_nvidia_topo(text) == {
        "gpus": ["GPU0", "GPU1", "GPU2"],
        "nics": {},
        "links": {
            "GPU0": {"GPU0": "X", "GPU1": "NV4", "GPU2": "NODE"},
            "GPU1": {"GPU0": "NV4", "GPU1": "X", "GPU2": "NODE"},
            "GPU2": {"GPU0": "NODE", "GPU1": "NODE", "GPU2": "X"},
        },
        "cpu_affinity": dict.fromkeys(["GPU0", "GPU1", "GPU2"], "0-31,64-95"),
        "numa_affinity": dict.fromkeys(["GPU0", "GPU1", "GPU2"], "0"),
        "gpu_numa_id": {},
    }


def test_topology_of_an_hgx_h100_with_eight_nics_pasted_with_spaces() -> None:
    topo = parse_nvidia_topo(fixture("topo-m-8x-h100-hgx-8nic-spaces.txt"))
    gpus = [f"GPU{i}" for i in range(8)]
    nics = [f"NIC{i}" for i in range(8)]
    assert topo["gpus"] == gpus
    assert topo["nics"] == {f"NIC{i}": f"mlx5_{i}" for i in range(8)}
    for i, gpu in enumerate(gpus):
        assert [topo["links"][gpu][other] for other in gpus] == [
            "X" if j == i else "NV18" for j in range(8)
        ]
        assert topo["links"][gpu][f"NIC{i}"] == "PIX"  # one NIC behind each GPU's PCIe switch
        assert topo["links"][f"NIC{i}"][gpu] == "PIX"
    assert topo["links"]["GPU0"] == {
        **dict.fromkeys(gpus, "NV18"),
        "GPU0": "X",
        "NIC0": "PIX",
        "NIC1": "NODE",
        "NIC2": "NODE",
        "NIC3": "NODE",
        **dict.fromkeys(nics[4:], "SYS"),
    }
    assert topo["links"]["NIC7"]["NIC7"] == "X" and topo["links"]["NIC4"]["NIC5"] == "NODE"
    assert topo["cpu_affinity"] == {
        g: "0-47,96-143" if i < 4 else "48-95,144-191" for i, g in enumerate(gpus)
    }
    assert topo["numa_affinity"] == {g: "0" if i < 4 else "1" for i, g in enumerate(gpus)}
    assert topo["gpu_numa_id"] == dict.fromkeys(gpus)  # N/A


def test_topology_with_nic_legend_pasted_with_spaces() -> None:
    topo = parse_nvidia_topo(fixture("topo-m-4x-rtx6000ada-4nic-spaces.txt"))
    assert topo["nics"] == {"NIC0": "mlx5_0", "NIC1": "mlx5_1", "NIC2": "mlx5_2", "NIC3": "mlx5_3"}
    assert topo["links"]["NIC1"] == {
        "GPU0": "NODE",
        "GPU1": "NODE",
        "GPU2": "SYS",
        "GPU3": "SYS",
        "NIC0": "PIX",
        "NIC1": "X",
        "NIC2": "SYS",
        "NIC3": "SYS",
    }
    assert topo["links"]["GPU2"]["GPU3"] == "NODE"
    assert topo["cpu_affinity"] == {
        "GPU0": "0-31",
        "GPU1": "0-31",
        "GPU2": "32-63",
        "GPU3": "32-63",
    }
    assert topo["numa_affinity"] == {"GPU0": "0", "GPU1": "0", "GPU2": "1", "GPU3": "1"}


def test_old_topology_with_soc_cells_and_a_nic_named_by_its_device() -> None:
    assert parse_nvidia_topo(fixture("topo-m-4x-k40m-soc-mlx4.txt")) == {
        "gpus": ["GPU0", "GPU1", "GPU2", "GPU3"],
        "nics": {"mlx4_0": "mlx4_0"},
        "links": {
            "GPU0": {"GPU0": "X", "GPU1": "PHB", "GPU2": "SOC", "GPU3": "SOC", "mlx4_0": "SOC"},
            "GPU1": {"GPU0": "PHB", "GPU1": "X", "GPU2": "SOC", "GPU3": "SOC", "mlx4_0": "SOC"},
            "GPU2": {"GPU0": "SOC", "GPU1": "SOC", "GPU2": "X", "GPU3": "PHB", "mlx4_0": "PHB"},
            "GPU3": {"GPU0": "SOC", "GPU1": "SOC", "GPU2": "PHB", "GPU3": "X", "mlx4_0": "PHB"},
            "mlx4_0": {"GPU0": "SOC", "GPU1": "SOC", "GPU2": "PHB", "GPU3": "PHB", "mlx4_0": "X"},
        },
        "cpu_affinity": {"GPU0": "0-5", "GPU1": "0-5", "GPU2": "6-11", "GPU3": "6-11"},
        "numa_affinity": {},
        "gpu_numa_id": {},
    }


def test_empty_affinity_cells_stay_empty() -> None:
    topo = parse_nvidia_topo(fixture("topo-m-windows-rtx2080-super-empty-affinity.txt"))
    assert (topo["cpu_affinity"], topo["numa_affinity"], topo["gpu_numa_id"]) == (
        {"GPU0": None},
        {"GPU0": None},
        {"GPU0": None},
    )


@pytest.mark.parametrize(
    "name",
    [
        "topo-m-3x-rtx-a6000-nvlink-bridge.txt",
        "topo-m-windows-rtx2080-super-empty-affinity.txt",
        "topo-m-4x-k40m-soc-mlx4.txt",
    ],
)
def test_tabs_expanded_to_spaces_read_the_same(name: str) -> None:
    # Pasted outputs lose their tabs; empty cells then survive only as extra tab stops.
    text = fixture(name)
    assert "\t" in text
    assert parse_nvidia_topo(text.expandtabs(8)) == parse_nvidia_topo(text)


def test_other_topo_reports_are_not_the_matrix() -> None:
    one_line_error(
        parse_nvidia_topo, capture("h200", "topo-p2p-r.txt"), "not a `nvidia-smi topo -m` header"
    )


# --- nvidia-smi nvlink -s ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["nvlink-s.txt", "nvlink-status.txt"])
@pytest.mark.parametrize("profile", ["h100", "h200"])
def test_a_gpu_without_nvlink_peers_prints_nothing(profile: str, name: str) -> None:
    assert parse_nvlink_status(capture(profile, name)) == {"gpus": []}


def test_nvlink_bridge_pair_and_a_gpu_with_all_links_inactive() -> None:
    gpus = parse_nvlink_status(fixture("nvlink-s-3x-rtx-a6000-one-gpu-inactive.txt"))["gpus"]
    assert [(g["index"], g["name"], g["uuid"][-12:], g["unavailable"]) for g in gpus] == [
        (0, "NVIDIA RTX A6000", "04c38407e133", None),
        (1, "NVIDIA RTX A6000", "d95efd470a2c", None),
        (
            2,
            "NVIDIA RTX A6000",
            "a4c8f3f725b3",
            "NVML: Unable to retrieve NVLink information as all links are inActive",
        ),
    ]
    assert gpus[0]["links"] == [
        {"link": i, "speed_gbps": 14.062, "speed_gbytes_per_s": 14.062, "active": True}
        for i in range(4)
    ]
    assert gpus[2]["links"] == []


def test_hopper_and_ampere_sxm_links() -> None:
    [h100] = parse_nvlink_status(fixture("nvlink-s-h100-sxm-18-links.txt"))["gpus"]
    assert h100["links"] == [
        {"link": i, "speed_gbps": 26.562, "speed_gbytes_per_s": 26.562, "active": True}
        for i in range(18)
    ]
    a100 = parse_nvlink_status(fixture("nvlink-status-8x-a100-sxm.txt"))["gpus"]
    assert [g["index"] for g in a100] == list(range(8))
    assert a100[7]["uuid"].startswith("GPU-")
    assert all(
        g["links"]
        == [
            {"link": i, "speed_gbps": 25.0, "speed_gbytes_per_s": 25.0, "active": True}
            for i in range(12)
        ]
        for g in a100
    )


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        (
            "nvlink-s-rtx2080-super-all-inactive.txt",
            "NVML: Unable to retrieve Nvlink information as all links are inActive",
        ),
        ("nvlink-s-rtx4080-super-no-nvlink.txt", "Device does not have or support Nvlink"),
        ("nvlink-s-h100-mig-mode.txt", "Nvlink queries are not supported for Devices in MIG mode"),
    ],
)
def test_reasons_for_no_links_are_kept(name: str, reason: str) -> None:
    [gpu] = parse_nvlink_status(fixture(name))["gpus"]
    assert (gpu["index"], gpu["links"], gpu["unavailable"]) == (0, [], reason)


# --- /proc/driver/nvidia -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "model", "uuid"),
    [
        ("h100", "NVIDIA H100 80GB HBM3", "GPU-486d48dd-01f1-18d4-9ef3-dc6e064c0f74"),
        ("h200", "NVIDIA H200", "GPU-d74fea8f-5b34-c58a-50d1-55bcc66f8cb3"),
    ],
)
def test_open_kernel_module_and_its_gpu(profile: str, model: str, uuid: str) -> None:
    driver = parse_nvidia_driver_version(capture(profile, "proc-driver.txt"))
    assert {key: value for key, value in driver.items() if key != "gpus"} == {
        "version": "580.159.04",
        "open_kernel_module": True,
        "architecture": "x86_64",
        "build": "Release Build  (nixbld@)",
        "gcc_version": "gcc version 15.3.0 (GCC)",
    }
    [gpu] = driver["gpus"]
    assert (gpu["model"], gpu["gpu_uuid"], gpu["bus_location"], gpu["device_minor"]) == (
        model,
        uuid,
        "0000:00:06.0",
        "0",
    )
    assert (gpu["gpu_firmware"], gpu["gpu_excluded"]) == ("580.159.04", "No")


def test_driver_version_needs_the_nvrm_line() -> None:
    one_line_error(
        parse_nvidia_driver_version, capture("h100", "modinfo.txt"), "no `NVRM version:` line"
    )


# --- PCI ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("profile", "device"), [("h100", "2330"), ("h200", "2335")])
def test_sysfs_dump_sees_the_gpu_without_driver_or_lspci(profile: str, device: str) -> None:
    assert parse_pci_devices(capture(profile, "pci.txt")) == {
        "gpus": [
            {
                "bus_id": "0000:00:06.0",
                "pci_address": "0000:00:06.0",
                "vendor_id": "10de",
                "device_id": device,
                "class": "0302",
                "name": None,
                "revision": None,
                "link_speed_current": "32.0 GT/s PCIe",
                "link_width_current": 16,
                "link_speed_max": "32.0 GT/s PCIe",
                "link_width_max": 16,
                "numa_node": None,  # sysfs says -1
            }
        ],
        "nvswitches": [],
        "other": [],
    }


def test_lspci_nn_of_an_hgx_a100_lists_gpus_and_nvswitches() -> None:
    pci = parse_pci_devices(fixture("lspci-nn-8x-a100-sxm-6-nvswitch.txt"))
    assert [d["bus_id"] for d in pci["gpus"]] == [
        f"{n:04x}:00:00.0" for n in (1, 2, 3, 4, 11, 12, 13, 14)
    ]
    assert {(d["device_id"], d["class"], d["name"], d["revision"]) for d in pci["gpus"]} == {
        ("20b2", "0302", "GA100 [A100 SXM4 80GB]", "a1")
    }
    assert [d["bus_id"] for d in pci["nvswitches"]] == [f"{n:04x}:00:00.0" for n in range(5, 11)]
    assert {(d["device_id"], d["class"]) for d in pci["nvswitches"]} == {("1af1", "0680")}
    assert pci["other"] == []  # Mellanox and Microsoft functions are not NVIDIA's


def test_plain_lspci_of_a_gb200_tray() -> None:
    pci = parse_pci_devices(fixture("lspci-gb200-no-nn.txt"))
    assert [(d["bus_id"], d["device_id"], d["class"]) for d in pci["gpus"]] == [
        (bus, "2941", "0302")
        for bus in ("0008:01:00.0", "0009:01:00.0", "0018:01:00.0", "0019:01:00.0")
    ]
    # Grace's PCIe root ports are NVIDIA PCI bridges, not NVSwitches (those sit outside the tray).
    assert pci["nvswitches"] == []
    assert {(d["class"], d["device_id"]) for d in pci["other"]} == {
        ("0604", "22b1"),
        ("0604", "22b2"),
        ("0604", "22b8"),
    }
    assert len(pci["other"]) == 12


# --- malformed, truncated, foreign -------------------------------------------------------------------


def test_empty_output() -> None:
    one_line_error(parse_nvidia_smi_query, "", "empty output")
    one_line_error(parse_nvidia_topo, "\n\n", "empty output")
    one_line_error(parse_nvidia_driver_version, "", "empty output")
    # Empty is a real answer for these: no NVLink peers, no NVIDIA function on the bus.
    assert parse_nvlink_status("") == {"gpus": []}
    assert parse_pci_devices("") == {"gpus": [], "nvswitches": [], "other": []}


def test_truncated_query_q() -> None:
    text = fixture("nvidia-smi-q-8x-h100-sxm.txt")
    fourth = text.index("GPU 00000000:5D:00.0")
    one_line_error(parse_nvidia_smi_query, text[:fourth], r"`Attached GPUs : 8` but 3 GPU sections")
    last = text.index("GPU 00000000:DB:00.0")
    one_line_error(
        parse_nvidia_smi_query,
        text[: text.index("    FB Memory Usage", last)],
        r"GPU 00000000:DB:00.0: no 'fb memory usage'",
    )
    one_line_error(
        parse_nvidia_smi_query, text[: text.index("Attached GPUs")], "no `Attached GPUs` line"
    )


def test_truncated_query_csv() -> None:
    text = fixture("query-gpu-csv-h100-all-fields.txt")
    one_line_error(
        parse_nvidia_smi_query,
        text[: text.index("\n") + 200],
        r"GPU row 1 has \d+ values for 212 fields",
    )
    one_line_error(parse_nvidia_smi_query, text[: text.index("\n") + 1], "header but no GPU rows")


def test_truncated_topology() -> None:
    text = fixture("topo-m-8x-h100-hgx-8nic-spaces.txt")
    one_line_error(
        parse_nvidia_topo, text[: text.index("\nNIC5") + 1], "no row for 'NIC5, NIC6, NIC7'"
    )
    one_line_error(
        parse_nvidia_topo,
        text[: text.index("\nNIC5") + 30],
        r"row 'NIC5' has 3 cells for 16 columns",
    )


def test_capture_cut_before_its_exit_line() -> None:
    for profile, name, parser in [
        ("h200", "query-gpu-csv.txt", parse_nvidia_smi_query),
        ("h200", "topo-m.txt", parse_nvidia_topo),
        ("h200", "nvlink-s.txt", parse_nvlink_status),
        ("h200", "proc-driver.txt", parse_nvidia_driver_version),
        ("h200", "pci.txt", parse_pci_devices),
    ]:
        text = capture(profile, name)
        one_line_error(parser, text[: text.rindex("[exit")], r"no closing '\[exit N\]' line")


# A kernel log is any text: the Xid reader picks its lines out of whatever it is given.
@pytest.mark.parametrize("kind", sorted(set(PARSE_KINDS) - {"nvidia-xid"}))
def test_foreign_text_is_refused(kind: str) -> None:
    # Real text of another kind: the PROVENANCE notes and a sibling command's output.
    foreign = (CAPTURES / "h200" / "PROVENANCE.md").read_text()
    one_line_error(PARSE_KINDS[kind], foreign, ".")


def test_unknown_link_state_is_refused() -> None:
    text = fixture("nvlink-s-h100-sxm-18-links.txt").replace("26.562 GB/s", "26.562 GT/s", 1)
    one_line_error(parse_nvlink_status, text, "unknown link state '26.562 GT/s'")


# --- the pyinfra facts -------------------------------------------------------------------------------


def test_facts_run_the_commands_that_were_captured() -> None:
    assert capture("h200", "topo-m.txt").startswith(f"$ {NvidiaTopology().command()}\n")
    assert capture("h200", "nvlink-s.txt").startswith(f"$ {NvlinkStatus().command()}\n")
    assert capture("h200", "pci.txt").startswith(f"$ {PCI_SYSFS_COMMAND}; ")
    assert NvidiaPciDevices().command() == PCI_SYSFS_COMMAND
    # The fact's query asks for a subset of the real captured query, in the same CSV format.
    captured = capture("h200", "query-gpu-csv.txt").split("\n")[0]
    assert set(QUERY_FIELDS) <= set(captured.split("--query-gpu=")[1].split()[0].split(","))
    assert NvidiaSmiQuery().command().endswith(" --format=csv")
    for fact in (NvidiaSmiQuery(), NvidiaTopology(), NvlinkStatus()):
        assert fact.requires_command() == "nvidia-smi"
    assert "/proc/driver/nvidia/version" in NvidiaDriverVersion().command()


def test_facts_defaults_when_the_tool_or_driver_is_missing() -> None:
    assert NvidiaSmiQuery.default()["gpus"] == []
    assert NvidiaTopology.default() == {
        "gpus": [],
        "nics": {},
        "links": {},
        "cpu_affinity": {},
        "numa_affinity": {},
        "gpu_numa_id": {},
    }
    assert NvlinkStatus.default() == {"gpus": []}
    assert NvidiaDriverVersion.default() is None
    assert NvidiaPciDevices.default() == {"gpus": [], "nvswitches": [], "other": []}


def test_fact_process_parses_output_lines_and_reports_bad_output_as_a_fact_error() -> None:
    lines = body(capture("h200", "query-gpu-csv.txt")).splitlines()
    assert NvidiaSmiQuery.process(lines)["gpus"][0]["name"] == "NVIDIA H200"
    assert NvidiaTopology.process(body(capture("h200", "topo-m.txt")).splitlines())["gpus"] == [
        "GPU0"
    ]
    assert (
        NvidiaPciDevices.process(body(capture("h200", "pci.txt")).splitlines())["gpus"][0][
            "device_id"
        ]
        == "2335"
    )
    driver = NvidiaDriverVersion.process(body(capture("h200", "proc-driver.txt")).splitlines())
    assert driver is not None and driver["version"] == "580.159.04"
    with pytest.raises(FactProcessError, match="not a `nvidia-smi topo -m` header"):
        NvidiaTopology.process(body(capture("h200", "topo-p2p-r.txt")).splitlines())
    with pytest.raises(FactProcessError, match="neither links nor a reason"):
        NvlinkStatus.process(body(capture("h200", "nvidia-smi-L.txt")).splitlines())


def test_parse_kinds() -> None:
    assert {
        "nvidia-smi-query": parse_nvidia_smi_query,
        "nvidia-topo": parse_nvidia_topo,
        "nvlink-status": parse_nvlink_status,
        "nvidia-driver-version": parse_nvidia_driver_version,
        "nvidia-pci": parse_pci_devices,
        "nvidia-xid": parse_xid_events,
    } == PARSE_KINDS
