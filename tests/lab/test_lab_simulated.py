"""Simulated GPU hosts (REAL outputs of faulty and healthy hosts, replayed in lab machines):
`aicluster verify` names exactly the fault, and the NVIDIA driver role converges on them without
installing anything.

Runs after test_lab.py: each test replaces the session's lab with one simulated machine and the
fixture gives the session its lab back (fresh machines) at the end."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from aicluster import lab
from tests.lab.conftest import Lab
from tests.lab.test_deploy import REPO
from tests.lab.test_deploy_verify import failures, reason, verify

pytestmark = pytest.mark.lab
BIN = Path(sys.executable).parent
Edit = Callable[[dict[str, Any]], None]


@pytest.fixture
def simulated(lab_cluster: Lab, tmp_path: Path) -> Iterator[Callable[[str, Edit | None], Path]]:
    """Bring up one machine of a profile, its inventory changed by `edit`; returns the inventory."""

    def bring_up(profile: str, edit: Edit | None = None) -> Path:
        lab.down()
        inventory = tmp_path / f"{profile}.yaml"
        lab.up(1, outsider=False, profile=profile, inventory=inventory)
        if edit is not None:
            data = yaml.safe_load(inventory.read_text())
            edit(data)
            inventory.write_text(yaml.safe_dump(data, sort_keys=False))
        return inventory

    try:
        yield bring_up
    finally:
        lab.down()
        lab_cluster.up()


def check(cluster: Lab, inventory: Path, *checks: str) -> tuple[int, dict[str, Any]]:
    code, report, _ = verify(
        cluster, "--node=node1", *(f"--only={c}" for c in checks), inventory=inventory
    )
    return code, report


def two_h200(data: dict[str, Any]) -> None:
    data["nodes"][0]["gpus"][0]["count"] = 2
    data["serving"]["parallelism"]["data"] = 2


def test_verify_names_a_missing_gpu(lab_cluster: Lab, simulated: Any) -> None:
    # The real H200 host has one GPU; the spec says two.
    inventory = simulated("h200", two_h200)
    code, report = check(
        lab_cluster, inventory, "nvidia_smi_responds", "gpu_count_and_model",
        "persistence_mode_on", "ecc_enabled", "pcie_link_at_full_width",
    )  # fmt: skip
    assert code == 1
    assert failures(report) == {("node1", "gpu_count_and_model", None)}
    assert "spec: 2 x NVIDIA H200; nvidia-smi: 1 x NVIDIA H200" in reason(
        report, "gpu_count_and_model"
    )
    skipped = {(r["check"], r["item"]) for r in report["results"] if r["verdict"] == "skip"}
    assert ("persistence_mode_on", "gpu1") in skipped  # counted once, not once per check


def test_verify_names_a_gpu_at_reduced_pcie_width(lab_cluster: Lab, simulated: Any) -> None:
    inventory = simulated("fault-pcie-width", None)
    code, report = check(
        lab_cluster,
        inventory,
        "nvidia_smi_responds",
        "gpu_count_and_model",
        "pcie_link_at_full_width",
    )
    assert code == 1
    assert failures(report) == {("node1", "pcie_link_at_full_width", "gpu0")}
    assert "GPU 0 (0000:03:00.0) runs at x4 of x8" in reason(report, "pcie_link_at_full_width")


def test_verify_names_an_inactive_nvlink(lab_cluster: Lab, simulated: Any) -> None:
    inventory = simulated("fault-nvlink", None)
    code, report = check(lab_cluster, inventory, "nvlink_links_active")
    assert code == 1
    assert failures(report) == {("node1", "nvlink_links_active", "gpu2")}
    passed = {r["item"] for r in report["results"] if r["verdict"] == "pass"}
    assert passed == {"gpu0", "gpu1"}
    assert "all links are inActive" in reason(report, "nvlink_links_active")


def driver_deploy(inventory: Path) -> subprocess.CompletedProcess[str]:
    command = [
        str(BIN / "pyinfra"),
        "-y",
        "-v",  # the role's noop lines say what it verified
        "--json",
        str(inventory.with_suffix(".py")),
        "deploys/nvidia_driver.py",
    ]
    return subprocess.run(
        command, capture_output=True, text=True, cwd=REPO, timeout=600, check=False
    )


def changed(run: subprocess.CompletedProcess[str]) -> int:
    """Operations that changed something (pyinfra --json counts them as "success")."""
    totals: dict[str, int] = json.loads(run.stdout)["results"]["totals"]
    return totals["success"]


def test_the_driver_role_verifies_a_preinstalled_driver_and_installs_nothing(
    lab_cluster: Lab, simulated: Any
) -> None:
    def preinstalled(branch: str) -> Edit:
        def edit(data: dict[str, Any]) -> None:
            data["serving"]["versions"]["nvidia_driver_branch"] = branch
            data["nvidia_driver"] = {"source": "preinstalled"}

        return edit

    # The replayed H200 runs driver 580.159.04: pinned 580, converging twice changes nothing.
    inventory = simulated("h200", preinstalled("580"))
    for _ in range(2):
        run = driver_deploy(inventory)
        assert run.returncode == 0, run.stderr[-2000:]
        assert changed(run) == 0
        assert "branch 580 as pinned" in run.stderr
    wrong = yaml.safe_load(inventory.read_text())
    preinstalled("570")(wrong)
    inventory.write_text(yaml.safe_dump(wrong, sort_keys=False))
    run = driver_deploy(inventory)
    assert run.returncode != 0
    assert "570" in run.stderr and "580.159.04" in run.stderr
    # Any other source: a simulated machine never gets a driver.
    repo = yaml.safe_load(inventory.read_text())
    repo["nvidia_driver"] = {"source": "cuda-repo"}
    inventory.write_text(yaml.safe_dump(repo, sort_keys=False))
    run = driver_deploy(inventory)
    assert run.returncode == 0, run.stderr[-2000:]
    assert changed(run) == 0
    assert "SIMULATION" in run.stderr and "no driver is installed here" in run.stderr
