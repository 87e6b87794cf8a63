"""What the checks share: which spec node a host is, the items each check runs per, remote reads."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import testinfra.host

from aicluster import firewall, system, vllmserve
from aicluster.checks import fail
from aicluster.spec import ClusterSpec, Node

RAY_UNIT = "aicluster-ray"


@dataclass(frozen=True)
class Target:
    """One thing on one node a check runs for: a GPU, a peer node, a fabric port, a setting."""

    node: str
    id: str
    value: Any = None


def node_for_host(spec: ClusterSpec, hostspec: str, override: str | None = None) -> Node:
    """The spec's node a testinfra host is: by --aicluster-node, by node name, or by SSH address."""
    by_name = {node.name: node for node in spec.nodes}
    if override:
        if override not in by_name:
            raise LookupError(
                f"--aicluster-node {override}: no such node (nodes: {', '.join(by_name)})"
            )
        return by_name[override]
    name = urlsplit(hostspec if "://" in hostspec else f"ssh://{hostspec}").hostname or hostspec
    if name in by_name:
        return by_name[name]
    for node in spec.nodes:
        if str(node.ssh.address) == name:
            return node
    raise LookupError(
        f"host {hostspec!r} is no node of the spec (nodes: {', '.join(by_name)}): "
        "name it as the spec does, or pass --aicluster-node NAME"
    )


def services(spec: ClusterSpec, node: Node) -> list[str]:
    """aicluster's systemd units this node must run."""
    units = [firewall.UNIT]
    if spec.cluster.engine == "vllm":
        units.append(RAY_UNIT)
        try:
            if vllmserve.launch(spec, node).runs_vllm:
                units.append(vllmserve.UNIT)
        except vllmserve.LaunchError:
            units.append(vllmserve.UNIT)  # the role refuses it; the check says it is not running
    return units


def gpu_count(node: Node) -> int:
    return sum(group.count for group in node.gpus)


def node_items(spec: ClusterSpec, node: Node, kind: str) -> list[Target]:
    """The items of `kind` a check runs for on `node`, from the spec."""
    if kind == "gpu":
        return [Target(node.name, f"gpu{i}", i) for i in range(gpu_count(node))]
    if kind == "peer":
        return [Target(node.name, peer.name, peer) for peer in spec.nodes if peer.name != node.name]
    if kind == "fabric_port":
        return [Target(node.name, port.interface, port) for port in node.fabric]
    if kind == "sysctl_key":
        return [Target(node.name, key, value) for key, (value, _) in system.SYSCTL.items()]
    if kind == "member":
        return [Target(node.name, node.name, node)]
    if kind == "unit":
        return [Target(node.name, unit, unit) for unit in services(spec, node)]
    raise ValueError(f"unknown item kind {kind!r}")


def run(host: testinfra.host.Host, command: str, what: str, fix: str | None = None) -> str:
    """stdout of a command that must succeed; otherwise the check fails saying what and why."""
    result = host.run(command)
    if result.rc != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        fail(f"{what}: exit {result.rc}: {detail[-1] if detail else 'no output'}", fix)
    return str(result.stdout)


def head_curl(spec: ClusterSpec, path: str, data: str | None = None) -> str:
    """A curl of the vLLM API on the head itself, with the API key read from its 0600 file.

    The key goes from the file to curl's standard input (`-H @-`): it is in no command line."""
    url = f"http://127.0.0.1:{spec.serving.api_port}{path}"
    body = f" -H 'Content-Type: application/json' --data {shlex.quote(data)}" if data else ""
    return (
        f"printf 'Authorization: Bearer %s\\n' \"$(cat {vllmserve.API_KEY_FILE})\" | "
        f"curl -sS --max-time 120 -H @- {shlex.quote(url)}{body}"
    )
