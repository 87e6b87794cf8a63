"""Exo cluster checks: the Macs agree with each other, are cabled as RDMA needs, and serve
together through Exo. Run once, from the control machine, over every node; skipped (with the
reason) on a cluster whose engine is not Exo."""

from __future__ import annotations

import json
from typing import Any

import pytest
import testinfra.host

from aicluster import exo as exo_plan
from aicluster.checks import fail
from aicluster.checks.context import run
from aicluster.facts import ParseError
from aicluster.facts.macos import parse_sw_vers, parse_thunderbolt, thunderbolt_links
from aicluster.spec import ClusterSpec

SCOPE = "cluster"
Hosts = dict[str, testinfra.host.Host]


def _exo_only(spec: ClusterSpec) -> None:
    if spec.cluster.engine != "exo":
        pytest.skip(f"engine is {spec.cluster.engine}, not exo")


def _exo_version_command(spec: ClusterSpec) -> str:
    if spec.exo.install == "app":
        return f"defaults read {exo_plan.APP}/Contents/Info CFBundleShortVersionString"
    python = f"{exo_plan.source_dir(spec)}/.venv/bin/python"
    return f"{python} -c 'import importlib.metadata as m; print(m.version(\"exo\"))'"


def test_macos_build_identical(spec: ClusterSpec, hosts: Hosts) -> None:
    """Every Mac runs the same macOS build (MLX and RDMA over Thunderbolt change between builds)."""
    _exo_only(spec)
    builds: dict[str, str | None] = {}
    for node in spec.nodes:
        try:
            builds[node.name] = parse_sw_vers(run(hosts[node.name], "sw_vers", "sw_vers"))["build"]
        except ParseError as error:
            fail(f"{node.name}: {error}")
    mismatch = exo_plan.build_mismatch(builds)
    if mismatch:
        fail(mismatch)


def test_exo_version_identical(spec: ClusterSpec, hosts: Hosts) -> None:
    """Every Mac runs the pinned Exo version (nodes on two versions never join one cluster)."""
    _exo_only(spec)
    pinned = exo_plan.pinned_version(spec)
    found = {
        node.name: run(hosts[node.name], _exo_version_command(spec), "Exo version").strip()
        for node in spec.nodes
    }
    wrong = {name: version for name, version in found.items() if version != pinned}
    if wrong:
        shown = ", ".join(f"{name} {version}" for name, version in wrong.items())
        fail(f"Exo {pinned} is pinned; found {shown}", "converge roles/exo")


def test_thunderbolt_full_mesh(spec: ClusterSpec, hosts: Hosts) -> None:
    """With RDMA wanted, every pair of Macs has its own Thunderbolt cable (RDMA does not route)."""
    _exo_only(spec)
    if not spec.exo.rdma:
        pytest.skip("exo.rdma is off: Exo runs over TCP, any topology works")
    domains: dict[str, set[str]] = {}
    links: dict[str, set[str]] = {}
    for node in spec.nodes:
        output = run(
            hosts[node.name], "system_profiler SPThunderboltDataType -json", "system_profiler"
        )
        buses = parse_thunderbolt(output)["buses"]
        domains[node.name] = {bus["domain_uuid"] for bus in buses if bus["domain_uuid"]}
        links[node.name] = set(thunderbolt_links(buses).values())
    missing = [
        f"{a.name}-{b.name}"
        for i, a in enumerate(spec.nodes)
        for b in spec.nodes[i + 1 :]
        if not links[a.name] & domains[b.name]
    ]
    if missing:
        fail(
            f"no Thunderbolt cable between {', '.join(missing)}",
            "cable every pair of Macs directly (Thunderbolt 5), or set exo.rdma: false",
        )


def _exo_api(spec: ClusterSpec, hosts: Hosts, path: str, data: str | None = None) -> Any:
    body = f" -H 'Content-Type: application/json' --data '{data}'" if data else ""
    url = f"http://127.0.0.1:{spec.serving.api_port}{path}"
    output = run(
        hosts[spec.head.name],
        f"curl -sS --max-time 300 {url}{body}",
        f"Exo API {path}",
        f"tail {exo_plan.LOG} on {spec.head.name}",
    )
    try:
        return json.loads(output)
    except json.JSONDecodeError:
        fail(f"{path}: no JSON answer ({output.strip()[:120] or 'nothing'})")


def test_exo_state_lists_every_node(spec: ClusterSpec, hosts: Hosts) -> None:
    """Exo's /state on the head lists as many nodes as the spec has (one identity per Mac)."""
    _exo_only(spec)
    state = _exo_api(spec, hosts, "/state")
    identities = state.get("nodeIdentities") or state.get("node_identities") or {}
    if len(identities) != len(spec.nodes):
        fail(
            f"Exo sees {len(identities)} node(s), the spec has {len(spec.nodes)}",
            f"same namespace ({exo_plan.namespace(spec)}) and version on every node; no copied "
            f"~/.exo (each node's identity lives in {exo_plan.HOME}); pf lets the cluster in",
        )


def test_exo_completion_succeeds(spec: ClusterSpec, hosts: Hosts) -> None:
    """One chat completion through Exo's OpenAI-compatible API: the sharded model computes tokens."""
    _exo_only(spec)
    model = spec.serving.model.hf_id or spec.serving.model.path
    request = json.dumps(
        {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    )
    answer = _exo_api(spec, hosts, "/v1/chat/completions", request)
    choices = answer.get("choices") if isinstance(answer, dict) else None
    if not choices:
        fail(f"no completion: {str(answer)[:160]}", f"tail {exo_plan.LOG} on every node")
