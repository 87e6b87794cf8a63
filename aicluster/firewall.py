"""The node firewall: cluster ports open to the cluster's own nodes only, the API to allowed networks.

aicluster owns one nftables table, `inet aicluster`, and replaces it whole (atomically) on every
change; rules of other tables are left alone. From outside the cluster: nothing reaches the data
interface, and Ray's, NCCL/Gloo's and vLLM's internal ports are dropped whatever the interface
(torch's TCPStore listens on every address, whatever --master-addr says).
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

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
