"""Cluster checks: the nodes agree with each other and serve together. Run once, from the control
machine, over every node."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import testinfra.host

from aicluster import ports, runtime, vllmserve
from aicluster.checks import fail
from aicluster.checks.context import Target, head_curl, services
from aicluster.facts import ParseError
from aicluster.facts.net import interface_for_address, parse_ip_addr
from aicluster.raycluster import TOKEN_FILE
from aicluster.spec import ClusterSpec

SCOPE = "cluster"
# Beyond this, Ray heartbeats, NCCL timeouts and log correlation go wrong; chrony keeps well under.
CLOCK_SKEW_LIMIT_S = 0.5
Hosts = dict[str, testinfra.host.Host]


def _head(spec: ClusterSpec, hosts: Hosts) -> testinfra.host.Host:
    return hosts[spec.head.name]


def test_versions_identical(spec: ClusterSpec, hosts: Hosts) -> None:
    """Every node runs the same Python, vLLM, Ray, torch, NCCL, driver and kernel (version drift
    between nodes is the classic multi-node start-up failure)."""
    fingerprints: dict[str, dict[str, Any]] = {}
    for node in spec.nodes:
        result = hosts[node.name].run(runtime.fingerprint_command())
        try:
            fingerprints[node.name] = runtime.parse_fingerprint(result.stdout)
        except ParseError:
            fail(
                f"{node.name}: no version fingerprint ({result.stderr.strip()[:100]})",
                "converge roles/python_runtime",
            )
    rows = runtime.drift(fingerprints)
    if rows:
        fail(
            "versions differ between nodes:\n" + runtime.drift_table(rows),
            "converge roles/python_runtime (and roles/nvidia_driver for the driver) on every node",
        )
    unpinned = [
        n.name
        for n in spec.nodes
        if not runtime.satisfies(fingerprints[n.name], runtime.pins_for(spec, n))
    ]
    if unpinned:
        fail(f"not the pinned versions on {', '.join(unpinned)}", "converge roles/python_runtime")


def test_ray_sees_every_node(spec: ClusterSpec, hosts: Hosts) -> None:
    """The Ray cluster has every node alive, with every GPU of the spec."""
    if spec.cluster.engine != "vllm":
        pytest.skip("no Ray on an Exo cluster")
    result = _head(spec, hosts).run(
        f"RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={TOKEN_FILE} {runtime.VENV}/bin/python -c "
        f'\'import json, ray; ray.init(address="{spec.head.data_address}:{ports.RAY_GCS}", '
        'logging_level="ERROR", log_to_driver=False); '
        'print(json.dumps([[n["NodeManagerAddress"], n["Alive"], n["Resources"].get("GPU", 0)] '
        "for n in ray.nodes()]))'"
    )
    if result.rc != 0:
        lines = result.stderr.strip().splitlines()
        fail(
            f"cannot query Ray on the head: {lines[-1] if lines else result.rc}",
            "journalctl -u aicluster-ray on the head",
        )
    rows = json.loads(result.stdout.strip().splitlines()[-1])
    alive = {address for address, is_alive, _ in rows if is_alive}
    missing = [n.name for n in spec.nodes if str(n.data_address) not in alive]
    if missing:
        fail(
            f"Ray has no live node at the data address of {', '.join(missing)}",
            "systemctl status aicluster-ray on those nodes; the firewall must let the data network in",
        )
    gpus = sum(gpus for _, is_alive, gpus in rows if is_alive)
    expected = sum(group.count for node in spec.nodes for group in node.gpus)
    if gpus != expected:
        fail(
            f"Ray sees {gpus:g} GPUs, the spec has {expected}",
            "see gpu_count_and_model on each node",
        )


def _api(spec: ClusterSpec, hosts: Hosts, path: str, data: str | None = None) -> dict[str, Any]:
    head = _head(spec, hosts)
    if vllmserve.UNIT not in services(spec, spec.head):
        pytest.skip("vLLM is not served by this cluster")
    result = head.run(head_curl(spec, path, data))
    try:
        answer: dict[str, Any] = json.loads(result.stdout)
    except json.JSONDecodeError:
        fail(
            f"{path}: no JSON answer ({(result.stdout or result.stderr).strip()[:120] or 'nothing'})",
            f"journalctl -u {vllmserve.UNIT} on {spec.head.name}",
        )
    return answer


def test_model_listed(spec: ClusterSpec, hosts: Hosts) -> None:
    """/v1/models lists the served model (the API key is accepted)."""
    answer = _api(spec, hosts, "/v1/models")
    names = [model.get("id") for model in answer.get("data", [])]
    served = vllmserve.served_name(spec)
    if served not in names:
        fail(
            f"/v1/models lists {names or answer}, not {served!r}", f"journalctl -u {vllmserve.UNIT}"
        )


def test_completion_succeeds(spec: ClusterSpec, hosts: Hosts) -> None:
    """One real completion: the whole pipeline (every stage, every node) computes tokens."""
    request = json.dumps(
        {
            "model": vllmserve.served_name(spec),
            "prompt": "The cluster",
            "max_tokens": 4,
            "temperature": 0,
        }
    )
    answer = _api(spec, hosts, "/v1/completions", request)
    produced = answer.get("usage", {}).get("completion_tokens")
    if produced != 4:
        fail(
            f"asked for 4 tokens, got {produced}: {str(answer)[:160]}",
            f"journalctl -u {vllmserve.UNIT} on every node",
        )


def test_clock_skew_below_limit(spec: ClusterSpec, hosts: Hosts, member: Target) -> None:
    """The node's clock is within CLOCK_SKEW_LIMIT_S of the control machine's (so of each other's)."""
    host = hosts[member.id]
    host.run("true")  # the connection is up: the round trip below is one command, not a login
    before = time.time()
    remote = float(host.run("date +%s.%N").stdout)
    after = time.time()
    skew = abs(remote - (before + after) / 2) - (after - before) / 2
    if skew > CLOCK_SKEW_LIMIT_S:
        fail(f"{member.id} is {skew:.2f} s off", "chronyc tracking; converge roles/base")


def test_data_mtu_identical(spec: ClusterSpec, hosts: Hosts, member: Target) -> None:
    """The node's data interface has the MTU the head's has (one jumbo-frame node stalls NCCL)."""

    def mtu(name: str) -> tuple[str, int]:
        node = next(n for n in spec.nodes if n.name == name)
        interfaces = parse_ip_addr(hosts[name].run("ip -j addr").stdout)["interfaces"]
        interface = interface_for_address(interfaces, str(node.data_address))
        if interface is None:
            fail(f"{name}: no interface holds {node.data_address}", "see data_interface_up")
        found = next(i for i in interfaces if i["name"] == interface)
        return interface, int(found["mtu"])

    head_interface, head_mtu = mtu(spec.head.name)
    interface, value = mtu(member.id)
    if value != head_mtu:
        fail(
            f"{member.id} {interface}: MTU {value}; head {spec.head.name} {head_interface}: MTU {head_mtu}",
            "give every data interface (and the switch) the same MTU",
        )


def test_head_reachable_on_ray_port(spec: ClusterSpec, hosts: Hosts, member: Target) -> None:
    """The node reaches the head's Ray port from its data address (the firewall lets the cluster in)."""
    if spec.cluster.engine != "vllm":
        pytest.skip("no Ray on an Exo cluster")
    node = member.value
    head = spec.head.data_address
    result = hosts[member.id].run(
        f'timeout 5 python3 -c \'import socket; socket.create_connection(("{head}", {ports.RAY_GCS}), 4, '
        f'("{node.data_address}", 0)).close()\''
    )
    if result.rc != 0:
        fail(
            f"{member.id} cannot reach {head}:{ports.RAY_GCS}",
            "check aicluster-ray on the head and the firewall (nft list table inet aicluster)",
        )
