"""Operation plans (tests/roles/plan.py) of a service whose input another role writes: Ray and vLLM
read roles/nccl's /etc/aicluster/nccl.env. When a run rewrites it (a NIC renamed after a hardware
swap, `--data nccl_debug=INFO`), the services restart in that same run, the way their own
configuration changes restart them; when it is as wanted, nothing is added."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyinfra.facts.server import Os
from pyinfra.facts.systemd import SystemdStatus

from aicluster import nccl, raycluster, vllmserve
from aicluster.facts.net import IpAddr
from aicluster.facts.state import ManagedState
from roles.nccl import nccl as nccl_role
from roles.ray import UNIT as RAY_UNIT
from roles.ray import ray
from roles.vllm import vllm
from tests.roles.plan import (
    ROOT,
    HostPlan,
    captured,
    converged_state,
    plan_role,
    spec_from_inventory,
)

# `ip -j addr` of the dev machine (tests/fixtures/net): eth0 holds 192.0.2.2.
DEV_MACHINE = captured(IpAddr, ROOT / "tests/fixtures/net/ip-addr-dev-machine.txt")
ROLLING = "vLLM restarted one replica at a time, each answering before the next"
RAY_RESTARTED = f"{RAY_UNIT} restarted (configuration changed)"
VLLM_RESTARTED = f"{vllmserve.UNIT} restarted (configuration changed)"


def homelab(data: dict[str, Any]) -> None:
    """homelab on the dev machine's network, gpu1 at its address; one replica per node."""
    data["nodes"][0]["data_address"] = "192.0.2.2"
    data["nodes"][1]["data_address"] = "192.0.2.3"
    data["cluster"]["data_network"] = "192.0.2.0/24"
    data["serving"]["parallelism"] = {"tensor": 4, "pipeline": 1, "data": 2}


def nccl_then(*roles: Callable[[], None]) -> Callable[[], None]:
    def deploy() -> None:
        nccl_role()
        for role in roles:
            role()

    return deploy


def nccl_free(*roles: Callable[[], None]) -> Callable[[], None]:
    def deploy() -> None:
        for role in roles:
            role()

    return deploy


def second_run(tmp_path: Path, nccl_debug: str) -> HostPlan:
    """gpu1 converged by a first run, then run again with NCCL_DEBUG set to `nccl_debug`."""
    spec = spec_from_inventory("homelab", homelab)
    deploy = nccl_then(ray, vllm)
    facts = {Os: "Linux", IpAddr: DEV_MACHINE}
    first = plan_role(deploy, spec, tmp_path, {"gpu1": facts})["gpu1"]
    assert not first.failed, first.errors
    converged = converged_state(first)
    running = {f"{vllmserve.UNIT}.service": True}
    again = {**facts, ManagedState: converged, SystemdStatus: running}
    return plan_role(deploy, spec, tmp_path, {"gpu1": again}, data={"nccl_debug": nccl_debug})[
        "gpu1"
    ]


def test_a_rewritten_nccl_environment_restarts_ray_and_rolls_the_replicas(tmp_path: Path) -> None:
    plan = second_run(tmp_path, "INFO")
    assert not plan.failed, plan.errors
    assert plan.runs(nccl.ENV_FILE)
    assert plan.op(RAY_RESTARTED).after_change_of == ((nccl.ENV_FILE,),)
    assert plan.runs(RAY_RESTARTED)
    rolling = plan.op(ROLLING)
    assert rolling.after_change_of == ((nccl.ENV_FILE,),) and plan.runs(ROLLING)
    assert rolling.arguments["_serial"] is True
    # Nothing else of Ray's or vLLM's is written again: their own files are as wanted.
    assert [op.name for op in plan.ops] == [
        "/etc/aicluster",
        nccl.ENV_FILE,
        RAY_RESTARTED,
        ROLLING,
    ]


def test_an_unchanged_nccl_environment_adds_nothing(tmp_path: Path) -> None:
    plan = second_run(tmp_path, "WARN")
    assert plan.ops == [] and not plan.failed
    assert len(plan.noops) == 3 and all(n.endswith(" as wanted") for n in plan.noops)


def test_vllm_over_ray_restarts_after_ray_restarts(tmp_path: Path) -> None:
    # homelab as written: pipeline parallel over gpu1 (head) and gpu2 with the Ray backend. The
    # Ray token is rewritten on the head: Ray restarts, and vLLM, whose own files are as wanted,
    # restarts after it (its Ray workers went with it) and is waited for. The condition reads
    # roles.ray.RESTARTS, every host's Ray restarts; pyinfra's CLI orders every vLLM operation
    # after every Ray one (deploy file lines), so a worker's restart counts too.
    spec = spec_from_inventory("homelab")
    deploy = nccl_free(ray, vllm)
    linux = {Os: "Linux"}
    first = plan_role(deploy, spec, tmp_path, {"gpu1": linux})["gpu1"]
    after = converged_state(first)

    def token_rewritten(**probe: Any) -> dict[str, Any]:
        state = copy.deepcopy(after(**probe))
        if raycluster.TOKEN_FILE in state["files"]:
            state["files"][raycluster.TOKEN_FILE]["sha1"] = "0" * 40
        return state

    head = plan_role(deploy, spec, tmp_path, {"gpu1": {**linux, ManagedState: token_rewritten}})[
        "gpu1"
    ]
    assert head.runs(RAY_RESTARTED)
    for name in (VLLM_RESTARTED, "vLLM answers /health on port 8000"):
        assert head.op(name).after_change_of == ((RAY_RESTARTED,),) and head.runs(name)
    # Nothing rewritten: vLLM's restart waits on nothing and never runs.
    quiet = plan_role(deploy, spec, tmp_path, {"gpu1": {**linux, ManagedState: after}})["gpu1"]
    assert RAY_RESTARTED not in quiet.names()
    assert quiet.op(VLLM_RESTARTED).after_change_of == ((),)
    assert not quiet.runs(VLLM_RESTARTED)
