"""Network checks: the data network names, reaches and carries every node at the spec's rate."""

from __future__ import annotations

import json

import pytest
import testinfra.host

from aicluster.checks import fail
from aicluster.checks.context import Target, run
from aicluster.facts.net import interface_for_address, parse_ip_addr
from aicluster.facts.rdma import parse_ibstat
from aicluster.spec import Node


def test_peer_resolves_to_its_data_address(host: testinfra.host.Host, peer: Target) -> None:
    """Every other node's name resolves to its data address here (Gloo and torch.distributed
    advertise what the hostname resolves to)."""
    expected = str(peer.value.data_address)
    answer = host.run(f"getent hosts {peer.id}").stdout.split()
    if not answer:
        fail(f"{peer.id} does not resolve", "converge roles/base (/etc/hosts block)")
    if answer[0] != expected:
        fail(
            f"{peer.id} resolves to {answer[0]}, not its data address {expected}",
            "converge roles/base",
        )


def test_peer_reachable_on_data_network(
    host: testinfra.host.Host, node: Node, peer: Target
) -> None:
    """Every other node answers on its data address, from this node's data address."""
    target = str(peer.value.data_address)
    source = str(node.data_address)
    port = peer.value.ssh.port
    # TCP to the peer's sshd rather than ping: ICMP may be filtered where TCP is not.
    result = host.run(
        f'timeout 5 python3 -c \'import socket; socket.create_connection(("{target}", {port}), 4, '
        f'("{source}", 0)).close()\''
    )
    if result.rc != 0:
        fail(
            f"no TCP connection from {source} to {peer.id} at {target}:{port}",
            "check cabling, the data interface's address and route, and the firewall",
        )


def _data_interface(host: testinfra.host.Host, node: Node) -> dict[str, object]:
    interfaces = parse_ip_addr(run(host, "ip -j addr", "ip -j addr"))["interfaces"]
    name = interface_for_address(interfaces, str(node.data_address))
    if name is None:
        fail(
            f"no interface holds the data address {node.data_address}", "configure the data network"
        )
    found: dict[str, object] = next(i for i in interfaces if i["name"] == name)
    return found


def test_data_interface_up(host: testinfra.host.Host, node: Node) -> None:
    """The interface holding the data address is up."""
    interface = _data_interface(host, node)
    state = json.loads(run(host, f"ip -j link show dev {interface['name']}", "ip link"))[0]
    if state.get("operstate") not in ("UP", "UNKNOWN") or "UP" not in state.get("flags", []):
        fail(
            f"{interface['name']} is {state.get('operstate')}",
            f"ip link set {interface['name']} up; check the cable",
        )


def _link(host: testinfra.host.Host, interface: str) -> dict[str, object]:
    result = host.run(f"ip -j link show dev {interface}")
    if result.rc != 0:
        fail(f"no interface {interface}", "check the interface name in the spec (ip -br link)")
    found: dict[str, object] = json.loads(result.stdout)[0]
    return found


def test_fabric_port_mtu(host: testinfra.host.Host, fabric_port: Target) -> None:
    """Each fabric port has the spec's MTU (a jumbo-frame mismatch stalls NCCL mid-transfer)."""
    port = fabric_port.value
    mtu = _link(host, port.interface)["mtu"]
    if mtu != port.mtu:
        fail(
            f"{port.interface}: MTU {mtu}, spec {port.mtu}",
            f"ip link set {port.interface} mtu {port.mtu} (and persist it); the switch must match",
        )


def test_fabric_port_active_at_rate(host: testinfra.host.Host, fabric_port: Target) -> None:
    """Each fabric port is up at the spec's rate: an RDMA port Active in ibstat, an Ethernet port
    at its link speed."""
    port = fabric_port.value
    if port.hca:
        output = run(host, f"ibstat {port.hca}", f"ibstat {port.hca}", "install infiniband-diags")
        states = [p for a in parse_ibstat(output)["adapters"] for p in a["ports"]]
        if not states:
            fail(f"{port.hca} lists no port")
        first = states[0]
        if first["state"] != "Active" or first["physical_state"] != "LinkUp":
            fail(
                f"{port.hca}: {first['state']} / {first['physical_state']}",
                "check the cable and the subnet manager (opensm or the switch's)",
            )
        if first["rate_gbps"] is not None and float(first["rate_gbps"]) < port.rate_gbps:
            fail(
                f"{port.hca}: {first['rate_gbps']:g} Gb/s, spec {port.rate_gbps:g}",
                "check the cable/transceiver and the switch port's speed",
            )
        return
    link = _link(host, port.interface)
    if link.get("operstate") not in ("UP", "UNKNOWN"):
        fail(f"{port.interface} is {link.get('operstate')}", "check the cable and the switch port")
    speed = host.run(f"cat /sys/class/net/{port.interface}/speed")
    if speed.rc != 0:
        pytest.skip(
            f"no link speed for {port.interface} in /sys (a container sees the host's /sys)"
        )
    gbps = int(speed.stdout.strip() or -1) / 1000
    if gbps < port.rate_gbps:
        fail(
            f"{port.interface}: {gbps:g} Gb/s, spec {port.rate_gbps:g}",
            "check the cable/transceiver and autonegotiation (ethtool)",
        )
