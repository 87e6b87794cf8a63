"""NVIDIA GPU facts: what the GPUs, their links and their driver are, read from the tools' own text.

Five pure parsers (text in, plain data out) and thin pyinfra facts that run the matching command:

    nvidia-smi-query       `nvidia-smi --query-gpu=... --format=csv[,noheader,nounits]` or `nvidia-smi -q`
    nvidia-topo            `nvidia-smi topo -m`
    nvlink-status          `nvidia-smi nvlink -s` / `nvidia-smi nvlink --status`
    nvidia-driver-version  /proc/driver/nvidia/version (+ /proc/driver/nvidia/gpus/*/information)
    nvidia-pci             NVIDIA PCI functions from `lspci [-nn]` or the sysfs loop of NvidiaPciDevices

Every parser also takes a capture file (first line `$ command`, last line `[exit N]`), so people can
paste either. A value the tool reports as unknown ("N/A", "[N/A]", "[Not Supported]", ...) becomes
None rather than a string that later code would have to recognise again. Anything the parser cannot
read raises ParseError with a one-line message: a fact must never guess what a truncated output meant.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from typing import Any

from pyinfra.api.facts import FactBase

from aicluster.facts import ParseError, Parser, process_with, split_capture

# Values nvidia-smi prints when it has no answer; bracketed forms ("[N/A]") come from --query-gpu.
UNKNOWN_VALUES = frozenset(
    {
        "",
        "N/A",
        "Not Supported",
        "Unknown Error",
        "Insufficient Permissions",
        "Requested functionality has been deprecated",
    }
)
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
EXIT_LINE = re.compile(r"\[exit (-?[0-9]+)\]")


def _quote(text: str, limit: int = 60) -> str:
    """A fragment of the input for an error message, escaped so the message stays on one line."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _unwrap(text: str) -> tuple[str | None, str]:
    """(command, output) of a capture file or raw output, ANSI escapes removed (topo -m underlines)."""
    command, body = split_capture(ANSI_ESCAPE.sub("", text))
    return command, body.removesuffix("\n")


def _first_line(body: str) -> str:
    return next((line.strip() for line in body.split("\n") if line.strip()), "")


def _unknown(value: str) -> str | None:
    """None for the ways nvidia-smi says "no value", else the value stripped."""
    value = value.strip()
    if value.startswith("[") and value.endswith("]"):
        return None
    return None if value in UNKNOWN_VALUES else value


def _enabled(value: str | None, what: str) -> bool | None:
    if value is None:
        return None
    if value in ("Enabled", "Disabled"):
        return value == "Enabled"
    raise ParseError(f"{what}: expected Enabled or Disabled, got {_quote(value)}")


def _integer(value: str | None, what: str, units: tuple[str, ...] = ()) -> int | None:
    if value is None:
        return None
    number = value
    for unit in units:
        number = number.removesuffix(unit).strip()
    if not re.fullmatch(r"[0-9]+", number):
        raise ParseError(f"{what}: expected a whole number, got {_quote(value)}")
    return int(number)


def _decimal(value: str | None, what: str, unit: str) -> float | None:
    if value is None:
        return None
    try:
        return float(value.removesuffix(unit).strip())
    except ValueError:
        raise ParseError(f"{what}: expected a number in {unit}, got {_quote(value)}") from None


def _pci_address(bus_id: str | None) -> str | None:
    """nvidia-smi's 00000000:18:00.0 and lspci's 18:00.0 as sysfs names them: 0000:18:00.0."""
    if bus_id is None:
        return None
    match = re.fullmatch(r"(?:([0-9A-Fa-f]{4,8}):)?([0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7])", bus_id)
    if not match:
        return None
    domain = (match.group(1) or "0000")[-4:]
    return f"{domain}:{match.group(2)}".lower()


def _option(command: str | None, *names: str) -> str | None:
    """Value of a command-line option (`--opt=value`, `--opt value`, `-i value`) in a capture."""
    if command is None:
        return None
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    for position, word in enumerate(words):
        for name in names:
            if word.startswith(name + "="):
                return word[len(name) + 1 :]
            if word == name and position + 1 < len(words):
                return words[position + 1]
    return None


# ---------------------------------------------------------------------------------------------
# nvidia-smi --query-gpu (CSV) and nvidia-smi -q
# ---------------------------------------------------------------------------------------------

GPU_KEYS = (
    "index",
    "name",
    "uuid",
    "bus_id",
    "pci_address",
    "driver_version",
    "vbios_version",
    "serial",
    "minor_number",
    "memory_total_mib",
    "persistence_mode",
    "ecc_enabled",
    "mig_enabled",
    "pcie_gen_current",
    "pcie_gen_max",
    "pcie_width_current",
    "pcie_width_max",
    "compute_capability",
    "power_limit_w",
)

