"""macOS facts of an Exo node: the OS build, Thunderbolt ports and their peers, the Thunderbolt
Bridge, RDMA over Thunderbolt, and the chip with its unified memory.

Mac clusters break in ways a Linux node does not: the default Thunderbolt Bridge joins every
Thunderbolt port into one Ethernet hub (loops between three or more Macs, DHCP on link-local
addresses), RDMA over Thunderbolt is switched on only from Recovery (`rdma_ctl enable`) and even
then needs Thunderbolt 5 to list any `rdma_en*` device, and nodes on different macOS builds fail
in MLX in ways that are hard to trace. Each command here is read by a pure parser tested on real
outputs (tests/fixtures/macos/PROVENANCE.md).

Every parser accepts the raw output or a capture file (`$ command`, the output, `[exit N]`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from pyinfra.api.facts import FactBase

from aicluster.facts import ParseError, Parser, command_output, process_with, quote_line

THUNDERBOLT_BRIDGE = "Thunderbolt Bridge"
BRIDGE = "bridge0"

# --- sw_vers ---------------------------------------------------------------------------------------

_SW_VERS_KEYS = {
    "ProductName": "product_name",
    "ProductVersion": "version",
    "BuildVersion": "build",
}


def parse_sw_vers(text: str) -> dict[str, Any]:
    """`sw_vers` → {"product_name", "version", "build"} (build: 25B78, the exact macOS build)."""
    found: dict[str, str] = {}
    for line in command_output(text).splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep or key.strip() not in _SW_VERS_KEYS:
            # macOS 26 adds ProductVersionExtra on Rapid Security Responses: read, not needed.
            if sep and re.fullmatch(r"Product\w+|Build\w+", key.strip()):
                continue
            raise ParseError(f"sw_vers: unexpected line {quote_line(line)}")
        found[_SW_VERS_KEYS[key.strip()]] = value.strip()
    missing = [key for key, name in _SW_VERS_KEYS.items() if not found.get(name)]
    if missing:
        raise ParseError(f"sw_vers: no {', '.join(missing)} line")
    return found


# --- networksetup -listallhardwareports -----------------------------------------------------------


def parse_hardware_ports(text: str) -> dict[str, Any]:
    """`networksetup -listallhardwareports` → {"ports": [{"port", "device", "ethernet_address"}]}.

    Each port is a "Hardware Port:" line followed by its "Device:" line; the trailing "VLAN
    Configurations" section lists no port."""
    ports: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for line in command_output(text).splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("VLAN Configurations") or set(stripped) == {"="}:
            current = None
            continue
        key, sep, value = stripped.partition(":")
        if not sep:
            raise ParseError(f"networksetup: unexpected line {quote_line(line)}")
        value = value.strip()
        if key == "Hardware Port":
            current = {"port": value, "device": None, "ethernet_address": None}
            ports.append(current)
        elif current is None:
            raise ParseError(f"networksetup: {quote_line(line)} before any 'Hardware Port:' line")
        elif key == "Device":
            current["device"] = value
        elif key == "Ethernet Address":
            current["ethernet_address"] = value
    if not ports:
        raise ParseError("networksetup: no 'Hardware Port:' line")
    unnamed = [port["port"] for port in ports if not port["device"]]
    if unnamed:
        raise ParseError(f"networksetup: no Device line for {', '.join(unnamed)} (truncated?)")
    return {"ports": ports}


