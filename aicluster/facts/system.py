"""Node facts that decide what a node may change on itself: container or not, active swap."""

from __future__ import annotations

from typing import Any

from pyinfra.api.facts import FactBase

from aicluster.facts import ParseError, quote_line

SWAPS_HEADER = ("Filename", "Type", "Size", "Used", "Priority")


def parse_container(text: str) -> str | None:
    """`systemd-detect-virt --container` → the container technology, None on a real or VM host."""
    value = text.strip()
    return None if value in ("", "none") else value


def parse_proc_swaps(text: str) -> list[dict[str, Any]]:
    """/proc/swaps → the active swap areas (an empty list when swap is off)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or tuple(lines[0].split()) != SWAPS_HEADER:
        first = lines[0] if lines else "(empty)"
        raise ParseError(
            f"/proc/swaps: expected the header {' '.join(SWAPS_HEADER)!r}, got {quote_line(first)}"
        )
    swaps = []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split()
        if len(fields) != 5:
            raise ParseError(
                f"/proc/swaps line {number}: expected 5 fields, got {quote_line(line)}"
            )
        swaps.append({"filename": fields[0], "type": fields[1], "size_kib": int(fields[2])})
    return swaps


class Container(FactBase[str | None]):
    """The container the node runs in (systemd-nspawn, lxc, docker…), or None."""

    def command(self) -> str:
        return "systemd-detect-virt --container || true"

    @staticmethod
    def process(output: list[str]) -> str | None:
        return parse_container("\n".join(output))


class ActiveSwaps(FactBase[list[dict[str, Any]]]):
    """Swap areas in use."""

    def command(self) -> str:
        return "cat /proc/swaps"

    @staticmethod
    def default() -> list[dict[str, Any]]:
        return []

    @staticmethod
    def process(output: list[str]) -> list[dict[str, Any]]:
        return parse_proc_swaps("\n".join(output))