# --query-gpu field (and its alias) -> key of GPU_KEYS.
CSV_FIELDS = {
    "index": "index",
    "name": "name",
    "gpu_name": "name",
    "uuid": "uuid",
    "gpu_uuid": "uuid",
    "pci.bus_id": "bus_id",
    "gpu_bus_id": "bus_id",
    "driver_version": "driver_version",
    "kmd_version": "driver_version",
    "vbios_version": "vbios_version",
    "serial": "serial",
    "gpu_serial": "serial",
    "memory.total": "memory_total_mib",
    "persistence_mode": "persistence_mode",
    "ecc.mode.current": "ecc_enabled",
    "mig.mode.current": "mig_enabled",
    "pcie.link.gen.current": "pcie_gen_current",
    "pcie.link.gen.max": "pcie_gen_max",
    "pcie.link.width.current": "pcie_width_current",
    "pcie.link.width.max": "pcie_width_max",
    "compute_cap": "compute_capability",
    "power.limit": "power_limit_w",
}

# The fields the NvidiaSmiQuery fact asks for: exactly the query captured on our H100/H200 hosts,
# in its order, so the fact's output format is tested for real and lab machines with simulated
# hardware replay the fact's own command. GPU_KEYS takes what it knows; the rest stay in "fields".
QUERY_FIELDS = (
    "index",
    "uuid",
    "name",
    "pci.bus_id",
    "driver_version",
    "vbios_version",
    "memory.total",
    "memory.used",
    "persistence_mode",
    "ecc.mode.current",
    "ecc.errors.uncorrected.volatile.total",
    "retired_pages.pending",
    "remapped_rows.pending",
    "remapped_rows.failure",
    "pcie.link.gen.current",
    "pcie.link.gen.max",
    "pcie.link.width.current",
    "pcie.link.width.max",
    "clocks_event_reasons.active",
    "compute_cap",
    "mig.mode.current",
    "power.limit",
    "temperature.gpu",
)

CSV_FIELD_NAME = re.compile(r"[a-z][A-Za-z0-9_.]*")
CSV_HEADER_CELL = re.compile(r"([a-z][A-Za-z0-9_.]*)(?: \[[^\]]*\])?")


def _typed_gpu(raw: dict[str, str | None], where: str) -> dict[str, Any]:
    """GPU_KEYS from the raw values of one GPU (already keyed by GPU_KEYS)."""

    def what(key: str) -> str:
        return f"{where} {key}"

    gpu: dict[str, Any] = {key: raw.get(key) for key in GPU_KEYS}
    gpu["index"] = _integer(raw.get("index"), what("index"))
    gpu["minor_number"] = _integer(raw.get("minor_number"), what("minor_number"))
    gpu["memory_total_mib"] = _integer(raw.get("memory_total_mib"), what("memory"), ("MiB",))
    for key in ("pcie_gen_current", "pcie_gen_max"):
        gpu[key] = _integer(raw.get(key), what(key))
    for key in ("pcie_width_current", "pcie_width_max"):
        gpu[key] = _integer(raw.get(key), what(key), ("x",))
    for key in ("persistence_mode", "ecc_enabled", "mig_enabled"):
        gpu[key] = _enabled(raw.get(key), what(key))
    gpu["power_limit_w"] = _decimal(raw.get("power_limit_w"), what("power limit"), "W")
    gpu["pci_address"] = _pci_address(gpu["bus_id"])
    return gpu


def _parse_query_csv(
    command: str | None, body: str, fields: Sequence[str] | None
) -> dict[str, Any]:
    rows = [line for line in body.split("\n") if line.strip()]
    cells = [cell.strip() for cell in rows[0].split(",")]
    header = [CSV_HEADER_CELL.fullmatch(cell) for cell in cells]
    if all(header):
        names = [match.group(1) for match in header if match]
        rows = rows[1:]
        if not rows:
            raise ParseError(
                "CSV header but no GPU rows: truncated `nvidia-smi --query-gpu` output"
            )
    else:
        asked = fields or (_option(command, "--query-gpu") or "").split(",")
        names = [name.strip() for name in asked if name.strip()]
        if not names:
            raise ParseError(
                "CSV without a header and no field list: give the capture with its "
                "`nvidia-smi --query-gpu=...` line, or query with --format=csv"
            )
        if not all(CSV_FIELD_NAME.fullmatch(name) for name in names):
            raise ParseError(f"not --query-gpu field names: {_quote(','.join(names))}")
    gpus = []
    for number, row in enumerate(rows, 1):
        values = [cell.strip() for cell in row.split(",")]
        if len(values) != len(names):
            raise ParseError(
                f"GPU row {number} has {len(values)} values for {len(names)} fields: truncated "
                f"or not this query ({_quote(row)})"
            )
        given = {name: _unknown(value) for name, value in zip(names, values, strict=True)}
        raw: dict[str, str | None] = {}
        for name, value in given.items():
            # Drivers from 610 name the kernel driver "kmd_version"; prefer it when both are asked.
            key = CSV_FIELDS.get(name)
            if key and (raw.get(key) is None or name == "kmd_version"):
                raw[key] = value
        gpu = _typed_gpu(raw, f"GPU row {number}")
        gpu["fields"] = given
        gpus.append(gpu)
    return {
        "format": "csv",
        "driver_version": gpus[0]["driver_version"],
        "cuda_version": None,
        "gpus": gpus,
    }


