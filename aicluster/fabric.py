"""The data fabric of a node: RDMA packages, subnet manager, IPoIB and Thunderbolt addressing, port
MTUs and lossless RoCE QoS, decided from the spec and the node's facts.

How each setting is persisted, and why:

- Interfaces that only the fabric uses (IPoIB ports, Thunderbolt cables) get one systemd-networkd
  `.network` file each in /etc/systemd/network. networkd is part of systemd on Debian and Ubuntu
  alike (Ubuntu's netplan itself renders to it on servers), a file that matches one interface name
  leaves every other interface to the node's own network configuration (ifupdown, netplan,
  NetworkManager), it configures an interface whenever it appears (ib0 once ib_ipoib is loaded, a
  Thunderbolt cable plugged in after boot), and `RequiredForOnline=no` keeps a port that waits for
  its cable or its subnet manager from holding up network-online.target at boot.
- Interfaces the node's own configuration already owns (the Ethernet or RoCE port that holds the
  data address) only get their MTU, from a oneshot unit that runs once each port's device exists
  and before network-pre.target: a networkd file for them would take the whole interface over
  (networkd applies the first matching file only) and drop the addresses configured elsewhere.
- Lossless RoCE (NVIDIA's DSCP-based recipe, "Lossless RoCE Configuration for Linux Drivers in DSCP-
  Based QoS Mode"): trust DSCP, PFC on priority 3, ECN on priority 3, and the HCA's default traffic
  class 106 (DSCP 26, ECN-capable), which NVIDIA's drivers map to priority 3. The same oneshot
  applies it, only where mlnx_qos (MLNX_OFED/DOCA, which also provides the ecn/ and tc/ sysfs
  files) is installed. aicluster/nccl.py sets no NCCL_IB_TC, so NCCL's queue pairs take the HCA's
  default class and travel on the lossless priority too.
- A container's kernel modules, links, addresses and QoS belong to its host: only the RDMA user
  space (NCCL needs libibverbs and its providers) is installed there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aicluster import nccl
from aicluster.facts.net import interface_for_address
from aicluster.spec import LINUX, RDMA_FABRICS, Cable, ClusterSpec, FabricPort, Node

UNIT = "aicluster-fabric"
MODULES_FILE = "/etc/modules-load.d/aicluster-fabric.conf"
NETWORK_DIR = "/etc/systemd/network"
NETWORKD = "systemd-networkd"
SUBNET_MANAGER = "opensm"
IP = "/usr/sbin/ip"

# rdma-core: the verbs library and udev rules; ibverbs-providers: the mlx5/... user-space drivers
# NCCL loads; ibverbs-utils: ibv_devinfo; infiniband-diags: ibstat (roles/nccl and the checks
# read port states with it); perftest: ib_write_bw and friends for bandwidth tests.
RDMA_PACKAGES = ("rdma-core", "ibverbs-providers", "ibverbs-utils", "infiniband-diags", "perftest")
# Loaded now and at boot. ib_ipoib makes the IPoIB interfaces, ib_umad lets opensm and ibstat
# talk to the ports; thunderbolt_net makes a thunderboltN interface per host-to-host cable.
MODULES: Mapping[str, tuple[str, ...]] = {
    "infiniband": ("ib_ipoib", "ib_umad"),
    "thunderbolt": ("thunderbolt_net",),
}
LINK_LAYER = {"infiniband": "InfiniBand", "roce": "Ethernet"}

LOSSLESS_PRIORITY = 3
ROCE_TRAFFIC_CLASS = 106
"""DSCP 26 shifted past the two ECN bits, with ECN-capable transport set: (26 << 2) | 2."""


class FabricError(ValueError):
    """The node's facts contradict the spec; the message says what to fix on which node."""