def thunderbolt_devices(ports: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Interface -> hardware port of each Thunderbolt port ("Thunderbolt 1"), bridge excluded."""
    return {
        port["device"]: port["port"]
        for port in ports
        if re.fullmatch(r"Thunderbolt \d+", port["port"])
    }


# --- system_profiler SPThunderboltDataType -json --------------------------------------------------


def _peer(item: Any) -> dict[str, Any] | None:
    """A Mac at the other end of a cable (it has a domain UUID); drives and docks have none."""
    if not isinstance(item, dict) or not isinstance(item.get("domain_uuid_key"), str):
        return None
    listed = item.get("services_title")
    services = (
        [s.get("_name") for s in listed if isinstance(s, dict)] if isinstance(listed, list) else []
    )
    return {
        "name": str(item.get("_name", "")),
        "model": str(item.get("device_name_key", "")),
        "domain_uuid": item["domain_uuid_key"],
        "ip_service": "service_ip" in services,
    }


def parse_thunderbolt(text: str) -> dict[str, Any]:
    """`system_profiler SPThunderboltDataType -json` → {"buses": [{"name", "domain_uuid",
    "receptacle", "speed", "connected", "peers": [{"name", "model", "domain_uuid",
    "ip_service"}]}]}: per Thunderbolt bus (one per port), the Macs cabled to it."""
    try:
        data = json.loads(command_output(text))
    except json.JSONDecodeError as error:
        raise ParseError(
            f"system_profiler: not JSON ({error.msg} at line {error.lineno})"
        ) from None
    buses = data.get("SPThunderboltDataType") if isinstance(data, dict) else None
    if not isinstance(buses, list):
        raise ParseError("system_profiler: no SPThunderboltDataType list")
    result = []
    for index, bus in enumerate(buses):
        if not isinstance(bus, dict) or not isinstance(bus.get("_name"), str):
            raise ParseError(f"system_profiler: bus {index} has no _name")
        tag = bus.get("receptacle_1_tag")
        tag = tag if isinstance(tag, dict) else {}
        items = bus.get("_items")
        peers = [p for p in map(_peer, items if isinstance(items, list) else []) if p]
        result.append(
            {
                "name": bus["_name"],
                "domain_uuid": bus.get("domain_uuid_key"),
                "receptacle": tag.get("receptacle_id_key"),
                "speed": tag.get("current_speed_key"),
                "connected": tag.get("receptacle_status_key") == "receptacle_connected",
                "peers": peers,
            }
        )
    return {"buses": result}


def thunderbolt_links(buses: list[dict[str, Any]]) -> dict[str, str]:
    """This Mac's bus domain UUID -> the domain UUID of the Mac cabled to it."""
    return {
        bus["domain_uuid"]: bus["peers"][0]["domain_uuid"]
        for bus in buses
        if bus["domain_uuid"] and bus["peers"]
    }


# --- rdma_ctl status ------------------------------------------------------------------------------


def parse_rdma_ctl(text: str) -> dict[str, Any]:
    """`rdma_ctl status` → {"enabled": bool}. The command prints one word."""
    words = command_output(text).split()
    if words == ["enabled"]:
        return {"enabled": True}
    if words == ["disabled"]:
        return {"enabled": False}
    first = command_output(text).strip().splitlines()[:1] or ["(empty)"]
    raise ParseError(f"rdma_ctl status: expected enabled or disabled, got {quote_line(first[0])}")


# --- ibv_devices ----------------------------------------------------------------------------------

_IBV_ROW = re.compile(r"^\s*(?P<name>\S+)\s+(?P<guid>[0-9a-f]{16})\s*$")


def parse_ibv_devices(text: str) -> dict[str, Any]:
    """`ibv_devices` → {"devices": [{"name", "node_guid"}]}; no output at all: no devices."""
    lines = [line for line in command_output(text).splitlines() if line.strip()]
    if not lines:
        return {"devices": []}
    if lines[0].split() != ["device", "node", "GUID"]:
        raise ParseError(
            f"ibv_devices: expected the header 'device node GUID', got {quote_line(lines[0])}"
        )
    devices = []
    for line in lines[1:]:
        if set(line.strip()) <= {"-", " "}:
            continue
        row = _IBV_ROW.match(line)
        if row is None:
            raise ParseError(f"ibv_devices: unexpected line {quote_line(line)}")
        devices.append({"name": row["name"], "node_guid": row["guid"]})
    return {"devices": devices}


def thunderbolt_rdma_devices(devices: list[dict[str, Any]]) -> list[str]:
    """The RDMA-over-Thunderbolt devices (rdma_en2 pairs with the IP interface en2)."""
    return [d["name"] for d in devices if re.fullmatch(r"rdma_en\d+", d["name"])]


# --- ifconfig -------------------------------------------------------------------------------------

_IF_HEAD = re.compile(
    r"^(?P<name>[A-Za-z0-9._-]+): flags=[0-9a-f]+<(?P<flags>[^>]*)> mtu (?P<mtu>\d+)"
)
_INET = re.compile(r"^inet (?P<address>[0-9.]+) netmask 0x(?P<mask>[0-9a-f]{8})")
_MEMBER = re.compile(r"^member: (?P<name>\S+) ")


def parse_ifconfig(text: str) -> dict[str, Any]:
    """`ifconfig` → {"interfaces": {name: {"flags", "mtu", "inet": ["a.b.c.d/len"], "members",
    "status"}}}: members are a bridge's ports (bridge0 holds the Thunderbolt Bridge's)."""
    interfaces: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    for line in command_output(text).splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            head = _IF_HEAD.match(line)
            if head is None:
                raise ParseError(f"ifconfig: unexpected line {quote_line(line)}")
            current = {
                "flags": [f for f in head["flags"].split(",") if f],
                "mtu": int(head["mtu"]),
                "inet": [],
                "members": [],
                "status": None,
            }
            interfaces[head["name"]] = current
            continue
        if current is None:
            raise ParseError(f"ifconfig: {quote_line(line)} before any interface line")
        stripped = line.strip()
        if inet := _INET.match(stripped):
            try:
                length = IPv4Network(f"0.0.0.0/{IPv4Address(int(inet['mask'], 16))}").prefixlen
            except ValueError:
                raise ParseError(
                    f"ifconfig: netmask not contiguous in {quote_line(line)}"
                ) from None
            current["inet"].append(f"{inet['address']}/{length}")
        elif member := _MEMBER.match(stripped):
            current["members"].append(member["name"])
        elif stripped.startswith("status: "):
            current["status"] = stripped.removeprefix("status: ")
    if not interfaces:
        raise ParseError("ifconfig: no interface")
    return {"interfaces": interfaces}


# --- chip and unified memory ----------------------------------------------------------------------


def parse_chip_memory(text: str) -> dict[str, Any]:
    """`sysctl -n machdep.cpu.brand_string hw.memsize` → {"chip", "memory_bytes"}."""
    lines = [line.strip() for line in command_output(text).splitlines() if line.strip()]
    if len(lines) != 2 or not lines[1].isdigit():
        shown = quote_line(lines[0]) if lines else "(empty)"
        raise ParseError(f"sysctl: expected the chip then the memory in bytes, got {shown}")
    return {"chip": lines[0], "memory_bytes": int(lines[1])}


PARSE_KINDS: dict[str, Parser] = {
    "sw-vers": parse_sw_vers,
    "macos-ports": parse_hardware_ports,
    "thunderbolt": parse_thunderbolt,
    "rdma-ctl": parse_rdma_ctl,
    "ibv-devices": parse_ibv_devices,
    "ifconfig": parse_ifconfig,
    "chip-memory": parse_chip_memory,
}


class SwVers(FactBase[dict[str, Any]]):
    """The macOS version and build of the node."""

    def command(self) -> str:
        return "sw_vers"

    @staticmethod
    def process(output: list[str]) -> dict[str, Any]:
        return process_with(parse_sw_vers, output)


class HardwarePorts(FactBase[dict[str, Any]]):
    """The node's hardware network ports (Thunderbolt 1 → en1 …)."""

    def command(self) -> str:
        return "networksetup -listallhardwareports"

    @staticmethod
    def default() -> dict[str, Any]:
        return {"ports": []}

    @staticmethod
    def process(output: list[str]) -> dict[str, Any]:
        return process_with(parse_hardware_ports, output)


class ThunderboltPeers(FactBase[dict[str, Any]]):
    """The node's Thunderbolt buses and the Macs cabled to each."""

    def command(self) -> str:
        return "system_profiler SPThunderboltDataType -json"

    @staticmethod
    def default() -> dict[str, Any]:
        return {"buses": []}

    @staticmethod
    def process(output: list[str]) -> dict[str, Any]:
        return process_with(parse_thunderbolt, output)


class RdmaCtl(FactBase[dict[str, Any] | None]):
    """Whether RDMA over Thunderbolt is enabled (None: rdma_ctl missing, macOS before 26.2)."""

    def requires_command(self, *args: Any, **kwargs: Any) -> str:
        return "rdma_ctl"

    def command(self) -> str:
        return "rdma_ctl status"

    @staticmethod
    def process(output: list[str]) -> dict[str, Any]:
        return process_with(parse_rdma_ctl, output)


class IbvDevices(FactBase[dict[str, Any]]):
    """The node's RDMA devices (rdma_en* on a Mac with RDMA over Thunderbolt)."""

    def requires_command(self, *args: Any, **kwargs: Any) -> str:
        return "ibv_devices"

    def command(self) -> str:
        return "ibv_devices"

    @staticmethod
    def default() -> dict[str, Any]:
        return {"devices": []}

    @staticmethod
    def process(output: list[str]) -> dict[str, Any]:
        return process_with(parse_ibv_devices, output)


class Ifconfig(FactBase[dict[str, Any]]):
    """Every interface with its IPv4 addresses, bridge members and status."""

    def command(self) -> str:
        return "ifconfig"

    @staticmethod
    def process(output: list[str]) -> dict[str, Any]:
        return process_with(parse_ifconfig, output)


class ChipMemory(FactBase[dict[str, Any]]):
    """The Apple chip and its unified memory in bytes."""

    def command(self) -> str:
        return "sysctl -n machdep.cpu.brand_string hw.memsize"

    @staticmethod
    def process(output: list[str]) -> dict[str, Any]:
        return process_with(parse_chip_memory, output)
