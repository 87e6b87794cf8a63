"""Operation plans of roles/vllm (tests/roles/plan.py): who restarts when, and who waits for /health.

One engine across nodes restarts as a whole; independent replicas (one per node) roll, one node at
a time, each answering /health before the next goes down."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pyinfra.facts.server import Os
from pyinfra.facts.systemd import SystemdEnabled, SystemdStatus

from aicluster import vllmserve
from aicluster.spec import ClusterSpec
from roles.vllm import vllm
from tests.roles.plan import Facts, plan_role, spec_from_inventory

UNIT = f"{vllmserve.UNIT}.service"
ROLLING = "vLLM restarted one replica at a time, each answering before the next"
HEALTH = "vLLM answers /health on port 8000"
RESTARTED = f"{vllmserve.UNIT} restarted (configuration changed)"
# The example inventories serve from the hub: the HF token is a credential like the API key.
CONFIGURATION = (UNIT, "vLLM launcher", "api_key (0600, root)", "hf_token (0600, root)")


def replica_per_node(data: dict[str, Any]) -> None:
    """homelab: each 4 x RTX 3090 node serves its own TP=4 replica, two replicas in all."""
    data["serving"]["parallelism"] = {"tensor": 4, "pipeline": 1, "data": 2}


def node_facts(running: bool) -> Facts:
    return {
        Os: "Linux",
        SystemdStatus: {UNIT: running} if running else {},
        SystemdEnabled: {UNIT: running} if running else {},
    }


def test_replicas_restart_one_node_at_a_time_each_waiting_for_health(tmp_path: Path) -> None:
    spec = spec_from_inventory("homelab", replica_per_node)
    plans = plan_role(vllm, spec, tmp_path, {"gpu1": node_facts(True), "gpu2": node_facts(True)})
    for node in ("gpu1", "gpu2"):
        rolling = plans[node].op(ROLLING)
        assert rolling.arguments["_serial"] is True
        (command,) = rolling.commands
        restart, wait = command.split(" || exit 1; ")
        assert restart == f"systemctl restart {vllmserve.UNIT}"
        assert "curl -sf -o /dev/null http://127.0.0.1:8000/health && exit 0" in wait
        # Only after a change of its unit, launcher or secrets; never the plain restart of one engine.
        assert rolling.after_change_of == (CONFIGURATION,)
        assert RESTARTED not in plans[node].names()


def test_every_replica_serves_the_api_with_its_own_arguments(tmp_path: Path) -> None:
    spec = ClusterSpec.model_validate(spec_from_inventory("homelab", replica_per_node))
    for node in spec.nodes:
        launch = vllmserve.launch(spec, node)
        assert launch.serves_api and launch.replica_per_node
        assert "--tensor-parallel-size=4" in launch.arguments
        assert "--pipeline-parallel-size=1" in launch.arguments
        assert not any(
            a.startswith(("--nnodes", "--data-parallel-size", "--headless"))
            for a in launch.arguments
        )


def test_replicas_started_for_the_first_time_start_together(tmp_path: Path) -> None:
    spec = spec_from_inventory("homelab", replica_per_node)
    plans = plan_role(vllm, spec, tmp_path, {"gpu1": node_facts(False), "gpu2": node_facts(False)})
    for node in ("gpu1", "gpu2"):
        assert ROLLING not in plans[node].names()
        assert plans[node].op(HEALTH).commands  # each node waits for its own replica
        assert (
            "_serial" not in plans[node].op(HEALTH).arguments
            or not plans[node].op(HEALTH).arguments["_serial"]
        )


def test_one_engine_on_one_node_restarts_on_change_and_waits_for_health(tmp_path: Path) -> None:
    spec = spec_from_inventory("h100_workstation")
    (node,) = (n["name"] for n in spec["nodes"])
    plan = plan_role(vllm, spec, tmp_path, {node: node_facts(True)})[node]
    assert ROLLING not in plan.names()
    assert plan.op(RESTARTED).after_change_of == (CONFIGURATION,)
    assert plan.op(HEALTH).after_change_of == plan.op(RESTARTED).after_change_of


def test_replicas_spanning_nodes_are_refused_with_what_to_set(tmp_path: Path) -> None:
    def spanning(data: dict[str, Any]) -> None:
        data["serving"]["parallelism"] = {"tensor": 4, "pipeline": 2, "data": 1}
        data["nodes"].append({**data["nodes"][1], "name": "gpu3", "ssh": {"address": "192.168.1.13"},
                              "data_address": "10.10.0.13"})  # fmt: skip
        data["nodes"].append({**data["nodes"][1], "name": "gpu4", "ssh": {"address": "192.168.1.14"},
                              "data_address": "10.10.0.14"})  # fmt: skip
        data["serving"]["parallelism"]["data"] = 2

    spec = spec_from_inventory("homelab", spanning)
    plans = plan_role(vllm, spec, tmp_path, {"gpu1": node_facts(False)})
    assert plans["gpu1"].failed
    assert any(
        "give each node one whole replica (pipeline: 1, data: the node count)" in e
        for e in plans["gpu1"].errors
    )