@dataclass(frozen=True)
class NodeFacts:
    """What the fabric needs to know about a node before changing it."""

    container: str | None
    interfaces: Sequence[Mapping[str, Any]] = ()
    """Parsed `ip -j addr` interfaces."""
    rdma_devices: Sequence[Mapping[str, Any]] = ()
    """The "devices" of the /sys/class/infiniband dump (aicluster.facts.rdma.IbSysfs)."""
    mlnx_qos: str | None = None
    """Path of mlnx_qos on the node, None where it is not installed."""


@dataclass(frozen=True)
class Link:
    """An MTU the oneshot sets on an interface the node's own network configuration owns."""

    interface: str
    mtu: int

    @property
    def device_unit(self) -> str:
        """systemd's device unit of the interface (its name escaped as systemd-escape does)."""
        escaped = "".join(
            c
            if c.isascii() and (c.isalnum() or c == "_" or (c == "." and i))
            else f"\\x{ord(c):02x}"
            for i, c in enumerate(self.interface)
        )
        return f"sys-subsystem-net-devices-{escaped}.device"


@dataclass(frozen=True)
class Qos:
    """A RoCE port made lossless: its netdev and its RDMA device."""

    interface: str
    hca: str


@dataclass(frozen=True)
class NetworkFile:
    """The systemd-networkd file of an interface the fabric owns."""

    interface: str
    content: str

    @property
    def path(self) -> str:
        return f"{NETWORK_DIR}/60-aicluster-{self.interface}.network"


@dataclass(frozen=True)
class FabricPlan:
    packages: tuple[str, ...] = ()
    opensm: bool = False
    modules: tuple[str, ...] = ()
    network_files: tuple[NetworkFile, ...] = ()
    links: tuple[Link, ...] = ()
    qos: tuple[Qos, ...] = ()
    mlnx_qos: str | None = None
    notes: tuple[str, ...] = ()
    """Why something is left as it is, for the run's output."""

    @property
    def unit_needed(self) -> bool:
        return bool(self.links or self.qos)

    def modules_conf(self) -> str:
        return "# Written by aicluster (roles/fabric): loaded at boot.\n" + "".join(
            f"{module}\n" for module in self.modules
        )


def pfc_priorities() -> str:
    """mlnx_qos --pfc: one flag per priority 0-7, PFC on the lossless one only."""
    return ",".join("1" if p == LOSSLESS_PRIORITY else "0" for p in range(8))


def plan_fabric(spec: ClusterSpec, node: Node, facts: NodeFacts) -> FabricPlan:
    """What the node needs for the spec's fabric; FabricError when its facts contradict the spec."""
    kind = spec.cluster.fabric
    if node.os not in LINUX:
        return FabricPlan(notes=(f"{node.os}: the node's own system configures its ports",))
    packages = RDMA_PACKAGES if kind in RDMA_FABRICS else ()
    if facts.container:
        return FabricPlan(
            packages=packages,
            notes=(
                f"kernel modules, links, addresses and QoS of this {facts.container} container "
                "belong to its host: nothing set here",
            ),
        )
    if kind in RDMA_FABRICS:
        _check_rdma_devices(node, kind, facts.rdma_devices)
    links = tuple(Link(p.interface, p.mtu) for p in node.fabric if p.kind in ("ethernet", "roce"))
    notes: list[str] = []
    files: list[NetworkFile] = []
    opensm = False
    qos: tuple[Qos, ...] = ()
    if kind == "infiniband":
        ports = [port for port in node.fabric if port.kind == "infiniband"]
        _address_free(node, ports[0].interface, facts.interfaces)
        files = [
            NetworkFile(p.interface, ipoib_network(spec, node, p, i == 0))
            for i, p in enumerate(ports)
        ]
        opensm = spec.cluster.subnet_manager == "opensm"
        if not opensm:
            notes.append("the switch runs the subnet manager (cluster.subnet_manager): no opensm")
    elif kind == "thunderbolt":
        cables = [cable for cable in spec.cables() if cable.joins(node.name)]
        # The spec's rules put the data address on exactly one of the node's cable ends.
        holder = next(
            c.end_of(node.name) for c in cables if c.end_of(node.name).address == node.data_address
        )
        _address_free(node, holder.interface, facts.interfaces)
        files = [
            NetworkFile(cable.end_of(node.name).interface, cable_network(spec, node, cable))
            for cable in cables
        ]
    elif kind == "roce":
        if facts.mlnx_qos:
            qos = tuple(Qos(p.interface, p.hca) for p in node.fabric if p.kind == "roce" and p.hca)
        else:
            notes.append(
                "mlnx_qos is not installed (it comes with MLNX_OFED/DOCA): PFC, ECN and DSCP "
                "are left as they are; give the RoCE ports a lossless class on the NICs and switch"
            )
    if not links and not files:
        notes.append("no port with an MTU to set: the data interface keeps its own")
    return FabricPlan(
        packages=packages,
        opensm=opensm,
        modules=MODULES.get(kind, ()),
        network_files=tuple(files),
        links=links,
        qos=qos,
        mlnx_qos=facts.mlnx_qos if qos else None,
        notes=tuple(notes),
    )


