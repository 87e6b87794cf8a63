"""The communication environment of a node, derived from the spec and the node's own facts.

Most multi-node failures are network failures: NCCL or Gloo bound to the wrong interface, a node
advertising an address its peers cannot reach, InfiniBand present but NCCL silently on TCP. Every
variable here is derived, never guessed: the socket interface is the one that holds the node's
data-network address, the HCAs are the spec's ports that the node reports Active.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from aicluster.facts.net import interface_for_address
from aicluster.facts.rdma import roce_v2_gid_index
from aicluster.spec import RDMA_FABRICS, ClusterSpec, Node

NCCL_DEBUG_LEVELS = ("VERSION", "WARN", "INFO", "TRACE")


ENV_FILE = "/etc/aicluster/nccl.env"


class NcclError(ValueError):
    """The node's facts contradict the spec; the message says what to fix on which node."""


def environment(
    spec: ClusterSpec,
    node: Node,
    interfaces: list[Mapping[str, Any]],
    ib_adapters: list[Mapping[str, Any]] | None = None,
    gids: list[Mapping[str, Any]] | None = None,
    debug: str = "WARN",
) -> dict[str, str]:
    """Variables for /etc/aicluster/nccl.env, read by every service of the node."""
    if debug not in NCCL_DEBUG_LEVELS:
        raise NcclError(f"nccl_debug must be one of {', '.join(NCCL_DEBUG_LEVELS)}, not {debug!r}")
    address = str(node.data_address)
    interface = interface_for_address(interfaces, address)
    if interface is None:
        held = ", ".join(
            f"{i.get('name')}={a.get('local')}" for i in interfaces for a in i.get("addresses", [])
        )
        raise NcclError(
            f"{node.name}: no interface holds its data address {address} (it has {held or 'none'}); "
            f"configure the data network on the node or fix nodes.{node.name}.data_address"
        )
    env = {
        "NCCL_SOCKET_IFNAME": f"={interface}",  # '=': exactly this interface, not a prefix match
        "GLOO_SOCKET_IFNAME": interface,
        "VLLM_HOST_IP": address,
        "NCCL_DEBUG": debug,
    }
    fabric = spec.cluster.fabric
    if fabric in RDMA_FABRICS:
        hcas = _active_hcas(node, fabric, ib_adapters or [])
        env["NCCL_IB_HCA"] = "=" + ",".join(hcas)
        if fabric == "roce":
            index = roce_v2_gid_index(gids or [], interface, address)
            if index is not None:
                env["NCCL_IB_GID_INDEX"] = str(index)
    else:
        # No RDMA in the spec: NCCL must not try (and half-succeed on) a stray HCA.
        env["NCCL_IB_DISABLE"] = "1"
    if _needs_p2p_disabled(node):
        env["NCCL_P2P_DISABLE"] = "1"
    return env


def _active_hcas(node: Node, fabric: str, adapters: list[Mapping[str, Any]]) -> list[str]:
    """The spec's RDMA devices of this fabric that the node reports Active; any other is an error:
    NCCL would fall back to TCP sockets without failing."""
    # ibstat says "Active", sysfs "ACTIVE": the same state.
    states = {
        adapter.get("name"): {str(port.get("state")).lower() for port in adapter.get("ports", [])}
        for adapter in adapters
    }
    wanted = [port.hca for port in node.fabric if port.kind == fabric and port.hca]
    inactive = [hca for hca in wanted if "active" not in states.get(hca, set())]
    if inactive:
        seen = ", ".join(
            f"{name}: {'/'.join(sorted(map(str, s))) or 'no ports'}" for name, s in states.items()
        )
        raise NcclError(
            f"{node.name}: {fabric} device(s) {', '.join(inactive)} are not Active "
            f"(the node reports {seen or 'no adapters'}); NCCL would silently use TCP"
        )
    return wanted


def _needs_p2p_disabled(node: Node) -> bool:
    """GeForce cards without NVLink hang or corrupt data on PCIe peer-to-peer (no P2P support on
    consumer boards); NCCL then needs P2P disabled and goes through host memory."""
    return node.accelerator_link == "pcie" and any("GeForce" in group.model for group in node.gpus)


def render(env: Mapping[str, str]) -> str:
    """The environment file: KEY=value lines, for systemd's EnvironmentFile= and shells alike."""
    header = "# Written by aicluster (roles/nccl): derived from the spec and this node's facts.\n"
    return header + "".join(f"{key}={value}\n" for key, value in sorted(env.items()))


NETWORK_LINE = re.compile(r"NCCL INFO Using network (\S+)")
NET_DEVICES_LINE = re.compile(r"NCCL INFO NET/(?:IB|Socket)\s*: Using (.*)")
NET_DEVICE = re.compile(r"\[\d+\]([^\s;]+)")


def parse_nccl_network(text: str) -> dict[str, Any]:
    """Which network NCCL chose, from its NCCL_DEBUG=INFO log: {"network": "IB" | "IBext_v8" |
    "Socket" | None, "rdma": bool, "devices": ["mlx5_0:1/IB", ...]}. "rdma" is False when NCCL
    fell back to TCP sockets, the silent failure of a cluster whose InfiniBand is down."""
    network = None
    devices: list[str] = []
    for line in text.splitlines():
        chosen = NETWORK_LINE.search(line)
        if chosen and network is None:
            network = chosen.group(1)
        listed = NET_DEVICES_LINE.search(line)
        if listed and not devices:
            devices = NET_DEVICE.findall(listed.group(1).split(";")[0])
    return {
        "network": network,
        "rdma": network is not None and network.startswith("IB"),
        "devices": devices,
    }
