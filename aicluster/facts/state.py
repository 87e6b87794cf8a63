"""What a role manages on a node, read in ONE remote command: files, directories, services,
packages, users, kernel modules, a few small text files and the hostname.

pyinfra's operations each ask their own facts (a file's existence, then its hash, a service's
state, then whether it is enabled...), one remote command apiece, on every run. A role asks this
fact first; when everything it manages is already as wanted (aicluster.wanted) it changes nothing
and sends nothing else. See aicluster.deploy.converged.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from typing import Any

from pyinfra.api.facts import FactBase

from aicluster.facts import ParseError, process_with, quote_line

# The properties of a unit, in the order the command prints them. ActiveEnterTimestampMonotonic:
# microseconds since boot when it last started (0: never), against the boot time in seconds since
# the epoch (/proc/stat's btime) to compare with a file's mtime.
UNIT_PROPERTIES = ("SubState", "UnitFileState", "NeedDaemonReload", "ActiveEnterTimestampMonotonic")
# Each line of a text file after "|"; awk ends an unterminated last line too (sed would not).
AWK_PREFIX = '{print "|" $0}'


def state_command(
    files: Iterable[str] = (),
    directories: Iterable[str] = (),
    units: Iterable[str] = (),
    packages: Iterable[str] = (),
    users: Iterable[str] = (),
    modules: Iterable[str] = (),
    texts: Iterable[str] = (),
) -> str:
    """One shell script printing a line per item (a text file: a line, then its lines after '|').

    Files are read as a SHA-1 only, never their content: some carry secrets.
    """
    q = shlex.quote
    parts = ['echo "hostname $(uname -n)"']
    if units:
        parts.append("awk '/^btime /{print \"boot \" $2}' /proc/stat")
    for path in files:
        parts.append(
            f"if [ -f {q(path)} ]; then echo \"file $(stat -L -c '%a %U %G' {q(path)}) "
            f'$(sha1sum < {q(path)} | cut -d" " -f1) $(stat -L -c %Y {q(path)}) "{q(path)}; '
            f'else echo "file - "{q(path)}; fi'
        )
    for path in directories:
        parts.append(
            f"if [ -d {q(path)} ]; then echo \"directory $(stat -L -c '%a %U %G' {q(path)}) \"{q(path)}; "
            f'else echo "directory - "{q(path)}; fi'
        )
    for unit in units:
        reads = "; ".join(
            f"{name}=$(systemctl show -p {name} --value {q(unit)} 2>/dev/null)"
            for name in UNIT_PROPERTIES
        )
        # An empty value (no such unit) prints as "-", so every line has all its fields.
        values = " ".join(f"${{{name}:--}}" for name in UNIT_PROPERTIES)
        parts.append(f'{reads}; echo "unit "{q(unit)}" {values}"')
    if packages:
        names = " ".join(q(name) for name in packages)
        parts.append(
            f"dpkg-query -W -f='package ${{Package}} ${{db:Status-Abbrev}}\\n' {names} "
            "2>/dev/null || true"
        )
    for name in users:
        parts.append(f'echo "user "{q(name)}" $(getent passwd {q(name)} || true)"')
    for name in modules:
        parts.append(
            f'if [ -d /sys/module/{q(name.replace("-", "_"))} ]; then echo "module + "{q(name)}; '
            f'else echo "module - "{q(name)}; fi'
        )
    for path in texts:
        parts.append(
            f'if [ -f {q(path)} ]; then echo "text + "{q(path)}; awk {q(AWK_PREFIX)} {q(path)}; '
            f'else echo "text - "{q(path)}; fi'
        )
    return "; ".join(parts)


def empty_state() -> dict[str, Any]:
    """What nothing read looks like: every managed thing then counts as missing."""
    return {
        "hostname": None,
        "boot": None,
        "files": {},
        "directories": {},
        "units": {},
        "packages": {},
        "users": {},
        "modules": {},
        "texts": {},
    }


def _owned(fields: list[str], line: str) -> dict[str, str]:
    if len(fields) < 3:
        raise ParseError(f"managed state: expected mode, user and group in {quote_line(line)}")
    return {"mode": fields[0], "user": fields[1], "group": fields[2]}


def parse_state(text: str) -> dict[str, Any]:
    """The output of state_command → {"hostname", "boot" (seconds since the epoch), "files": {path:
    {mode, user, group, sha1, mtime} | None}, "directories": {path: {mode, user, group} | None},
    "units": {unit: {SubState, ...}},
    "packages": {name: dpkg status abbreviation}, "users": {name: {home, shell} | None},
    "modules": {name: loaded}, "texts": {path: [lines] | None}} (None: not there)."""
    state = empty_state()
    text_lines: list[str] | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("|"):
            if text_lines is None:
                raise ParseError(f"managed state line {number}: text line outside a text file")
            text_lines.append(line[1:])
            continue
        text_lines = None
        kind, _, rest = line.partition(" ")
        try:
            if kind == "hostname":
                state["hostname"] = rest
            elif kind == "boot":
                state["boot"] = int(rest)
            elif kind in ("file", "directory"):
                if rest.startswith("- "):
                    state["files" if kind == "file" else "directories"][rest[2:]] = None
                    continue
                fields = rest.split(" ", 5 if kind == "file" else 3)
                path = fields[-1]
                if kind == "file":
                    if len(fields) != 6:
                        raise ValueError
                    state["files"][path] = {
                        **_owned(fields, line),
                        "sha1": fields[3],
                        "mtime": int(fields[4]),
                    }
                else:
                    state["directories"][path] = _owned(fields, line)
            elif kind == "unit":
                unit, *values = rest.split(" ")
                if len(values) != len(UNIT_PROPERTIES):
                    raise ValueError
                state["units"][unit] = dict(zip(UNIT_PROPERTIES, values, strict=True))
            elif kind == "package":
                name, _, status = rest.partition(" ")
                state["packages"][name] = status.strip()
            elif kind == "user":
                name, _, entry = rest.partition(" ")
                fields = entry.split(":")
                state["users"][name] = (
                    {"home": fields[5], "shell": fields[6]} if len(fields) == 7 else None
                )
            elif kind == "module":
                present, name = rest.split(" ")
                state["modules"][name] = present == "+"
            elif kind == "text":
                present, path = rest.split(" ", 1)
                text_lines = [] if present == "+" else None
                state["texts"][path] = text_lines
            else:
                raise ValueError
        except (ValueError, IndexError):
            raise ParseError(
                f"managed state line {number}: unexpected {quote_line(line)}"
            ) from None
    return state


class ManagedState(FactBase[dict[str, Any]]):
    """The current state of what one role manages (arguments: see state_command)."""

    def command(
        self,
        files: Iterable[str] = (),
        directories: Iterable[str] = (),
        units: Iterable[str] = (),
        packages: Iterable[str] = (),
        users: Iterable[str] = (),
        modules: Iterable[str] = (),
        texts: Iterable[str] = (),
    ) -> str:
        return state_command(files, directories, units, packages, users, modules, texts)

    @staticmethod
    def default() -> dict[str, Any]:
        return empty_state()

    @staticmethod
    def process(output: list[str]) -> dict[str, Any]:
        return process_with(parse_state, output)