def _header(what: str) -> list[str]:
    return [f"# Written by aicluster (roles/fabric): {what}.", "[Match]"]


def _link(port: FabricPort) -> list[str]:
    return [
        "",
        "[Link]",
        f"MTUBytes={port.mtu}",
        "# A port waiting for its cable or its subnet manager must not hold up boot.",
        "RequiredForOnline=no",
    ]


def ipoib_network(spec: ClusterSpec, node: Node, port: FabricPort, data: bool) -> str:
    """The networkd file of an IPoIB port; the data port holds the node's data address."""
    prefix = spec.cluster.data_network.prefixlen
    what = "IPoIB, the data address" if data else "IPoIB, RDMA traffic only"
    lines = [
        *_header(f"{what} ({port.hca})"),
        f"Name={port.interface}",
        *_link(port),
        "",
        "[Network]",
    ]
    if data:
        lines.append(f"Address={node.data_address}/{prefix}")
    lines.append("LinkLocalAddressing=no")
    return "\n".join(lines) + "\n"


def cable_network(spec: ClusterSpec, node: Node, cable: Cable) -> str:
    """The networkd file of a Thunderbolt cable: this end's /30 address, and a host route to the
    peer's data address over this cable when that address sits on another of the peer's cables."""
    here, there = cable.end_of(node.name), cable.other_end(node.name)
    port = next(p for p in node.fabric if p.interface == here.interface)
    peer = next(n for n in spec.nodes if n.name == there.node)
    lines = [
        *_header(f"Thunderbolt cable to {there.node} ({cable.network})"),
        f"Name={here.interface}",
        *_link(port),
        "",
        "[Network]",
        f"Address={here.address}/{cable.network.prefixlen}",
        "LinkLocalAddressing=no",
    ]
    if peer.data_address != there.address:
        lines += ["", "[Route]", f"Destination={peer.data_address}/32", f"Gateway={there.address}"]
    return "\n".join(lines) + "\n"


def _check_rdma_devices(node: Node, kind: str, devices: Sequence[Mapping[str, Any]]) -> None:
    """Every RDMA device of the spec exists with the fabric's link layer: an InfiniBand port named
    on a RoCE card (or the reverse) would pass every setting here and fail in NCCL."""
    layers = {d["name"]: {p["link_layer"] for p in d.get("ports", [])} for d in devices}
    wanted = LINK_LAYER[kind]
    problems = []
    for port in node.fabric:
        if port.kind != kind or port.hca is None:
            continue
        found = layers.get(port.hca)
        if found is None:
            listed = ", ".join(layers) or "no RDMA device"
            problems.append(f"{port.hca} is not in /sys/class/infiniband (it lists {listed})")
        elif wanted not in found:
            problems.append(f"{port.hca} is {'/'.join(sorted(found))}, not {wanted}")
    if problems:
        raise FabricError(
            f"{node.name}: {'; '.join(problems)}: correct the hca of nodes.{node.name}.fabric"
        )


