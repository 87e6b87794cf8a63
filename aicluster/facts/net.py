"""Network facts: interfaces and their addresses (`ip -j`), and PCIe ACS state (`lspci -vvv`).

NCCL_SOCKET_IFNAME, GLOO_SOCKET_IFNAME and VLLM_HOST_IP must name the interface and the address
that really sit on the data network. Interface names differ from host to host (eth0, enp1s0f0np0,
bond0, net1 inside a pod), so they are read from the host and matched by address, never guessed
from a name. ACS (PCIe Access Control Services) enabled on a bridge between a GPU and a NIC, or
between two GPUs, redirects peer-to-peer traffic up to the root complex: GPUDirect RDMA and P2P
then fail or crawl, which is why the bridges that have it enabled are reported.

Every parser accepts the raw output or a capture file (`$ command`, the output, `[exit N]`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from ipaddress import ip_address, ip_network
from typing import Any

from pyinfra.api.facts import FactBase

from aicluster.facts import ParseError, Parser, command_output, process_with, quote_line

# --- ip -j addr / ip -j link -----------------------------------------------------------------------


def _int_field(entry: Mapping[str, Any], key: str, what: str, index: int) -> int:
    value = entry.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ParseError(f"{what}: interface #{index} has no whole-number {key!r}")
    return value


def _addresses(entry: Mapping[str, Any], name: str, what: str) -> list[dict[str, Any]]:
    info = entry.get("addr_info", [])
    if not isinstance(info, list):
        raise ParseError(f"{what}: 'addr_info' of {name!r} is not a list")
    addresses = []
    for item in info:
        if not isinstance(item, dict):
            raise ParseError(f"{what}: an address of {name!r} is not an object")
        # `ip` prints {} for addresses a filter (-4, -6, scope) left out.
        if "local" not in item:
            continue
        family, local, prefixlen = item.get("family"), item.get("local"), item.get("prefixlen")
        if not isinstance(family, str) or not isinstance(local, str):
            raise ParseError(f"{what}: an address of {name!r} lacks 'family' or 'local'")
        if not isinstance(prefixlen, int) or isinstance(prefixlen, bool):
            raise ParseError(
                f"{what}: {quote_line(local)} on {name!r} has no whole-number 'prefixlen'"
            )
        if family in ("inet", "inet6"):
            try:
                ip_address(local)
            except ValueError:
                raise ParseError(
                    f"{what}: {quote_line(local)} on {name!r} is not an IP address"
                ) from None
        scope = item.get("scope")
        addresses.append(
            {
                "family": family,
                "local": local,
                "prefixlen": prefixlen,
                "scope": scope if isinstance(scope, str) else None,
            }
        )
    return addresses


def _interfaces(text: str, what: str, with_addresses: bool) -> list[dict[str, Any]]:
    body = command_output(text).strip()
    if not body:
        raise ParseError(f"{what}: empty output (every host has at least 'lo')")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as error:
        detail = (
            f"{error.msg} at line {error.lineno} column {error.colno}"
            if isinstance(error, json.JSONDecodeError)
            else "nested too deeply"
        )
        raise ParseError(f"{what}: not complete JSON ({detail}); truncated?") from None
    if not isinstance(data, list):
        raise ParseError(f"{what}: expected a JSON list of interfaces, got {type(data).__name__}")
    interfaces = []
    for index, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise ParseError(f"{what}: interface #{index} is not an object")
        name = entry.get("ifname")
        if not isinstance(name, str) or not name:
            raise ParseError(f"{what}: interface #{index} has no 'ifname'")
        flags = entry.get("flags", [])
        altnames = entry.get("altnames", [])
        mac, master = entry.get("address"), entry.get("master")
        interface: dict[str, Any] = {
            "name": name,
            "ifindex": _int_field(entry, "ifindex", what, index),
            "mtu": _int_field(entry, "mtu", what, index),
            "state": str(entry.get("operstate", "UNKNOWN")),
            "flags": [str(flag) for flag in flags] if isinstance(flags, list) else [],
            "mac": mac if isinstance(mac, str) else None,
            "link_type": str(entry.get("link_type", "")) or None,
            "master": master if isinstance(master, str) else None,
            "altnames": [str(alt) for alt in altnames] if isinstance(altnames, list) else [],
        }
        if with_addresses:
            interface["addresses"] = _addresses(entry, name, what)
        interfaces.append(interface)
    return interfaces


def parse_ip_addr(text: str) -> dict[str, Any]:
    """`ip -j addr`: every interface with its MTU, state, MAC and addresses."""
    return {"interfaces": _interfaces(text, "ip -j addr", with_addresses=True)}


def parse_ip_link(text: str) -> dict[str, Any]:
    """`ip -j link`: every interface with its MTU, state and MAC (no addresses in this output)."""
    return {"interfaces": _interfaces(text, "ip -j link", with_addresses=False)}


def interface_for_address(interfaces: Iterable[Mapping[str, Any]], address: str) -> str | None:
    """The interface that holds `address` (parsed `ip -j addr` interfaces), or None.

    Addresses compare as addresses, so "fd00:0::2" finds "fd00::2". An address held by two
    interfaces is refused with ValueError rather than one of them picked: the caller must name the
    interface. A string that is not an IP address raises ValueError too.
    """
    wanted = ip_address(address)
    holders: list[str] = []
    for interface in interfaces:
        for held in interface.get("addresses", []):
            if held.get("family") not in ("inet", "inet6"):
                continue
            if ip_address(held["local"]) == wanted and interface["name"] not in holders:
                holders.append(interface["name"])
    if len(holders) > 1:
        raise ValueError(
            f"{address} is held by several interfaces ({', '.join(holders)}); name the interface"
        )
    return holders[0] if holders else None


def addresses_in_network(
    interfaces: Iterable[Mapping[str, Any]], network: str
) -> list[dict[str, str]]:
    """Every (interface, address) inside `network` (a CIDR such as the spec's data_network)."""
    wanted = ip_network(network, strict=False)
    found = []
    for interface in interfaces:
        for held in interface.get("addresses", []):
            if held.get("family") not in ("inet", "inet6"):
                continue
            local = ip_address(held["local"])
            if local.version == wanted.version and local in wanted:
                found.append({"interface": interface["name"], "address": held["local"]})
    return found


# --- lspci -vvv: ACS --------------------------------------------------------------------------------

_SLOT = re.compile(
    r"^(?P<slot>(?:[0-9a-fA-F]{4,}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7])\s+"
    r"(?P<cls>[^:]+):\s*(?P<description>.*)$"
)
_ACS_FLAG = re.compile(r"^(?P<name>[A-Za-z]+)(?P<on>[+-])$")


def parse_lspci_acs(text: str) -> dict[str, Any]:
    """`lspci -vvv` (as root): the devices with ACS, their ACSCtl bits, and which have any bit on.

    Without root lspci prints "Capabilities: <access denied>" and ACS cannot be seen: those
    devices are listed under "access_denied" so that nobody reads an empty list as "no ACS".
    """
    devices: list[dict[str, Any]] = []
    denied: list[str] = []
    current: dict[str, Any] | None = None
    for number, line in enumerate(command_output(text).splitlines(), start=1):
        if not line.strip():
            continue
        if not line[0].isspace():
            # pcilib prints warnings (VPD read failures and the like) between devices.
            if line.startswith("pcilib:"):
                continue
            header = _SLOT.match(line)
            if header is None:
                raise ParseError(
                    f"lspci -vvv: line {number} is not a device header: {quote_line(line)}"
                )
            current = {
                "slot": header.group("slot"),
                "class": header.group("cls").strip(),
                "description": header.group("description").strip(),
            }
            continue
        if current is None:
            raise ParseError(
                f"lspci -vvv: line {number} comes before any device: {quote_line(line)}"
            )
        field = line.strip()
        if field == "Capabilities: <access denied>":
            denied.append(current["slot"])
        elif field.startswith("ACSCtl:"):
            control = {}
            for token in field.removeprefix("ACSCtl:").split():
                flag = _ACS_FLAG.match(token)
                if flag is None:
                    raise ParseError(
                        f"lspci -vvv: line {number}: {quote_line(token)} is not an ACS bit"
                    )
                control[flag.group("name")] = flag.group("on") == "+"
            if not control:
                raise ParseError(f"lspci -vvv: line {number}: ACSCtl lists no bits")
            devices.append(
                {**current, "acs_control": control, "acs_enabled": any(control.values())}
            )
    return {
        "acs_devices": devices,
        "acs_enabled": [device["slot"] for device in devices if device["acs_enabled"]],
        "access_denied": denied,
    }


# --- pyinfra facts ----------------------------------------------------------------------------------


class IpAddr(FactBase[dict[str, Any]]):
    """Interfaces with addresses, for choosing NCCL/Gloo interfaces and VLLM_HOST_IP by address."""

    def command(self) -> str:
        return "ip -j addr"

    def requires_command(self, *args: Any, **kwargs: Any) -> str:
        return "ip"

    @staticmethod
    def default() -> dict[str, Any]:
        return {"interfaces": []}

    @staticmethod
    def process(output: list[str]) -> dict[str, Any]:
        return process_with(parse_ip_addr, output)


class IpLink(FactBase[dict[str, Any]]):
    """Interfaces with MTU and state, for the data network's jumbo-frame and link checks."""

    def command(self) -> str:
        return "ip -j link"

    def requires_command(self, *args: Any, **kwargs: Any) -> str:
        return "ip"

    @staticmethod
    def default() -> dict[str, Any]:
        return {"interfaces": []}

    @staticmethod
    def process(output: list[str]) -> dict[str, Any]:
        return process_with(parse_ip_link, output)


class PcieAcs(FactBase[dict[str, Any]]):
    """ACS state of every PCIe device that has it. Run it with sudo: lspci hides it from users."""

    def command(self) -> str:
        return "lspci -vvv"

    def requires_command(self, *args: Any, **kwargs: Any) -> str:
        return "lspci"

    @staticmethod
    def default() -> dict[str, Any]:
        return {"acs_devices": [], "acs_enabled": [], "access_denied": []}

    @staticmethod
    def process(output: list[str]) -> dict[str, Any]:
        return process_with(parse_lspci_acs, output)


PARSE_KINDS: dict[str, Parser] = {
    "ip-addr": parse_ip_addr,
    "ip-link": parse_ip_link,
    "lspci-acs": parse_lspci_acs,
}