Q_GPU_SECTION = re.compile(r"GPU ([0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7])")
Q_KEY_VALUE = re.compile(r"(?P<key>\S.*?)\s+:(?: (?P<value>.*))?")

# nvidia-smi -q value paths (lower-cased, " / " between sections) -> key of GPU_KEYS; the first
# path present wins, the later ones are how older drivers named the same thing.
Q_PATHS = {
    "name": ("product name",),
    "uuid": ("gpu uuid",),
    "bus_id": ("pci / bus id",),
    "vbios_version": ("vbios version",),
    "serial": ("serial number",),
    "minor_number": ("minor number",),
    "memory_total_mib": ("fb memory usage / total", "memory usage / total"),
    "persistence_mode": ("persistence mode",),
    "ecc_enabled": ("ecc mode / current",),
    "mig_enabled": ("mig mode / current",),
    "pcie_gen_current": ("pci / gpu link info / pcie generation / current",),
    "pcie_gen_max": ("pci / gpu link info / pcie generation / max",),
    "pcie_width_current": ("pci / gpu link info / link width / current",),
    "pcie_width_max": ("pci / gpu link info / link width / max",),
    "power_limit_w": (
        "gpu power readings / current power limit",
        "gpu power readings / gpu ceiling power limit / current power limit",  # driver 610
        "gpu power readings / power limit",
        "power readings / power limit",
    ),
}


def _q_tree(body: str) -> tuple[dict[str, str | None], list[tuple[str, dict[str, str | None]]]]:
    """The -q text as flat {path: value} dicts: the header, then one per `GPU <bus id>` section.

    Nesting is by indentation (4 spaces a level). A deeper line may follow a key/value line
    ("HW Slowdown : Not Active" then "HW Thermal Slowdown"), so every line is a possible parent.
    """
    header: dict[str, str | None] = {}
    sections: list[tuple[str, dict[str, str | None]]] = []
    values = header
    base = 0
    stack: list[str] = []
    for number, line in enumerate(body.split("\n"), 1):
        content = line.strip()
        if not content or content.startswith("====="):
            continue
        indent = len(line) - len(line.lstrip(" "))
        section = Q_GPU_SECTION.fullmatch(content)
        if indent == 0 and section:
            values = {}
            sections.append((section.group(1), values))
            base, stack = 4, []
            continue
        if indent < base:
            raise ParseError(f"line {number}: {_quote(content)} is outside any GPU section")
        depth = (indent - base) // 4
        if depth > len(stack):
            raise ParseError(
                f"line {number}: {_quote(content)} is indented deeper than its section"
            )
        pair = Q_KEY_VALUE.fullmatch(content)
        name = pair.group("key") if pair else content
        if pair:
            path = " / ".join([*stack[:depth], name]).lower()
            values.setdefault(path, _unknown(pair.group("value") or ""))
        stack = [*stack[:depth], name]
    return header, sections


def _without_note(value: str | None) -> str | None:
    """Drop the "[Deprecated; ...]" note that drivers from 610 append to renamed -q lines."""
    return re.sub(r"\s*\[[^\]]*\]$", "", value) if value else value


def _parse_query_q(command: str | None, body: str) -> dict[str, Any]:
    header, sections = _q_tree(body)
    # From driver 610, "KMD Version" / "CUDA UMD Version" replace "Driver Version" / "CUDA Version".
    driver_version = header.get("kmd version") or _without_note(header.get("driver version"))
    cuda_version = header.get("cuda umd version") or _without_note(header.get("cuda version"))
    attached = _integer(header.get("attached gpus"), "Attached GPUs")
    if attached is None:
        raise ParseError("no `Attached GPUs` line: not `nvidia-smi -q` output, or truncated")
    selected = _option(command, "-i", "--id")
    if selected is None and attached != len(sections):
        raise ParseError(
            f"`Attached GPUs : {attached}` but {len(sections)} GPU sections: truncated output"
        )
    gpus = []
    for position, (bus_id, values) in enumerate(sections):
        where = f"GPU {bus_id}"
        raw = {
            key: next((values[p] for p in paths if p in values), None)
            for key, paths in Q_PATHS.items()
        }
        for path in ("product name", "fb memory usage"):
            if not any(p.startswith(path) for p in values):
                raise ParseError(
                    f"{where}: no {path!r}: truncated, or a `-q -d` subset rather than `nvidia-smi -q`"
                )
        raw["bus_id"] = raw["bus_id"] or bus_id
        raw["driver_version"] = driver_version
        # -q prints no index; nvidia-smi lists GPUs in index order (not by Minor Number, which
        # follows /dev/nvidiaN and differs inside containers and on hosts with other GPUs).
        if selected is None:
            raw["index"] = str(position)
        elif selected.isdigit() and len(sections) == 1:
            raw["index"] = selected
        gpu = _typed_gpu(raw, where)
        gpu["fields"] = dict(values)
        gpus.append(gpu)
    return {
        "format": "q",
        "driver_version": driver_version,
        "cuda_version": cuda_version,
        "gpus": gpus,
    }


