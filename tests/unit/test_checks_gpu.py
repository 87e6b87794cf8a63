"""The GPU checks judged on REAL nvidia-smi outputs (fixtures and our own captures).

The check functions take the parsed outputs as arguments, so they run here exactly as they do
against a node, minus the SSH round trip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aicluster.checks import CheckFailed
from aicluster.checks import test_gpu as checks
from aicluster.checks.context import Target
from aicluster.facts.nvidia import parse_nvidia_smi_query, parse_nvidia_topo, parse_nvlink_status
from aicluster.spec import Node

FIXTURES = Path(__file__).parents[1] / "fixtures" / "nvidia"
CAPTURES = Path(__file__).parents[2] / "aicluster" / "captures"


def node(model: str, count: int, link: str = "pcie") -> Node:
    return Node.model_validate(
        {
            "name": "gpu1",
            "role": "head",
            "os": "ubuntu",
            "ssh": {"address": "192.168.1.11"},
            "data_address": "10.0.0.11",
            "gpus": [{"model": model, "count": count, "memory_gib": 24}],
            "accelerator_link": link,
        }
    )


def smi(name: str) -> dict[str, Any]:
    path = FIXTURES / name if (FIXTURES / name).exists() else CAPTURES / name
    parsed: dict[str, Any] = parse_nvidia_smi_query(path.read_text())
    return parsed


def gpu(index: int) -> Target:
    return Target("gpu1", f"gpu{index}", index)


def test_a_gpu_at_half_its_pcie_width_fails_and_its_neighbour_passes() -> None:
    report = smi("nvidia-smi-q-2x-rtx4060ti-reduced-width.txt")
    spec_node = node("NVIDIA GeForce RTX 4060 Ti", 2)
    with pytest.raises(CheckFailed, match=r"GPU 0 \(0000:03:00.0\) runs at x4 of x8"):
        checks.test_pcie_link_at_full_width(spec_node, report, gpu(0))
    checks.test_pcie_link_at_full_width(spec_node, report, gpu(1))


def test_an_idle_gpu_at_a_lower_pcie_generation_is_judged_by_width_only() -> None:
    # The L4 idles at Gen 1 of 4 (power saving) and, separately, runs at x8 of x16.
    report = smi("nvidia-smi-q-l4-reduced-width.txt")
    assert report["gpus"][0]["pcie_gen_current"] < report["gpus"][0]["pcie_gen_max"]
    with pytest.raises(CheckFailed, match="x8 of x16"):
        checks.test_pcie_link_at_full_width(node("NVIDIA L4", 1), report, gpu(0))
    checks.test_ecc_enabled(node("NVIDIA L4", 1), report, gpu(0))


def test_a_pending_row_remap_fails_that_gpu_only() -> None:
    report = smi("nvidia-smi-q-4x-a100-sxm-remapped-rows-pending.txt")
    spec_node = node("NVIDIA A100-SXM4-80GB", 4, "nvlink")
    with pytest.raises(CheckFailed, match="GPU 1: a row remapping is pending"):
        checks.test_no_pending_retired_pages_or_remapped_rows(spec_node, report, gpu(1))
    for index in (0, 2, 3):
        checks.test_no_pending_retired_pages_or_remapped_rows(spec_node, report, gpu(index))
        checks.test_no_uncorrected_ecc_errors(spec_node, report, gpu(index))


def test_our_h100_passes_every_per_gpu_check() -> None:
    report = smi("h100/nvidia-smi-q.txt")
    spec_node = node("NVIDIA H100 80GB HBM3", 1)
    checks.test_gpu_count_and_model(spec_node, report)
    for check in (
        checks.test_persistence_mode_on,
        checks.test_ecc_enabled,
        checks.test_no_uncorrected_ecc_errors,
        checks.test_no_pending_retired_pages_or_remapped_rows,
        checks.test_pcie_link_at_full_width,
    ):
        check(spec_node, report, gpu(0))


def test_a_missing_gpu_and_a_swapped_model_are_named() -> None:
    report = smi("h200/nvidia-smi-q.txt")
    with pytest.raises(CheckFailed, match=r"spec: 2 x NVIDIA H200; nvidia-smi: 1 x NVIDIA H200"):
        checks.test_gpu_count_and_model(node("NVIDIA H200", 2), report)
    with pytest.raises(
        CheckFailed, match=r"spec: 1 x NVIDIA H100 80GB HBM3; nvidia-smi: 1 x NVIDIA H200"
    ):
        checks.test_gpu_count_and_model(node("NVIDIA H100 80GB HBM3", 1), report)
    with pytest.raises(pytest.skip.Exception, match="nvidia-smi lists no GPU 1: see gpu_count"):
        checks.test_persistence_mode_on(node("NVIDIA H200", 2), report, gpu(1))


def test_consumer_cards_without_ecc_skip_the_ecc_checks() -> None:
    report = smi("nvidia-smi-q-2x-rtx3090.txt")
    spec_node = node("NVIDIA GeForce RTX 3090", 2)
    with pytest.raises(pytest.skip.Exception, match="has no ECC"):
        checks.test_ecc_enabled(spec_node, report, gpu(0))
    with pytest.raises(CheckFailed, match="nvidia-smi does not answer"):
        checks.test_ecc_enabled(spec_node, None, gpu(0))


def test_an_inactive_nvlink_fails_where_the_spec_or_topology_wants_nvlink() -> None:
    topo = parse_nvidia_topo((FIXTURES / "topo-m-3x-rtx-a6000-nvlink-bridge.txt").read_text())
    status = parse_nvlink_status(
        (FIXTURES / "nvlink-s-3x-rtx-a6000-one-gpu-inactive.txt").read_text()
    )
    bridged = node("NVIDIA RTX A6000", 3, "pcie")
    for index in (0, 1):  # NV4 in the topology, 4 links up
        checks.test_nvlink_links_active(bridged, gpu(index), (topo, status))
    with pytest.raises(pytest.skip.Exception, match="no NVLink peer"):
        checks.test_nvlink_links_active(bridged, gpu(2), (topo, status))
    all_linked = node("NVIDIA RTX A6000", 3, "nvlink")
    with pytest.raises(CheckFailed, match=r"GPU 2: no active NVLink .*inActive"):
        checks.test_nvlink_links_active(all_linked, gpu(2), (topo, status))
