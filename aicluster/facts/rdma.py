"""RDMA facts: InfiniBand/RoCE adapters, port states and rates, and RoCE GID tables.

A multi-node vLLM/NCCL cluster is only as fast as its slowest port: a port Down, Polling (cable
in, no peer), Initializing (no subnet manager), at a lower rate than the fabric, or an RoCE port
used through the wrong GID index (NCCL_IB_GID_INDEX must point at the RoCE v2 GID of the data
network's IPv4 address) turns RDMA into TCP or into a hang. Four sources say this, each useful
where the others are missing: `ibstat` (infiniband-diags), `ibv_devinfo` (rdma-core), `show_gids`
(MLNX_OFED/DOCA) and sysfs, which every kernel with an RDMA driver has and needs no package.

Every parser accepts the raw output or a capture file (`$ command`, the output, `[exit N]`).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

from pyinfra.api.facts import FactBase

from aicluster.facts import ParseError, Parser, command_output, process_with, quote_line

# Runs the tool only when the kernel lists RDMA devices: without any, ibv_devinfo exits 1 ("No IB
# devices found") and pyinfra would fail the host, although "no RDMA" is a fine answer.
_IF_RDMA_DEVICES = 'if [ -n "$(ls -A /sys/class/infiniband 2>/dev/null)" ]; then {}; fi'

_NUMBER = re.compile(r"[0-9]+(\.[0-9]+)?")
_COUNT = re.compile(r"[0-9]+")
_GID = re.compile(r"[0-9a-f]{4}(:[0-9a-f]{4}){7}")
# GID table slots that hold nothing; show_gids skips them too.
_EMPTY_GIDS = ("0000:0000:0000:0000:0000:0000:0000:0000", "fe80:0000:0000:0000:0000:0000:0000:0000")


def _number(value: str) -> int | float | None:
    if not _NUMBER.fullmatch(value):
        return None
    number = float(value)
    return int(number) if number.is_integer() else number


def _gid_ipv4(gid: str) -> str | None:
    """The IPv4 address inside an IPv4-mapped GID (::ffff:a.b.c.d), as show_gids prints it."""
    if not gid.startswith("0000:0000:0000:0000:0000:ffff:"):
        return None
    mapped = IPv6Address(gid).ipv4_mapped
    return str(mapped) if mapped is not None else None


# --- ibstat -----------------------------------------------------------------------------------------

_CA = re.compile(r"^CA '(?P<name>[^']+)'$")
_PORT = re.compile(r"^Port (?P<number>[0-9]+):$")
_FIELD = re.compile(r"^(?P<key>[A-Za-z][A-Za-z ]*?):\s*(?P<value>.*)$")
_IBSTAT_ADAPTER = {
    "CA type": "ca_type",
    "Number of ports": "number_of_ports",
    "Firmware version": "firmware",
    "Hardware version": "hardware_version",
    "Node GUID": "node_guid",
    "System image GUID": "system_image_guid",
}
_IBSTAT_PORT = {
    "State": "state",
    "Physical state": "physical_state",
    "Rate": "rate_gbps",
    "Base lid": "base_lid",
    "LMC": "lmc",
    "SM lid": "sm_lid",
    "Capability mask": "capability_mask",
    "Port GUID": "port_guid",
    "Link layer": "link_layer",
}
_IBSTAT_PORT_REQUIRED = ("state", "physical_state", "rate_gbps", "base_lid", "sm_lid", "port_guid")


def _ibstat_port(raw: dict[str, str], adapter: str, number: int) -> dict[str, Any]:
    where = f"ibstat: port {number} of {adapter}"
    missing = [key for key in (*_IBSTAT_PORT_REQUIRED, "link_layer") if key not in raw]
    if missing:
        raise ParseError(f"{where} lacks {', '.join(missing)} (truncated output?)")
    rate = _number(raw["rate_gbps"])
    if rate is None:
        raise ParseError(f"{where}: rate {quote_line(raw['rate_gbps'])} is not a number")
    lids = {}
    for key in ("base_lid", "sm_lid"):
        if not _COUNT.fullmatch(raw[key]):
            raise ParseError(f"{where}: {key} {quote_line(raw[key])} is not a number")
        lids[key] = int(raw[key])
    return {
        "port": number,
        "state": raw["state"],
        "physical_state": raw["physical_state"],
        "rate_gbps": rate,
        "link_layer": raw["link_layer"],
        **lids,
        "port_guid": raw["port_guid"],
    }


def parse_ibstat(text: str) -> dict[str, Any]:
    """`ibstat` (no arguments): every adapter (CA) and every port of it.

    Empty output means no adapter. An `ibpanic:` line means ibstat stopped half way (a device
    vanished while it listed them): refused, since the listing is then incomplete.
    """
    adapters: list[dict[str, Any]] = []
    raw_ports: list[list[tuple[int, dict[str, str]]]] = []
    port: dict[str, str] | None = None
    for number, line in enumerate(command_output(text).splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("ibpanic:"):
            raise ParseError(f"ibstat stopped with an error: {quote_line(stripped)}")
        if ca := _CA.match(stripped):
            adapters.append({"name": ca.group("name")})
            raw_ports.append([])
            port = None
        elif header := _PORT.match(stripped):
            if not adapters:
                raise ParseError(f"ibstat: line {number} names a port before any CA")
            port = {}
            raw_ports[-1].append((int(header.group("number")), port))
        elif (field := _FIELD.match(stripped)) and adapters:
            key, value = field.group("key"), field.group("value").strip()
            if port is not None and key in _IBSTAT_PORT:
                port[_IBSTAT_PORT[key]] = value
            elif port is None and key in _IBSTAT_ADAPTER:
                adapters[-1][_IBSTAT_ADAPTER[key]] = value
            else:
                raise ParseError(
                    f"ibstat: unexpected field on line {number}: {quote_line(stripped)}"
                )
        else:
            raise ParseError(f"ibstat: line {number} is not ibstat output: {quote_line(stripped)}")
    result = []
    for adapter, ports in zip(adapters, raw_ports, strict=True):
        name = adapter["name"]
        declared = adapter.get("number_of_ports", "")
        if not _COUNT.fullmatch(declared):
            raise ParseError(f"ibstat: CA {name} has no 'Number of ports' (truncated output?)")
        if int(declared) != len(ports):
            raise ParseError(
                f"ibstat: CA {name} declares {declared} ports but lists {len(ports)} (truncated?)"
            )
        result.append(
            {
                "name": name,
                "ca_type": adapter.get("ca_type") or None,
                "firmware": adapter.get("firmware") or None,
                "node_guid": adapter.get("node_guid") or None,
                "ports": [_ibstat_port(raw, name, number) for number, raw in ports],
            }
        )
    return {"adapters": result}


# --- ibv_devinfo ------------------------------------------------------------------------------------

_IBV_DEVICE_KEYS = ("transport", "fw_ver", "node_guid", "phys_port_cnt")
_IBV_PORT_KEYS = ("state", "max_mtu", "active_mtu", "link_layer", "sm_lid", "port_lid")
_CODE_SUFFIX = re.compile(r"\s*\([0-9]+\)$")


def _without_code(value: str) -> str:
    """ "PORT_ACTIVE (4)" -> "PORT_ACTIVE": ibv_devinfo appends the enum value in parentheses."""
    return _CODE_SUFFIX.sub("", value)


def _ibv_port(raw: dict[str, str], device: str, number: int) -> dict[str, Any]:
    where = f"ibv_devinfo: port {number} of {device}"
    missing = [key for key in ("state", "max_mtu", "active_mtu", "link_layer") if key not in raw]
    if missing:
        raise ParseError(f"{where} lacks {', '.join(missing)} (truncated output?)")
    mtus = {}
    for key in ("max_mtu", "active_mtu"):
        mtu = _without_code(raw[key])
        if not _COUNT.fullmatch(mtu):
            raise ParseError(f"{where}: {key} {quote_line(raw[key])} is not a number of bytes")
        mtus[key] = int(mtu)
    return {
        "port": number,
        "state": _without_code(raw["state"]),
        "link_layer": raw["link_layer"],
        **mtus,
        "sm_lid": int(raw["sm_lid"]) if _COUNT.fullmatch(raw.get("sm_lid", "")) else None,
        "port_lid": int(raw["port_lid"]) if _COUNT.fullmatch(raw.get("port_lid", "")) else None,
    }


def parse_ibv_devinfo(text: str) -> dict[str, Any]:
    """`ibv_devinfo` (also `-v`): every device (hca_id) with its ports' state, MTU and link layer.

    `-v` adds capability lists and GID lines; they are read past, not interpreted (show_gids and
    the sysfs dump are the GID sources). "No IB devices found" alone means no device.
    """
    devices: list[dict[str, Any]] = []
    ports: list[list[tuple[int, dict[str, str]]]] = []
    port: dict[str, str] | None = None
    said_none = False
    for number, line in enumerate(command_output(text).splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped == "No IB devices found":
            said_none = True
            continue
        key, colon, value = stripped.partition(":")
        key, value = key.strip(), value.strip()
        if not colon:
            # -v prints flag lists and remarks ("tag matching not supported") on indented lines.
            if devices and line[0].isspace():
                continue
            raise ParseError(
                f"ibv_devinfo: line {number} is not ibv_devinfo output: {quote_line(line)}"
            )
        if key == "hca_id":
            if not value:
                raise ParseError(f"ibv_devinfo: line {number} has an empty hca_id")
            devices.append({"name": value})
            ports.append([])
            port = None
        elif not devices:
            raise ParseError(
                f"ibv_devinfo: expected 'hca_id:' first, line {number}: {quote_line(line)}"
            )
        elif key == "port":
            if not _COUNT.fullmatch(value):
                raise ParseError(
                    f"ibv_devinfo: line {number}: port {quote_line(value)} is not a number"
                )
            port = {}
            ports[-1].append((int(value), port))
        elif port is not None and key in _IBV_PORT_KEYS:
            port[key] = value
        elif port is None and key in _IBV_DEVICE_KEYS:
            devices[-1][key] = value
        # Anything else is a -v detail (max_qp, GID[  0], ...) and is read past.
    if said_none and devices:
        raise ParseError("ibv_devinfo: says 'No IB devices found' and lists devices")
    result = []
    for device, device_ports in zip(devices, ports, strict=True):
        name = device["name"]
        missing = [key for key in _IBV_DEVICE_KEYS if key not in device]
        if missing:
            raise ParseError(f"ibv_devinfo: {name} lacks {', '.join(missing)} (truncated output?)")
        if not _COUNT.fullmatch(device["phys_port_cnt"]):
            raise ParseError(f"ibv_devinfo: {name}: phys_port_cnt is not a number")
        if int(device["phys_port_cnt"]) != len(device_ports):
            raise ParseError(
                f"ibv_devinfo: {name} has phys_port_cnt {device['phys_port_cnt']} but lists "
                f"{len(device_ports)} ports (truncated?)"
            )
        result.append(
            {
                "name": name,
                "transport": _without_code(device["transport"]),
                "fw_ver": device["fw_ver"],
                "node_guid": device["node_guid"],
                "ports": [_ibv_port(raw, name, number) for number, raw in device_ports],
            }
        )
    return {"devices": result}


# --- show_gids --------------------------------------------------------------------------------------

_SHOW_GIDS_HEADER = ["DEV", "PORT", "INDEX", "GID", "IPv4", "VER", "DEV"]
_GID_COUNT = re.compile(r"n_gids_found=([0-9]+)")


def _is_ipv4(text: str) -> bool:
    try:
        return isinstance(ip_address(text), IPv4Address)
    except ValueError:
        return False


def _show_gids_row(line: str, number: int) -> dict[str, Any]:
    fields = line.split()
    where = f"show_gids: line {number}"
    if len(fields) < 5:
        raise ParseError(f"{where} has too few columns: {quote_line(line)}")
    device, port, index, gid, *rest = fields
    if not _COUNT.fullmatch(port) or not _COUNT.fullmatch(index):
        raise ParseError(f"{where}: PORT and INDEX must be numbers: {quote_line(line)}")
    if not _GID.fullmatch(gid):
        raise ParseError(f"{where}: {quote_line(gid)} is not a GID")
    ipv4 = rest.pop(0) if rest and _is_ipv4(rest[0]) else None
    if not rest or rest[0] not in ("v1", "v2"):
        raise ParseError(f"{where}: expected VER v1 or v2: {quote_line(line)}")
    version = rest.pop(0)
    netdev = rest.pop(0) if rest else None
    if rest:
        raise ParseError(f"{where} has extra columns: {quote_line(line)}")
    return {
        "device": device,
        "port": int(port),
        "index": int(index),
        "gid": gid,
        "ipv4": ipv4,
        "version": version,
        "netdev": netdev,
    }


def parse_show_gids(text: str) -> dict[str, Any]:
    """`show_gids`: the GID table of every RDMA port, one row per GID (empty slots are not shown).

    Columns are separated by tabs, or by spaces where someone's terminal expanded them; a row
    without an IPv4 address (link-local GID) or without a netdev (an InfiniBand port) is read by
    what its columns look like. The closing n_gids_found=N line must match the rows.
    """
    lines = [line for line in command_output(text).splitlines() if line.strip()]
    if not lines or lines[0].split() != _SHOW_GIDS_HEADER:
        raise ParseError("show_gids: expected the header 'DEV PORT INDEX GID IPv4 VER DEV'")
    rows = lines[1:]
    if rows and set(rows[0].replace("\t", "").replace(" ", "")) == {"-"}:
        rows = rows[1:]
    count = _GID_COUNT.fullmatch(rows[-1].strip()) if rows else None
    if count is None:
        raise ParseError("show_gids: no closing n_gids_found=N line (truncated output?)")
    gids = [_show_gids_row(line, number) for number, line in enumerate(rows[:-1], start=3)]
    if int(count.group(1)) != len(gids):
        raise ParseError(f"show_gids: n_gids_found={count.group(1)} but {len(gids)} rows listed")
    return {"gids": gids}


def roce_v2_gid_index(gids: Iterable[Mapping[str, Any]], netdev: str, ipv4: str) -> int | None:
    """The GID index NCCL_IB_GID_INDEX needs: the RoCE v2 GID of `ipv4` on `netdev`, or None.

    Works on show_gids rows and on the sysfs dump's "gids" alike. The lowest index wins if the
    table holds the pair twice; None means that address has no RoCE v2 GID on that netdev (not
    configured yet, or on another port) and no index should be guessed.
    """
    wanted = ip_address(ipv4)
    indexes = [
        int(gid["index"])
        for gid in gids
        if gid.get("version") == "v2"
        and gid.get("netdev") == netdev
        and gid.get("ipv4") is not None
        and ip_address(gid["ipv4"]) == wanted
    ]
    return min(indexes) if indexes else None


# --- sysfs ------------------------------------------------------------------------------------------

_SYSFS_FILES = (
    "*/fw_ver",
    "*/hca_type",
    "*/board_id",
    "*/ports/*/state",
    "*/ports/*/phys_state",
    "*/ports/*/rate",
    "*/ports/*/link_layer",
    "*/ports/*/gids/*",
    "*/ports/*/gid_attrs/types/*",
    "*/ports/*/gid_attrs/ndevs/*",
)
_SYSFS_PATH = re.compile(
    r"^(?:.*/)?(?P<device>[^/]+)/(?:(?P<device_attr>fw_ver|hca_type|board_id)"
    r"|ports/(?P<port>[0-9]+)/(?:(?P<port_attr>state|phys_state|rate|link_layer)"
    r"|gids/(?P<gid>[0-9]+)|gid_attrs/(?P<gid_attr>types|ndevs)/(?P<gid_attr_index>[0-9]+)))$"
)
_SYSFS_STATE = re.compile(r"^[0-9]+:\s*(?P<name>\S+)$")
_SYSFS_RATE = re.compile(r"^(?P<gbps>[0-9]+(?:\.[0-9]+)?) Gb/sec\b")
_SYSFS_GID_TYPE = re.compile(r"\bv(?P<version>[0-9])$")


def ib_sysfs_command(root: str = "/sys/class/infiniband") -> str:
    """The shell command that dumps RDMA devices from sysfs as `device/ports/N/file:value` lines.

    grep -H prints each file's path and content; -v -x drops empty GID slots (most of the 255);
    -s silences the files that cannot be read (attributes of empty slots) and the globs that
    match nothing. A host without RDMA devices prints nothing and the command still succeeds.
    """
    drop = " ".join(f"-e {gid}" for gid in _EMPTY_GIDS)
    return (
        f"cd {shlex.quote(root)} 2>/dev/null || exit 0; "
        f"grep -s -H -v -x {drop} {' '.join(_SYSFS_FILES)}; true"
    )


IB_SYSFS_COMMAND = ib_sysfs_command()


def _sysfs_value(kind: str, value: str, where: str) -> Any:
    if kind in ("state", "phys_state"):
        state = _SYSFS_STATE.match(value)
        if state is None:
            raise ParseError(f"ib sysfs: {where}: {quote_line(value)} is not 'N: NAME'")
        return state.group("name")
    if kind == "rate":
        rate = _SYSFS_RATE.match(value)
        if rate is None:
            raise ParseError(f"ib sysfs: {where}: {quote_line(value)} is not 'N Gb/sec ...'")
        return _number(rate.group("gbps"))
    return value


def parse_ib_sysfs(text: str) -> dict[str, Any]:
    """The output of ib_sysfs_command(): devices, their ports' state and rate, and RoCE GIDs.

    "gids" has the shape of show_gids rows, so roce_v2_gid_index() reads either; the version is
    "v1" for "IB/RoCE v1" and "v2" for "RoCE v2", as show_gids prints them.
    """
    devices: dict[str, dict[str, Any]] = {}
    ports: dict[tuple[str, int], dict[str, Any]] = {}
    gid_values: dict[tuple[str, int, int], dict[str, str]] = {}
    for number, line in enumerate(command_output(text).splitlines(), start=1):
        if not line.strip():
            continue
        path, colon, value = line.partition(":")
        match = _SYSFS_PATH.match(path) if colon else None
        if match is None:
            raise ParseError(f"ib sysfs: line {number} is not 'path:value': {quote_line(line)}")
        value = value.strip()
        device = devices.setdefault(match.group("device"), {"name": match.group("device")})
        if match.group("device_attr"):
            device[match.group("device_attr")] = value
            continue
        key = (device["name"], int(match.group("port")))
        port = ports.setdefault(key, {})
        if kind := match.group("port_attr"):
            port[kind] = _sysfs_value(kind, value, f"{key[0]} port {key[1]} {kind}")
        elif match.group("gid") is not None:
            gid_values.setdefault((*key, int(match.group("gid"))), {})["gid"] = value
        else:
            slot = (*key, int(match.group("gid_attr_index")))
            gid_values.setdefault(slot, {})[match.group("gid_attr")] = value
    result = []
    for name, device in devices.items():
        device_ports = []
        for (port_device, port_number), port in sorted(ports.items(), key=lambda item: item[0]):
            if port_device != name:
                continue
            missing = [k for k in ("state", "phys_state", "rate", "link_layer") if k not in port]
            if missing:
                raise ParseError(
                    f"ib sysfs: {name} port {port_number} lacks {', '.join(missing)} (truncated?)"
                )
            device_ports.append(
                {
                    "port": port_number,
                    "state": port["state"],
                    "physical_state": port["phys_state"],
                    "rate_gbps": port["rate"],
                    "link_layer": port["link_layer"],
                }
            )
        result.append(
            {
                "name": name,
                "fw_ver": device.get("fw_ver"),
                "hca_type": device.get("hca_type"),
                "board_id": device.get("board_id"),
                "ports": device_ports,
            }
        )
    gids = []
    for (name, port_number, index), attrs in sorted(gid_values.items()):
        gid = attrs.get("gid")
        if gid is None or gid in _EMPTY_GIDS:
            continue
        if not _GID.fullmatch(gid):
            raise ParseError(f"ib sysfs: {name} port {port_number} GID {index}: {quote_line(gid)}")
        version = _SYSFS_GID_TYPE.search(attrs.get("types", ""))
        gids.append(
            {
                "device": name,
                "port": port_number,
                "index": index,
                "gid": gid,
                "ipv4": _gid_ipv4(gid),
                "version": f"v{version.group('version')}" if version else None,
                "netdev": attrs.get("ndevs") or None,
            }
        )
    return {"devices": result, "gids": gids}


# --- pyinfra facts ----------------------------------------------------------------------------------


class IbStat(FactBase[dict[str, Any]]):
    """Adapters and ports as ibstat (infiniband-diags) sees them; no adapters without the tool."""

    def command(self) -> str:
        return _IF_RDMA_DEVICES.format("ibstat")

    def requires_command(self, *args: Any, **kwargs: Any) -> str:
        return "ibstat"

    @staticmethod
    def default() -> dict[str, Any]:
        return {"adapters": []}

    @staticmethod
    def process(output: list[str]) -> dict[str, Any]:
        return process_with(parse_ibstat, output)


class IbvDevinfo(FactBase[dict[str, Any]]):
    """Devices, port states and MTUs as the verbs library (rdma-core) sees them."""

    def command(self) -> str:
        return _IF_RDMA_DEVICES.format("ibv_devinfo")

    def requires_command(self, *args: Any, **kwargs: Any) -> str:
        return "ibv_devinfo"

    @staticmethod
    def default() -> dict[str, Any]:
        return {"devices": []}

    @staticmethod
    def process(output: list[str]) -> dict[str, Any]:
        return process_with(parse_ibv_devinfo, output)


class ShowGids(FactBase[dict[str, Any]]):
    """The RoCE GID tables, from the show_gids script that MLNX_OFED/DOCA installs."""

    def command(self) -> str:
        return "show_gids"

    def requires_command(self, *args: Any, **kwargs: Any) -> str:
        return "show_gids"

    @staticmethod
    def default() -> dict[str, Any]:
        return {"gids": []}

    @staticmethod
    def process(output: list[str]) -> dict[str, Any]:
        return process_with(parse_show_gids, output)


class IbSysfs(FactBase[dict[str, Any]]):
    """Ports and GIDs straight from /sys/class/infiniband: works on hosts without any RDMA tool."""

    def command(self) -> str:
        return IB_SYSFS_COMMAND

    @staticmethod
    def default() -> dict[str, Any]:
        return {"devices": [], "gids": []}

    @staticmethod
    def process(output: list[str]) -> dict[str, Any]:
        return process_with(parse_ib_sysfs, output)


PARSE_KINDS: dict[str, Parser] = {
    "ibstat": parse_ibstat,
    "ibv-devinfo": parse_ibv_devinfo,
    "show-gids": parse_show_gids,
    "ib-sysfs": parse_ib_sysfs,
}
