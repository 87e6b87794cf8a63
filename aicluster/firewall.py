"""The node firewall: cluster ports open to the cluster's own nodes only, the API to allowed networks.

aicluster owns one nftables table, `inet aicluster`, and replaces it whole (atomically) on every
change; rules of other tables are left alone. From outside the cluster: nothing reaches the data
interface, and Ray's, NCCL/Gloo's and vLLM's internal ports are dropped whatever the interface
(torch's TCPStore listens on every address, whatever --master-addr says).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
    summarize_address_range,
)
from typing import Any, TypeVar

from aicluster import ports
from aicluster.spec import ClusterSpec

TABLE = "aicluster"
RULES_FILE = "/etc/aicluster/firewall.nft"
UNIT = "aicluster-firewall"


def cluster_ports() -> list[str]:
    """Every port only cluster nodes may reach, as nftables set elements."""
    singles = sorted({*ports.RAY_PORTS, ports.VLLM_MASTER})
    ranges = [ports.RAY_WORKER_PORTS, ports.INTERNAL_RANGE]
    return [str(port) for port in singles] + [f"{low}-{high}" for low, high in ranges]


def _elements(values: list[str]) -> str:
    return ", ".join(values)


def ruleset(spec: ClusterSpec, data_interface: str) -> str:
    """The whole `inet aicluster` table for one node, as `nft -f` reads it."""
    nodes: list[IPv4Address | IPv6Address] = []
    for node in spec.nodes:
        nodes.append(node.data_address)
    allowed = spec.serving.api_allowed_networks or [spec.cluster.management_network]
    v4 = sorted({str(a) for a in nodes if isinstance(a, IPv4Address)})
    v6 = sorted({str(a) for a in nodes if isinstance(a, IPv6Address)})
    api_v4 = sorted({str(n) for n in allowed if isinstance(n, IPv4Network)})
    api_v6 = sorted({str(n) for n in allowed if isinstance(n, IPv6Network)})
    api = spec.serving.api_port
    lines = [
        f"# Written by aicluster (roles/firewall) for cluster {spec.cluster.name}. Replaced whole on change.",
        f"table inet {TABLE} {{}}",
        f"delete table inet {TABLE}",
        f"table inet {TABLE} {{",
    ]
    if v4:
        lines.append(f"  set cluster_v4 {{ type ipv4_addr; elements = {{ {_elements(v4)} }} }}")
    if v6:
        lines.append(f"  set cluster_v6 {{ type ipv6_addr; elements = {{ {_elements(v6)} }} }}")
    if api_v4:
        lines.append(
            f"  set api_v4 {{ type ipv4_addr; flags interval; elements = {{ {_elements(api_v4)} }} }}"
        )
    if api_v6:
        lines.append(
            f"  set api_v6 {{ type ipv6_addr; flags interval; elements = {{ {_elements(api_v6)} }} }}"
        )
    lines += [
        f"  set cluster_ports {{ type inet_service; flags interval; elements = {{ {_elements(cluster_ports())} }} }}",
        "  chain input {",
        "    type filter hook input priority filter - 10; policy accept;",
        "    ct state established,related accept",
        '    iif "lo" accept',
        "    meta l4proto ipv6-icmp accept  # neighbour discovery must keep working",
    ]
    if v4:
        lines.append("    ip saddr @cluster_v4 accept")
    if v6:
        lines.append("    ip6 saddr @cluster_v6 accept")
    if api_v4:
        lines.append(f"    tcp dport {api} ip saddr @api_v4 accept")
    if api_v6:
        lines.append(f"    tcp dport {api} ip6 saddr @api_v6 accept")
    lines += [
        f"    tcp dport {api} drop",
        f'    iifname "{data_interface}" drop  # the data network belongs to the cluster',
    ]
    if v4:
        lines.append(
            "    ip daddr @cluster_v4 drop  # data addresses, whatever interface it came in on"
        )
    if v6:
        lines.append("    ip6 daddr @cluster_v6 drop")
    lines += [
        "    meta l4proto { tcp, udp } th dport @cluster_ports drop",
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


# --- reading a ruleset back: which cluster ports would a packet from outside reach? -------------

T = TypeVar("T")
Verdict = bool | None  # True: matches every outside packet; False: none; None: some


def _flattened(value: Any, leaf: Callable[[Any], list[T] | None]) -> list[T] | None:
    """The leaves of an nft JSON value, an anonymous or named set of them flattened; None when a
    leaf is not of the kind `leaf` reads."""
    if isinstance(value, dict) and "set" in value:
        found: list[T] = []
        for element in value["set"]:
            part = _flattened(element, leaf)
            if part is None:
                return None
            found += part
        return found
    return leaf(value)


def _port_range(value: Any) -> list[tuple[int, int]] | None:
    if isinstance(value, int):
        return [(value, value)]
    if isinstance(value, dict) and "range" in value:
        low, high = value["range"]
        return [(int(low), int(high))]
    return None


def _network(value: Any) -> list[IPv4Network | IPv6Network] | None:
    if isinstance(value, str):
        try:
            return [ip_network(value)]
        except ValueError:
            return None
    if isinstance(value, dict) and "prefix" in value:
        return [ip_network(f"{value['prefix']['addr']}/{value['prefix']['len']}", strict=False)]
    if isinstance(value, dict) and "range" in value:
        low, high = (ip_address(v) for v in value["range"])
        return list(summarize_address_range(low, high))
    return None


class _Table:
    def __init__(self, nft: dict[str, Any], cluster: set[str]) -> None:
        self.cluster = cluster
        self.sets: dict[str, Any] = {}
        self.chains: list[dict[str, Any]] = []
        self.rules: dict[str, list[dict[str, Any]]] = {}
        for entry in nft.get("nftables", []):
            if "set" in entry:
                self.sets[entry["set"]["name"]] = {"set": entry["set"].get("elem", [])}
            elif "chain" in entry:
                self.chains.append(entry["chain"])
            elif "rule" in entry:
                self.rules.setdefault(entry["rule"]["chain"], []).append(entry["rule"])

    def value(self, right: Any) -> Any:
        if isinstance(right, str) and right.startswith("@"):
            return self.sets.get(right[1:], {"set": []})
        return right

    def match(self, expression: dict[str, Any], port: int) -> Verdict:
        op, left, right = expression["op"], expression["left"], self.value(expression["right"])
        verdict = self._positive(left, right, port)
        if op == "!=" and verdict is not None:
            return not verdict
        if op not in ("==", "in", "!="):
            return None
        return verdict

    def _positive(self, left: Any, right: Any, port: int) -> Verdict:
        if not isinstance(left, dict):
            return None
        if "ct" in left and left["ct"].get("key") == "state":
            states = (
                right
                if isinstance(right, list)
                else right.get("set", [right])
                if isinstance(right, dict)
                else [right]
            )
            return "new" in states
        if "meta" in left and left["meta"].get("key") in ("iif", "iifname"):
            names = right.get("set", []) if isinstance(right, dict) else [right]
            return False if names == ["lo"] else None
        if "meta" in left and left["meta"].get("key") == "l4proto":
            protocols = right.get("set", []) if isinstance(right, dict) else [right]
            return "tcp" in protocols
        if "payload" in left:
            field = left["payload"].get("field")
            if field == "dport":
                ranges = _flattened(right, _port_range)
                return None if ranges is None else any(low <= port <= high for low, high in ranges)
            if field == "saddr":
                networks = _flattened(right, _network)
                if networks is None:
                    return None
                outside = [n for n in networks if not self._within_cluster(n)]
                return None if outside else False
        return None

    def _within_cluster(self, network: IPv4Network | IPv6Network) -> bool:
        return network.num_addresses == 1 and str(network.network_address) in self.cluster


def _describe(rule: dict[str, Any]) -> str:
    parts = []
    for expression in rule.get("expr", []):
        if "match" in expression:
            match = expression["match"]
            left = match["left"]
            key = (
                f"{left['payload']['protocol']} {left['payload']['field']}"
                if isinstance(left, dict) and "payload" in left
                else " ".join(f"{k} {v.get('key', '')}".strip() for k, v in left.items())
                if isinstance(left, dict)
                else str(left)
            )
            op = "" if match["op"] in ("==", "in") else f"{match['op']} "
            right = match["right"]
            parts.append(
                f"{key} {op}{right if isinstance(right, str | int) else json.dumps(right)}"
            )
        else:
            parts.extend(expression.keys())
    return " ".join(parts)


def exposed_ports(nft: dict[str, Any], spec: ClusterSpec) -> list[str]:
    """Cluster ports a new TCP connection from outside the cluster would reach, each with the rule
    (or policy) that lets it in, read from `nft -j list table inet aicluster` of one node.

    Conservative: a rule the reader cannot fully evaluate counts as letting the packet in when it
    accepts, and as not stopping it when it drops. Other tables cannot re-open what this one drops
    (nftables drops a packet that any base chain drops)."""
    table = _Table(nft, {str(node.data_address) for node in spec.nodes})
    inputs = [c for c in table.chains if c.get("hook") == "input" and c.get("type") == "filter"]
    if not inputs:
        return ["every cluster port: no input chain in table inet aicluster (firewall not loaded)"]
    probes = sorted(
        {*ports.RAY_PORTS, ports.VLLM_MASTER, *ports.RAY_WORKER_PORTS, *ports.INTERNAL_RANGE}
    )
    exposed = []
    for port in probes:
        for chain in inputs:
            reason = _walk(
                table, table.rules.get(chain["name"], []), chain.get("policy", "accept"), port
            )
            if reason:
                exposed.append(f"{port}/tcp ({reason})")
                break
    return exposed


def _walk(table: _Table, rules: list[dict[str, Any]], policy: str, port: int) -> str | None:
    for rule in rules:
        expressions = rule.get("expr", [])
        verdicts = [table.match(e["match"], port) for e in expressions if "match" in e]
        if any(v is False for v in verdicts):
            continue
        certain = all(v is True for v in verdicts)
        keys = {key for e in expressions for key in e}
        if keys & {"accept", "jump", "goto"}:
            return f"rule: {_describe(rule)}"
        if keys & {"drop", "reject"} and certain:
            return None
    return None if policy == "drop" else "no rule drops it; chain policy accept"
