"""Exo on Macs: what roles/mac_network and roles/exo decide from the spec and the node's facts.

- Thunderbolt networking (roles/mac_network): macOS bridges every Thunderbolt port into the
  "Thunderbolt Bridge" (bridge0) by default, a hub that loops frames once three Macs are cabled in
  a ring and hands out link-local addresses that change with every replug. Each cable instead gets
  its own network service on its own port with a static /30 from ClusterSpec.cables() (the same
  cables and addresses as Linux nodes get), persisted by networksetup in the system preferences.
  The facts say what is already so (ifconfig), and only what differs is changed.
- Exo (roles/exo): one LaunchDaemon running Exo in the foreground, its environment from the spec:
  one discovery namespace for the whole cluster (Exo otherwise derives it from its version, so
  nodes on two versions silently never meet), the models directory, offline mode, and a HOME of
  its own on each node where Exo creates its node identity (never copied between Macs: two nodes
  with one identity are one node to Exo).
- Exo's API and discovery ports have no authentication: a pf anchor passes them from the cluster's
  networks only.
- RDMA over Thunderbolt can only be switched on from Recovery: the deploy reports the steps per
  node and goes on over TCP.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aicluster.facts.macos import BRIDGE, THUNDERBOLT_BRIDGE, thunderbolt_devices
from aicluster.spec import Cable, ClusterSpec, Node

LABEL = "org.aicluster.exo"
PLIST = f"/Library/LaunchDaemons/{LABEL}.plist"
PREFIX = "/opt/aicluster/exo"
HOME = f"{PREFIX}/home"
"""Exo's HOME on the node: its node identity (~/.exo) is created here by Exo itself."""
LOG = "/var/log/aicluster-exo.log"
APP = "/Applications/EXO.app"
APP_EXO = f"{APP}/Contents/Resources/exo/exo"
REPOSITORY = "https://github.com/exo-explore/exo"
PF_ANCHOR = "org.aicluster.exo"
PF_ANCHOR_FILE = f"/etc/pf.anchors/{PF_ANCHOR}"
PF_CONF = "/etc/pf.conf"
PF_CONF_LINES = (
    f'anchor "{PF_ANCHOR}"',
    f'load anchor "{PF_ANCHOR}" from "{PF_ANCHOR_FILE}"',
)
DISCOVERY_PORT = 52413
LIBP2P_PORT = 52414
LAST_LIBP2P_RELEASE = (1, 0, 71)
"""Exo releases up to v1.0.71 read EXO_LIBP2P_NAMESPACE; later ones (zenoh) refuse it and read
EXO_ZENOH_NAMESPACE (exo-explore/exo, src/exo/main.py)."""
NETMASK_30 = "255.255.255.252"
SERVICE_PREFIX = "aicluster"


class ExoError(ValueError):
    """The nodes' facts contradict the spec; the message names the node and what to do."""


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(
        int(part) for part in version.split("+")[0].split("-")[0].split(".") if part.isdigit()
    )


def namespace(spec: ClusterSpec) -> str:
    return spec.exo.namespace or spec.cluster.name


def namespace_variable(version: str) -> str:
    if version_tuple(version) <= LAST_LIBP2P_RELEASE:
        return "EXO_LIBP2P_NAMESPACE"
    return "EXO_ZENOH_NAMESPACE"


def pinned_version(spec: ClusterSpec) -> str:
    version = spec.serving.versions.exo
    assert version is not None  # the spec's rules pin it on an Exo cluster
    return version


def source_dir(spec: ClusterSpec) -> str:
    return f"{PREFIX}/exo-{pinned_version(spec)}"


def install_marker(spec: ClusterSpec) -> str:
    """Written last by the source install: its presence means this version is installed whole."""
    return f"{source_dir(spec)}/.aicluster-installed"


def program(spec: ClusterSpec) -> list[str]:
    """The command launchd runs, in the foreground."""
    if spec.exo.install == "app":
        return [APP_EXO]
    return [f"{source_dir(spec)}/.venv/bin/exo"]


def environment(spec: ClusterSpec) -> dict[str, str]:
    version = pinned_version(spec)
    env = {
        "HOME": HOME,
        namespace_variable(version): namespace(spec),
        "EXO_DEFAULT_MODELS_DIR": spec.exo.models_dir,
        "EXO_OFFLINE": "true" if spec.exo.offline else "false",
        "PATH": "/opt/homebrew/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
    }
    return env


def source_install(spec: ClusterSpec) -> str:
    """Shell that builds Exo v<version> from its tag with uv, then marks it installed."""
    version = pinned_version(spec)
    target = source_dir(spec)
    return (
        f"rm -rf {target} && git clone --quiet --depth 1 --branch v{version} {REPOSITORY} {target} "
        f"&& cd {target} && uv sync --frozen && touch {install_marker(spec)}"
    )


def api_ports(spec: ClusterSpec) -> list[int]:
    return sorted({DISCOVERY_PORT, LIBP2P_PORT, spec.serving.api_port})


def pf_anchor(spec: ClusterSpec) -> str:
    """pf rules: Exo's ports from the cluster's networks and the node itself only."""
    networks = sorted({str(spec.cluster.management_network), str(spec.cluster.data_network)})
    ports = ", ".join(str(port) for port in api_ports(spec))
    return (
        "\n".join(
            [
                "# Written by aicluster (roles/exo): Exo's API and discovery have no authentication.",
                f"table <aicluster_exo_peers> const {{ {', '.join(networks)} }}",
                f"pass in quick on lo0 proto {{ tcp, udp }} to port {{ {ports} }}",
                f"pass in quick proto {{ tcp, udp }} from <aicluster_exo_peers> to port {{ {ports} }}",
                f"block in quick proto {{ tcp, udp }} to port {{ {ports} }}",
            ]
        )
        + "\n"
    )