def parse_nvidia_smi_query(text: str, fields: Sequence[str] | None = None) -> dict[str, Any]:
    """GPUs from `nvidia-smi --query-gpu=... --format=csv` or from `nvidia-smi -q`, whichever it is.

    Returns {"format": "csv"|"q", "driver_version", "cuda_version", "gpus": [...]}; each GPU has the
    GPU_KEYS (None where the output does not say) and "fields", every value as printed (CSV: by
    query field; -q: by section path such as "pci / gpu link info / link width / max").
    A CSV without a header needs its field list: from `fields` or from the capture's command line.
    """
    command, body = _unwrap(text)
    first = _first_line(body)
    if not first:
        raise ParseError("empty output: expected `nvidia-smi -q` or `--query-gpu` CSV output")
    if "NVSMI LOG" in first or first.startswith(("Timestamp", "Driver Version")):
        return _parse_query_q(command, body)
    if (
        "," in first
        or CSV_HEADER_CELL.fullmatch(first)
        or _option(command, "--query-gpu")
        or fields
    ):
        return _parse_query_csv(command, body, fields)
    raise ParseError(f"not nvidia-smi query output: first line {_quote(first)}")


# ---------------------------------------------------------------------------------------------
# nvidia-smi topo -m
# ---------------------------------------------------------------------------------------------

# nvidia-smi's row layout after the matrix, as seen in real outputs: "CPU Affinity", "NUMA
# Affinity", one empty cell, then "GPU NUMA ID" (e.g. "0-23\t0\t\tN/A", Windows "\t\t\t\tN/A").
AFFINITY_POSITIONS = {"CPU Affinity": 0, "NUMA Affinity": 1, "GPU NUMA ID": 3}
GPU_LABEL = re.compile(r"GPU\d+")
NIC_LEGEND = re.compile(r"\s*(NIC\d+):\s*(\S+)\s*")