def _address_free(node: Node, interface: str, interfaces: Sequence[Mapping[str, Any]]) -> None:
    """The data address is not held by another interface: two holders leave NCCL and Gloo to
    pick one (roles/nccl refuses), and the peers' traffic takes whichever route wins."""
    address = str(node.data_address)
    try:
        holder = interface_for_address(interfaces, address)
    except ValueError as error:
        raise FabricError(f"{node.name}: {error}") from None
    if holder is not None and holder != interface:
        raise FabricError(
            f"{node.name}: {address} is already on {holder}; the fabric puts it on {interface}: "
            f"remove it from {holder} or correct nodes.{node.name}.data_address"
        )


# --- the NCCL environment across nodes ----------------------------------------------------------

"""Written by roles/nccl on every node (aicluster/nccl.py), read by every service."""
TRANSPORT_KEYS = ("NCCL_IB_DISABLE", "NCCL_NET")
"""The transport NCCL picks: every node must make the same choice, or ranks cannot connect."""
ROCE_KEYS = ("NCCL_IB_GID_INDEX", "NCCL_IB_TC")
"""Identical nodes have identical GID tables and one lossless class: a node that differs speaks
RoCE v1 (or another address family) or sends on a lossy priority."""
HCA_KEY = "NCCL_IB_HCA"
P2P_KEY = "NCCL_P2P_DISABLE"

NcclEnvs = Mapping[str, Mapping[str, str]]
"""Node name -> the variables of its NCCL environment file."""


def parse_env_file(text: str) -> dict[str, str]:
    """KEY=value lines as render() in aicluster/nccl.py writes them; comments and blanks skipped."""
    env = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


def _differs(envs: NcclEnvs, key: str) -> str | None:
    values = {node: env.get(key) for node, env in envs.items()}
    if len(set(values.values())) < 2:
        return None
    shown = ", ".join(
        f"{node} {value if value is not None else 'unset'}" for node, value in values.items()
    )
    return f"{key} differs: {shown}"


def transport_disagreements(envs: NcclEnvs) -> list[str]:
    """Nodes that choose another NCCL transport than their peers: InfiniBand/RoCE on or off, the
    net plugin, or NCCL_IB_HCA set on some nodes and not on others (those fall back to TCP)."""
    problems = [problem for key in TRANSPORT_KEYS if (problem := _differs(envs, key))]
    with_hca = [node for node, env in envs.items() if HCA_KEY in env]
    without = [node for node in envs if node not in with_hca]
    if with_hca and without:
        problems.append(f"{HCA_KEY} set on {', '.join(with_hca)} but not on {', '.join(without)}")
    return problems


def roce_disagreements(envs: NcclEnvs) -> list[str]:
    """Nodes whose RoCE GID index or traffic class differs from their peers' (see ROCE_KEYS)."""
    return [problem for key in ROCE_KEYS if (problem := _differs(envs, key))]


def p2p_mismatches(spec: ClusterSpec, envs: NcclEnvs) -> list[str]:
    """NCCL_P2P_DISABLE on exactly the nodes with GeForce cards on PCIe: missing there, NCCL hangs
    on peer-to-peer; anywhere else it throws away NVLink or working PCIe P2P."""
    problems = []
    for node in spec.nodes:
        env = envs.get(node.name)
        if env is None:
            continue
        # The rule roles/nccl writes by, so the check and the file can never disagree on it.
        wanted = nccl._needs_p2p_disabled(node)
        if wanted and env.get(P2P_KEY) != "1":
            problems.append(f"{node.name}: GeForce GPUs on PCIe but {P2P_KEY} is not 1")
        elif not wanted and P2P_KEY in env:
            problems.append(f"{node.name}: {P2P_KEY}={env[P2P_KEY]} without GeForce GPUs on PCIe")
    return problems
