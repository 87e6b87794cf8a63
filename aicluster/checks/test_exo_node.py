"""Exo node checks: RDMA over Thunderbolt is really usable on this Mac. Skipped (with the reason)
on a cluster whose engine is not Exo or that does not want RDMA."""

from __future__ import annotations

import pytest
import testinfra.host

from aicluster import exo as exo_plan
from aicluster.checks import fail
from aicluster.checks.context import run
from aicluster.facts.macos import parse_ibv_devices, parse_rdma_ctl, thunderbolt_rdma_devices
from aicluster.spec import ClusterSpec, Node


def test_rdma_enabled_with_devices(
    spec: ClusterSpec, host: testinfra.host.Host, node: Node
) -> None:
    """rdma_ctl says enabled AND ibv_devices lists rdma_en* devices ("enabled" alone proves
    nothing: without Thunderbolt 5 there is no device)."""
    if spec.cluster.engine != "exo":
        pytest.skip(f"engine is {spec.cluster.engine}, not exo")
    if not spec.exo.rdma:
        pytest.skip("exo.rdma is off")
    enabled = parse_rdma_ctl(run(host, "rdma_ctl status", "rdma_ctl status"))["enabled"]
    if not enabled:
        fail("RDMA over Thunderbolt is disabled", exo_plan.recovery_steps(node))
    devices = thunderbolt_rdma_devices(
        parse_ibv_devices(run(host, "ibv_devices", "ibv_devices"))["devices"]
    )
    if not devices:
        fail(
            "rdma_ctl says enabled but ibv_devices lists no rdma_en* device",
            "RDMA needs Thunderbolt 5 ports and cables; replug the cable, then reboot",
        )