def _detab(line: str) -> list[str] | None:
    """Cells of a row whose tabs were expanded to spaces (8 columns), as split on the tabs.

    Pasted outputs often lose their tabs; empty cells are then only visible as extra tab stops.
    None when the tokens do not sit on tab stops (re-aligned by hand): the caller splits on spaces.
    """
    cells: list[str] = []
    end = 0
    for match in re.finditer(r"\S+", line):
        start = match.start()
        if match.group() == "X" and start % 8 == 1:
            start -= 1  # the diagonal cell is " X "
        if not cells:
            if start != 0:
                return None
        else:
            next_stop = (end // 8 + 1) * 8
            if start % 8 or start < next_stop:
                return None
            cells.extend([""] * ((start - next_stop) // 8))
        cells.append(match.group())
        end = match.end()
    return cells


def _row_cells(line: str) -> list[str]:
    if "\t" in line:
        return [cell.strip() for cell in line.split("\t")]
    return _detab(line) or line.split()


def _affinities(labels: list[str], cells: list[str]) -> dict[str, str | None]:
    positions = {label: AFFINITY_POSITIONS.get(label, index) for index, label in enumerate(labels)}
    if len(cells) <= max(positions.values(), default=-1) + 1:
        return {
            label: _unknown(cells[p]) if p < len(cells) else None for label, p in positions.items()
        }
    # A layout nvidia-smi does not usually print ("0-7\t\tN/A\t\tN/A"): first cell is the CPU
    # affinity, the other labels take the remaining non-empty cells in order.
    rest = [cell for cell in cells[1:] if cell]
    found = {labels[0]: _unknown(cells[0])}
    found.update({label: _unknown(rest.pop(0)) if rest else None for label in labels[1:]})
    return found


def parse_nvidia_topo(text: str) -> dict[str, Any]:
    """The `nvidia-smi topo -m` matrix: every cell as printed, GPU and NIC rows and columns.

    Returns {"gpus": ["GPU0", ...], "nics": {"NIC0": "mlx5_0", ...}, "links": {row: {column: cell}},
    "cpu_affinity": {...}, "numa_affinity": {...}, "gpu_numa_id": {...}}. NIC columns named by
    their device (old outputs: "mlx5_0") map to themselves; NICn without a NIC Legend map to None.
    Affinity maps hold every GPU (None when empty/N/A) and NICs only where a value is printed.
    """
    _, body = _unwrap(text)
    lines = body.split("\n")
    start = next((i for i, line in enumerate(lines) if line.strip()), None)
    if start is None:
        raise ParseError("empty output: expected the `nvidia-smi topo -m` matrix")
    heading = lines[start]
    names = (
        [cell.strip() for cell in heading.split("\t") if cell.strip()]
        if "\t" in heading
        else re.split(r"\s{2,}", heading.strip())
    )
    split = next((i for i, name in enumerate(names) if " " in name), len(names))
    columns, labels = names[:split], names[split:]
    # Every `topo -m` names a "CPU Affinity" column; `topo -p2p` and others have the matrix only.
    if not any(GPU_LABEL.fullmatch(name) for name in columns) or "CPU Affinity" not in labels:
        raise ParseError(f"not a `nvidia-smi topo -m` header: {_quote(heading.strip())}")
    keys = {label: label.lower().replace(" ", "_") for label in labels}
    links: dict[str, dict[str, str]] = {}
    affinity: dict[str, dict[str, str | None]] = {key: {} for key in keys.values()}
    position = start + 1
    for position in range(start + 1, len(lines)):
        line = lines[position]
        if not line.strip() or line.strip().startswith("Legend"):
            break
        cells = _row_cells(line)
        row = cells[0]
        if row not in columns or row in links:
            raise ParseError(
                f"line {position + 1}: {_quote(line.strip())} is not a row of the matrix"
            )
        matrix = cells[1 : 1 + len(columns)]
        if len(matrix) < len(columns) or not all(matrix):
            raise ParseError(
                f"row {_quote(row)} has {len([c for c in matrix if c])} cells for "
                f"{len(columns)} columns: truncated"
            )
        if matrix[columns.index(row)] != "X":
            diagonal = matrix[columns.index(row)]
            raise ParseError(
                f"row {_quote(row)}: expected X on the diagonal, got {_quote(diagonal)}"
            )
        links[row] = dict(zip(columns, matrix, strict=True))
        if labels:
            found = _affinities(labels, cells[1 + len(columns) :])
            if GPU_LABEL.fullmatch(row) or any(found.values()):
                for label, value in found.items():
                    affinity[keys[label]][row] = value
    missing = [column for column in columns if column not in links]
    if missing:
        raise ParseError(
            f"no row for {_quote(', '.join(missing))}: truncated `nvidia-smi topo -m` output"
        )
    legend = {}
    for line in lines[position:]:
        entry = NIC_LEGEND.fullmatch(line)
        if entry:
            legend[entry.group(1)] = entry.group(2)
    gpus = [column for column in columns if GPU_LABEL.fullmatch(column)]
    nics = {
        column: legend.get(column, None if re.fullmatch(r"NIC\d+", column) else column)
        for column in columns
        if column not in gpus
    }
    result: dict[str, Any] = {"gpus": gpus, "nics": nics, "links": links}
    for key in ("cpu_affinity", "numa_affinity", "gpu_numa_id"):
        result[key] = affinity.pop(key, {})
    result.update(affinity)
    return result


# ---------------------------------------------------------------------------------------------
# nvidia-smi nvlink -s
# ---------------------------------------------------------------------------------------------

NVLINK_GPU = re.compile(r"GPU ([0-9]+): (.+?) \(UUID: (.*)\)")
NVLINK_LINK = re.compile(r"Link ([0-9]+): (.*)")
NVLINK_SPEED = re.compile(r"([0-9]+(?:\.[0-9]+)?) GB/s")


def parse_nvlink_status(text: str) -> dict[str, Any]:
    """Per-GPU NVLink links from `nvidia-smi nvlink -s` (same output as `nvlink --status`).

    Returns {"gpus": [{"index", "name", "uuid", "links": [{"link", "speed_gbps",
    "speed_gbytes_per_s", "active"}], "unavailable"}]}. Both speeds are the figure nvidia-smi prints
    per link, whose unit is GB/s (gigabytes): `speed_gbps` is the name the parse contract (issue 4)
    fixes, `speed_gbytes_per_s` says the unit. "unavailable" holds nvidia-smi's reason when it lists no links for a GPU (all inactive,
    no NVLink, MIG mode). Empty output is a GPU without NVLink peers: {"gpus": []}.
    """
    _, body = _unwrap(text)
    gpus: list[dict[str, Any]] = []
    for number, line in enumerate(body.split("\n"), 1):
        content = line.strip()
        if not content:
            continue
        gpu = NVLINK_GPU.fullmatch(content)
        if gpu:
            gpus.append(
                {
                    "index": int(gpu.group(1)),
                    "name": gpu.group(2),
                    "uuid": gpu.group(3),
                    "links": [],
                    "unavailable": None,
                }
            )
            continue
        if not gpus:
            raise ParseError(
                f"not `nvidia-smi nvlink -s` output: line {number} is {_quote(content)}"
            )
        current = gpus[-1]
        link = NVLINK_LINK.fullmatch(content)
        if link and current["unavailable"] is None:
            state = link.group(2).strip()
            speed = NVLINK_SPEED.fullmatch(state)
            if not speed and state != "<inactive>":
                raise ParseError(f"line {number}: unknown link state {_quote(state)}")
            current["links"].append(
                {
                    "link": int(link.group(1)),
                    "speed_gbps": float(speed.group(1)) if speed else None,
                    "speed_gbytes_per_s": float(speed.group(1)) if speed else None,
                    "active": speed is not None,
                }
            )
        elif not current["links"] and current["unavailable"] is None:
            current["unavailable"] = content
        else:
            raise ParseError(
                f"line {number}: unexpected {_quote(content)} in GPU {current['index']}"
            )
    for listed in gpus:
        # nvidia-smi prints links or a reason under every GPU; a bare GPU line is a cut output
        # or another command's (`nvidia-smi -L` looks the same).
        if not listed["links"] and listed["unavailable"] is None:
            raise ParseError(
                f"GPU {listed['index']} lists neither links nor a reason: truncated, or not `nvlink -s`"
            )
    return {"gpus": gpus}


# ---------------------------------------------------------------------------------------------
# /proc/driver/nvidia/version (+ gpus/*/information)
# ---------------------------------------------------------------------------------------------

NVRM_LINE = re.compile(
    r"NVRM version: NVIDIA UNIX (?P<open>Open )?(?:(?P<arch>\S+) )?Kernel Module"
    r"(?: for (?P<arch_open>\S+))?\s+(?P<version>\d+(?:\.\d+)+)\s*(?P<build>.*?)\s*"
)
INFORMATION_LINE = re.compile(r"(?P<key>[A-Za-z][A-Za-z .]*?):\s*(?P<value>.*?)\s*")


def parse_nvidia_driver_version(text: str) -> dict[str, Any]:
    """The loaded kernel module from /proc/driver/nvidia/version, and the GPUs it drives.

    Returns {"version", "open_kernel_module", "architecture", "build", "gcc_version", "gpus"}; the
    per-GPU blocks of /proc/driver/nvidia/gpus/*/information (Model:, GPU UUID:, Bus Location:, ...)
    become "gpus" as snake_case strings when they follow, as in `cat version; cat gpus/*/information`.
    Other lines (e.g. an `ls -la /dev/nvidia*` in the same capture) are ignored.
    """
    _, body = _unwrap(text)
    found: dict[str, Any] | None = None
    gpus: list[dict[str, str | None]] = []
    gcc = None
    for line in body.split("\n"):
        content = line.strip()
        nvrm = NVRM_LINE.fullmatch(content)
        if nvrm and found is None:
            found = {
                "version": nvrm.group("version"),
                "open_kernel_module": nvrm.group("open") is not None,
                "architecture": nvrm.group("arch_open") or nvrm.group("arch"),
                "build": nvrm.group("build") or None,
            }
            continue
        if content.startswith("GCC version:") and gcc is None:
            gcc = content.removeprefix("GCC version:").strip() or None
            continue
        entry = INFORMATION_LINE.fullmatch(content)
        if not entry:
            continue
        key = entry.group("key").strip().lower().replace(" ", "_").replace(".", "")
        if key == "model":
            gpus.append({})
        if gpus:
            gpus[-1][key] = _unknown(entry.group("value"))
    if found is None:
        first = _first_line(body)
        if not first:
            raise ParseError("empty output: expected /proc/driver/nvidia/version")
        raise ParseError(
            f"no `NVRM version:` line (not /proc/driver/nvidia/version): {_quote(first)}"
        )
    return {**found, "gcc_version": gcc, "gpus": gpus}


# ---------------------------------------------------------------------------------------------
# PCI: lspci [-nn] or the sysfs loop
# ---------------------------------------------------------------------------------------------

NVIDIA_VENDOR = "10de"
GPU_CLASSES = frozenset({"0300", "0302"})
NVSWITCH_CLASS = "0680"
# lspci without -nn prints class names only.
CLASS_CODES = {
    "VGA compatible controller": "0300",
    "3D controller": "0302",
    "Audio device": "0403",
    "PCI bridge": "0604",
    "Bridge": "0680",
    "USB controller": "0c03",
    "Serial bus controller": "0c80",
}
SYSFS_LINE = re.compile(
    r"== /sys/bus/pci/devices/(?P<bus_id>\S+) class=0x(?P<class>[0-9a-fA-F]{6}) "
    r"device=0x(?P<device>[0-9a-fA-F]{4}) cur=(?P<cur>.*?)/x(?P<cur_width>[0-9]*) "
    r"max=(?P<max>.*?)/x(?P<max_width>[0-9]*) numa=(?P<numa>(?:-?[0-9]+)?)"
)
LSPCI_LINE = re.compile(
    r"(?P<bus_id>(?:[0-9a-fA-F]{4,8}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]) "
    r"(?P<class_name>[^:\[]+?)(?: \[(?P<class>[0-9a-fA-F]{4})\])?: (?P<rest>.*)"
)
LSPCI_IDS = re.compile(r" \[(?P<vendor>[0-9a-fA-F]{4}):(?P<device>[0-9a-fA-F]{4})\]")
LSPCI_REVISION = re.compile(r" \(rev (?P<revision>[0-9a-fA-F]+)\)$")

# sysfs loop of NvidiaPciDevices: the same command as the real capture aicluster/captures/*/pci.txt.
PCI_SYSFS_COMMAND = (
    'for d in /sys/bus/pci/devices/*; do v=$(cat $d/vendor); if [ "$v" = 0x10de ]; then '
    'echo "== $d class=$(cat $d/class) device=$(cat $d/device) '
    "cur=$(cat $d/current_link_speed 2>/dev/null)/x$(cat $d/current_link_width 2>/dev/null) "
    "max=$(cat $d/max_link_speed 2>/dev/null)/x$(cat $d/max_link_width 2>/dev/null) "
    'numa=$(cat $d/numa_node 2>/dev/null)"; fi; done'
)


def _pci_device(
    bus_id: str, vendor: str | None, device: str | None, pci_class: str | None
) -> dict[str, Any]:
    return {
        "bus_id": bus_id,
        "pci_address": _pci_address(bus_id),
        "vendor_id": vendor,
        "device_id": device.lower() if device else None,
        "class": pci_class.lower() if pci_class else None,
        "name": None,
        "revision": None,
        "link_speed_current": None,
        "link_width_current": None,
        "link_speed_max": None,
        "link_width_max": None,
        "numa_node": None,
    }


def _lspci_device(match: re.Match[str]) -> dict[str, Any] | None:
    rest = match.group("rest")
    revision = LSPCI_REVISION.search(rest)
    if revision:
        rest = rest[: revision.start()]
    ids = list(LSPCI_IDS.finditer(rest))
    vendor = device = None
    if ids:
        vendor, device = ids[-1].group("vendor").lower(), ids[-1].group("device")
        rest = rest[: ids[-1].start()]
    elif rest.startswith("NVIDIA Corporation"):
        vendor = NVIDIA_VENDOR
        unnamed = re.fullmatch(r"NVIDIA Corporation Device ([0-9a-fA-F]{4})", rest)
        device = unnamed.group(1) if unnamed else None
    if vendor != NVIDIA_VENDOR:
        return None
    pci_class = match.group("class") or CLASS_CODES.get(match.group("class_name").strip())
    found = _pci_device(match.group("bus_id"), vendor, device, pci_class)
    found["name"] = rest.removeprefix("NVIDIA Corporation").strip() or None
    found["revision"] = revision.group("revision") if revision else None
    return found


def _sysfs_device(match: re.Match[str]) -> dict[str, Any]:
    found = _pci_device(
        match.group("bus_id"), NVIDIA_VENDOR, match.group("device"), match.group("class")[:4]
    )
    found["link_speed_current"] = match.group("cur") or None
    found["link_width_current"] = (
        int(match.group("cur_width")) if match.group("cur_width") else None
    )
    found["link_speed_max"] = match.group("max") or None
    found["link_width_max"] = int(match.group("max_width")) if match.group("max_width") else None
    numa = match.group("numa")
    found["numa_node"] = int(numa) if numa and int(numa) >= 0 else None
    return found


def parse_pci_devices(text: str) -> dict[str, Any]:
    """NVIDIA PCI functions, so GPUs and NVSwitches are seen before (or without) a driver.

    Reads `lspci`, `lspci -nn` (other vendors' lines are skipped) or the sysfs loop of
    NvidiaPciDevices. Returns {"gpus": [...], "nvswitches": [...], "other": [...]}: GPUs are classes
    0300/0302, NVSwitches class 0680 or a name with "NVSwitch"; "other" holds the rest (audio
    functions, PCI bridges such as Grace root ports). Empty output is a host without NVIDIA devices.
    """
    _, body = _unwrap(text)
    found: dict[str, list[dict[str, Any]]] = {"gpus": [], "nvswitches": [], "other": []}
    recognised = False
    for line in body.split("\n"):
        content = line.strip()
        sysfs = SYSFS_LINE.fullmatch(content)
        lspci = None if sysfs else LSPCI_LINE.fullmatch(content)
        if not (sysfs or lspci):
            continue
        recognised = True
        device = _sysfs_device(sysfs) if sysfs else _lspci_device(lspci) if lspci else None
        if device is None:
            continue
        if device["class"] in GPU_CLASSES:
            found["gpus"].append(device)
        elif device["class"] == NVSWITCH_CLASS or "nvswitch" in (device["name"] or "").lower():
            found["nvswitches"].append(device)
        else:
            found["other"].append(device)
    if body.strip() and not recognised:
        raise ParseError(
            f"no PCI device lines (lspci or sysfs): first line {_quote(_first_line(body))}"
        )
    return found


XID_LINE = re.compile(r"NVRM: Xid \((?P<device>[^)]*)\): (?P<xid>[0-9]+),?\s*(?P<detail>.*)")
# Xids after which the GPU needs a reset or the node a reboot, or the hardware is failing
# (NVIDIA's "XID Errors" catalogue): double-bit ECC (48), GSP/PMU halt (62), row-remap failure
# (64), NVLink (74), fallen off the bus (79), high single-bit ECC rate (92), contained and
# uncontained ECC (94, 95), GSP RPC timeout / error (119, 120), C2C link (121).
FATAL_XIDS = frozenset({48, 62, 64, 74, 79, 92, 94, 95, 119, 120, 121})


GPU_ADDRESS_LINE = re.compile(r"NVRM: The NVIDIA GPU (?P<device>[0-9a-fA-F:.]+)")
FALLEN_OFF_LINE = re.compile(r"NVRM: fallen off the bus")


def parse_xid_events(text: str) -> dict[str, Any]:
    """NVIDIA Xid events in a kernel log (`dmesg`, `journalctl -k`): {"events": [{"xid", "device",
    "detail", "fatal"}]}. A GPU that fell off the bus is reported without an Xid line by recent
    drivers: it is an event with "xid" None, fatal. Other lines are skipped."""
    _, body = _unwrap(text)
    events: list[dict[str, Any]] = []
    gpu = None
    for line in body.split("\n"):
        address = GPU_ADDRESS_LINE.search(line)
        if address:
            gpu = address.group("device")
        if FALLEN_OFF_LINE.search(line):
            detail = "fallen off the bus and not responding"
            events.append({"xid": None, "device": gpu, "detail": detail, "fatal": True})
        match = XID_LINE.search(line)
        if match:
            xid = int(match.group("xid"))
            events.append(
                {
                    "xid": xid,
                    "device": match.group("device"),
                    "detail": match.group("detail").strip(),
                    "fatal": xid in FATAL_XIDS,
                }
            )
    return {"events": events}


PARSE_KINDS: dict[str, Parser] = {
    "nvidia-smi-query": parse_nvidia_smi_query,
    "nvidia-topo": parse_nvidia_topo,
    "nvlink-status": parse_nvlink_status,
    "nvidia-driver-version": parse_nvidia_driver_version,
    "nvidia-pci": parse_pci_devices,
    "nvidia-xid": parse_xid_events,
}


# ---------------------------------------------------------------------------------------------
# pyinfra facts: the command, then the parser above
# ---------------------------------------------------------------------------------------------


class NvidiaSmiQuery(FactBase[dict[str, Any]]):
    """The GPUs as nvidia-smi sees them (QUERY_FIELDS, CSV with header so names travel with values).

    Without nvidia-smi (no driver yet): {"gpus": []}, the same as a driver that finds no GPU.
    """

    def command(self) -> str:
        return f"nvidia-smi --query-gpu={','.join(QUERY_FIELDS)} --format=csv"

    def requires_command(self, *args: Any, **kwargs: Any) -> str:
        return "nvidia-smi"

    @staticmethod
    def default() -> dict[str, Any]:
        return {"format": None, "driver_version": None, "cuda_version": None, "gpus": []}

    @staticmethod
    def process(output: list[str]) -> dict[str, Any]:
        return process_with(parse_nvidia_smi_query, output)


class NvidiaTopology(FactBase[dict[str, Any]]):
    """The GPU/NIC connection matrix of `nvidia-smi topo -m` (NVLink, PCIe switch, NUMA)."""

    def command(self) -> str:
        return "nvidia-smi topo -m"

    def requires_command(self, *args: Any, **kwargs: Any) -> str:
        return "nvidia-smi"

    @staticmethod
    def default() -> dict[str, Any]:
        return {
            "gpus": [],
            "nics": {},
            "links": {},
            "cpu_affinity": {},
            "numa_affinity": {},
            "gpu_numa_id": {},
        }

    @staticmethod
    def process(output: list[str]) -> dict[str, Any]:
        return process_with(parse_nvidia_topo, output)


class NvlinkStatus(FactBase[dict[str, Any]]):
    """Per-link NVLink state; a GPU without NVLink peers prints nothing, which is {"gpus": []}."""

    def command(self) -> str:
        return "nvidia-smi nvlink -s"

    def requires_command(self, *args: Any, **kwargs: Any) -> str:
        return "nvidia-smi"

    @staticmethod
    def default() -> dict[str, Any]:
        return {"gpus": []}

    @staticmethod
    def process(output: list[str]) -> dict[str, Any]:
        return process_with(parse_nvlink_status, output)


class NvidiaDriverVersion(FactBase[dict[str, Any] | None]):
    """The loaded NVIDIA kernel module and the GPUs it drives; None when no module is loaded.

    Read from /proc rather than nvidia-smi: it answers even when user space and module disagree.
    """

    def command(self) -> str:
        # No module loaded means no file: print nothing (the default) instead of failing the fact.
        return (
            "cat /proc/driver/nvidia/version 2>/dev/null && "
            "cat /proc/driver/nvidia/gpus/*/information 2>/dev/null; true"
        )

    @staticmethod
    def default() -> dict[str, Any] | None:
        return None

    @staticmethod
    def process(output: list[str]) -> dict[str, Any] | None:
        return process_with(parse_nvidia_driver_version, output)


class NvidiaPciDevices(FactBase[dict[str, Any]]):
    """NVIDIA GPUs and NVSwitches on the PCI bus, from sysfs: needs neither a driver nor lspci."""

    def command(self) -> str:
        return PCI_SYSFS_COMMAND

    @staticmethod
    def default() -> dict[str, Any]:
        return {"gpus": [], "nvswitches": [], "other": []}

    @staticmethod
    def process(output: list[str]) -> dict[str, Any]:
        return process_with(parse_pci_devices, output)
