"""Several facts of a node in one remote command: each fact's own command, then its own process().

A role that needs seven facts to plan would otherwise wait for seven round trips on every run.
The outputs come back between marker lines with each command's exit status; a fact whose command
failed fails the host with its name (as pyinfra does when a single fact fails), a fact whose
required command is missing takes its default (as pyinfra does while it prepares a run).
Only facts whose process() needs nothing but the output can be bundled: each is processed by a
fresh instance (pyinfra's Block or FindInFile keep their arguments from command(): not those).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Any

from pyinfra.api.command import StringCommand
from pyinfra.api.exceptions import FactProcessError
from pyinfra.api.facts import FactBase

MARK = "@@aicluster-fact"
MISSING = "missing"

# A fact class with its keyword arguments.
Request = tuple[type[FactBase[Any]], dict[str, Any]]


def bundle_command(requests: Sequence[Request]) -> str:
    parts = []
    for kind, kwargs in requests:
        fact = kind()
        command = fact.command(**kwargs)
        if isinstance(command, StringCommand):
            command = command.get_raw_value()
        if not isinstance(command, str):
            raise TypeError(
                f"{kind.__name__}: only facts with a plain shell command can be bundled"
            )
        # $(...) drops trailing newlines; printf puts exactly one back, and nothing for no output.
        run = (
            f"out=$( ({command}) 2>/dev/null ); rc=$?; "
            f'[ -z "$out" ] || printf "%s\\n" "$out"; echo "{MARK} $rc"'
        )
        required = fact.requires_command(**kwargs)
        if required:
            run = (
                f"if command -v {shlex.quote(required)} >/dev/null 2>&1; then {run}; "
                f'else echo "{MARK} {MISSING}"; fi'
            )
        parts.append(run)
    return "; ".join(parts)


def bundle_process(requests: Sequence[Request], output: list[str]) -> list[Any]:
    """Each request's value, in order."""
    values: list[Any] = []
    lines: list[str] = []
    for line in output:
        if not line.startswith(f"{MARK} "):
            lines.append(line)
            continue
        if len(values) == len(requests):
            raise FactProcessError(f"bundled facts: more outputs than the {len(requests)} asked")
        kind, _ = requests[len(values)]
        status = line[len(MARK) + 1 :]
        if status not in (MISSING, "0"):
            raise FactProcessError(f"{kind.__name__}: its command exited with status {status}")
        fact = kind()
        values.append(fact.process(lines) if lines and status == "0" else fact.default())
        lines = []
    if len(values) != len(requests):
        raise FactProcessError(
            f"bundled facts: {len(values)} outputs for {len(requests)} facts (cut short?)"
        )
    return values


class Bundle(FactBase[list[Any]]):
    """The values of several facts (`requests`: fact classes with their arguments), in order."""

    @staticmethod
    def default() -> list[Any]:
        return []

    def command(self, requests: Sequence[Request]) -> str:
        self.requests = requests
        return bundle_command(requests)

    def process(self, output: list[str]) -> list[Any]:
        return bundle_process(self.requests, output)