def build_mismatch(builds: Mapping[str, str | None]) -> str | None:
    """Why the nodes' macOS builds differ, or None when they are one build."""
    known = {build for build in builds.values() if build}
    if len(known) < 2:
        return None
    shown = ", ".join(f"{node} {build or 'unknown'}" for node, build in builds.items())
    return (
        f"macOS builds differ: {shown}: update every node to one build (Software Update) "
        "before Exo joins them; MLX and RDMA over Thunderbolt change between builds"
    )


def recovery_steps(node: Node) -> str:
    """The manual steps that enable RDMA over Thunderbolt on a node (Apple TN3205)."""
    return (
        f"RDMA over Thunderbolt is off on {node.name}; it can only be enabled from macOS "
        f"Recovery, by hand: 1. shut {node.name} down, then hold the power button until "
        "'Loading startup options' and choose Options (Recovery); 2. Utilities > Terminal; "
        "3. run: rdma_ctl enable; 4. reboot into macOS; 5. check: rdma_ctl status (enabled) and "
        "ibv_devices (lists rdma_en*). Exo serves over TCP until then"
    )


def rdma_state(
    node: Node, rdma_ctl: Mapping[str, Any] | None, devices: Sequence[str]
) -> tuple[bool, str]:
    """(RDMA ready, what to say): off, enabled without devices, or ready with its devices."""
    if rdma_ctl is None:
        return False, (
            f"{node.name} has no rdma_ctl: RDMA over Thunderbolt needs macOS 26.2 or later. "
            "Exo serves over TCP"
        )
    if not rdma_ctl["enabled"]:
        return False, recovery_steps(node)
    if not devices:
        return False, (
            f"RDMA is enabled on {node.name} but ibv_devices lists no rdma_en* device: RDMA "
            "needs Thunderbolt 5 ports and cables. Exo serves over TCP"
        )
    return True, f"RDMA over Thunderbolt ready on {node.name}: {', '.join(devices)}"


# --- Thunderbolt networking -------------------------------------------------------------------


@dataclass(frozen=True)
class PortAddress:
    """A Thunderbolt port with its own network service and its cable's /30 address."""

    interface: str
    address: str
    peer: str

    @property
    def service(self) -> str:
        return f"{SERVICE_PREFIX} {self.interface}"


@dataclass(frozen=True)
class MacNetworkPlan:
    bridge_members: tuple[str, ...] = ()
    """Ports still in bridge0: the Thunderbolt Bridge must go."""
    bridge_service: bool = False
    """Whether the Thunderbolt Bridge's hardware port is still configured."""
    to_address: tuple[PortAddress, ...] = ()
    """Ports whose /30 address is not on them yet."""
    notes: tuple[str, ...] = ()


def _cable_address(node: Node, cable: Cable) -> PortAddress:
    here, there = cable.end_of(node.name), cable.other_end(node.name)
    return PortAddress(here.interface, str(here.address), there.node)


def plan_mac_network(
    spec: ClusterSpec,
    node: Node,
    ports: Sequence[Mapping[str, Any]],
    interfaces: Mapping[str, Mapping[str, Any]],
) -> MacNetworkPlan:
    """What the node's Thunderbolt networking lacks; ExoError when the spec names a port that is
    no Thunderbolt port of this Mac."""
    thunderbolt = thunderbolt_devices(ports)
    wanted = [_cable_address(node, c) for c in spec.cables() if c.joins(node.name)]
    unknown = [w.interface for w in wanted if w.interface not in thunderbolt]
    if unknown:
        listed = ", ".join(f"{dev} ({port})" for dev, port in thunderbolt.items()) or "none"
        raise ExoError(
            f"{node.name}: {', '.join(unknown)} is no Thunderbolt port of this Mac (its "
            f"Thunderbolt ports: {listed}): correct nodes.{node.name}.fabric"
        )
    members = tuple(interfaces.get(BRIDGE, {}).get("members", ()))
    bridge_service = any(p["port"] == THUNDERBOLT_BRIDGE for p in ports)
    missing = tuple(
        w
        for w in wanted
        if f"{w.address}/30" not in interfaces.get(w.interface, {}).get("inet", ())
    )
    notes = []
    if not members and not bridge_service:
        notes.append("the Thunderbolt Bridge is gone: no bridge0 to take apart")
    if not missing:
        notes.append(
            "every Thunderbolt cable has its /30: "
            + ", ".join(f"{w.interface} {w.address} (to {w.peer})" for w in wanted)
        )
    return MacNetworkPlan(members, bridge_service, missing, tuple(notes))


def bridge_removal(plan: MacNetworkPlan) -> list[str]:
    """Commands that take the Thunderbolt Bridge apart now and in the saved preferences."""
    commands = [f"ifconfig {BRIDGE} deletem {member}" for member in plan.bridge_members]
    if plan.bridge_service:
        commands += [
            f"networksetup -setnetworkserviceenabled '{THUNDERBOLT_BRIDGE}' off",
            "/usr/libexec/PlistBuddy -c 'Delete :VirtualNetworkInterfaces:Bridge:bridge0' "
            "/Library/Preferences/SystemConfiguration/preferences.plist",
        ]
    return commands


def port_address(port: PortAddress) -> list[str]:
    """Commands giving the port its own service with its static /30 (no DHCP), persisted."""
    service = f"'{port.service}'"
    return [
        f"networksetup -listallnetworkservices | grep -qx {service} || "
        f"networksetup -createnetworkservice {service} {port.interface}",
        f"networksetup -setmanual {service} {port.address} {NETMASK_30}",
    ]
