"""What a role wants on a node, compared with what the node has (aicluster.facts.state).

A role describes everything it manages as a Wanted; `differences` lists what is not so yet. None:
the role changes nothing and sends nothing more. Any difference: the role runs its operations,
which check and change each thing themselves; this comparison only ever skips work, so it is
at least as strict as those operations (a service must also have no pending daemon-reload, a held
package must be held).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from pyinfra.facts.files import MARKER_BEGIN_DEFAULT, MARKER_END_DEFAULT

# A file counts as newer than a service's start beyond this: the boot time the start is measured
# from is whole seconds, and a file written in the second a restart began is no reason to restart.
CLOCK_SLACK_S = 2
# dpkg's status abbreviation: desired action, then state ("ii": install, installed).
INSTALLED = ("ii", "hi")
HELD = "hi"
RUNNING = ("running", "waiting", "exited", "listening")  # pyinfra's SystemdStatus, less mounts
ENABLED = ("enabled", "static")  # pyinfra's SystemdEnabled


@dataclass(frozen=True)
class File:
    """A file with exactly this content and mode (and owner, when given)."""

    path: str
    content: str
    mode: str
    user: str | None = None
    group: str | None = None

    @property
    def sha1(self) -> str:
        return hashlib.sha1(self.content.encode()).hexdigest()


@dataclass(frozen=True)
class Directory:
    path: str
    mode: str | None = None
    user: str | None = None
    group: str | None = None


@dataclass(frozen=True)
class Service:
    """A systemd unit, running (or stopped) and enabled, its unit file loaded, and started after
    the files it `reads` last changed (a run stopped between writing one and restarting it, or a
    file another role wrote, leaves it on the old contents)."""

    unit: str
    running: bool = True
    enabled: bool = True
    reads: tuple[str, ...] = ()
    own_unit: bool = False
    """The role writes the unit file (and reloads systemd when it changes): one systemd has not
    loaded yet is a difference. A packaged unit's drop-ins are the administrator's."""

    @property
    def name(self) -> str:
        return self.unit if "." in self.unit else f"{self.unit}.service"


@dataclass(frozen=True)
class User:
    name: str
    home: str
    shell: str


@dataclass(frozen=True)
class NoLine:
    """No line of the file at `path` matches `pattern` (a Python regular expression)."""

    path: str
    pattern: str


@dataclass(frozen=True)
class Block:
    """pyinfra's files.block: the lines between the marker lines are exactly `content`."""

    path: str
    marker: str
    content: str


@dataclass(frozen=True)
class Wanted:
    hostname: str | None = None
    files: tuple[File, ...] = ()
    absent_files: tuple[str, ...] = ()
    directories: tuple[Directory, ...] = ()
    services: tuple[Service, ...] = ()
    packages: tuple[str, ...] = ()
    held: tuple[str, ...] = ()
    users: tuple[User, ...] = ()
    modules: tuple[str, ...] = ()
    no_lines: tuple[NoLine, ...] = ()
    blocks: tuple[Block, ...] = ()

    def probe(self) -> dict[str, list[str]]:
        """The arguments of aicluster.facts.state.ManagedState that read all of this."""
        reads = [path for s in self.services for path in s.reads]
        return {
            "files": list(
                dict.fromkeys([*(f.path for f in self.files), *self.absent_files, *reads])
            ),
            "directories": [d.path for d in self.directories],
            "units": [s.name for s in self.services],
            "packages": sorted({*self.packages, *self.held}),
            "users": [u.name for u in self.users],
            "modules": list(self.modules),
            "texts": self.text_paths(),
        }

    def text_paths(self) -> list[str]:
        rules: tuple[NoLine | Block, ...] = (*self.no_lines, *self.blocks)
        return list(dict.fromkeys(rule.path for rule in rules))

    def summary(self) -> str:
        """'3 files, 1 service and 1 package', for the message of a node already converged."""
        counts = [
            (len(self.files) + len(self.absent_files), "file"),
            (len(self.directories), "directory"),
            (len(self.services), "service"),
            (len({*self.packages, *self.held}), "package"),
            (len(self.users), "user"),
            (len(self.modules), "kernel module"),
            (len(self.text_paths()), "text file"),
        ]
        words = [
            f"{n} {word if n == 1 else 'directories' if word == 'directory' else word + 's'}"
            for n, word in counts
            if n
        ]
        if self.hostname:
            words.insert(0, "hostname")
        return ", ".join(words[:-1]) + (" and " if len(words) > 1 else "") + words[-1]


@dataclass(frozen=True)
class Drift:
    """What a node has of a Wanted that is not so yet."""

    want: Wanted
    state: dict[str, Any]
    differences: tuple[str, ...]

    def reload_pending(self, unit: str) -> bool:
        """The unit's file changed since systemd loaded it (a run stopped before reloading it)."""
        seen = self.state["units"].get(Service(unit).name, {})
        return bool(seen.get("NeedDaemonReload") == "yes")

    def restart_pending(self, unit: str) -> bool:
        """The unit must be reloaded and restarted whatever this run changes: systemd runs an
        older unit file, or it started before a file it reads last changed."""
        wanted = [s for s in self.want.services if s.name == Service(unit).name]
        return self.reload_pending(unit) or any(_stale(self.state, s) for s in wanted)

    def installed(self, package: str) -> bool:
        return self.state["packages"].get(package) in INSTALLED

    def unheld(self) -> list[str]:
        return [p for p in self.want.held if self.state["packages"].get(p) == "ii"]


def drift(want: Wanted, state: dict[str, Any]) -> Drift | None:
    """The node's drift from `want`, None when it has everything as wanted."""
    found = differences(want, state)
    return Drift(want, state, tuple(found)) if found else None


def _ownership(
    what: str, seen: dict[str, str], mode: str | None, user: str | None, group: str | None
) -> list[str]:
    found = []
    if mode is not None and seen["mode"] != mode.lstrip("0"):
        found.append(f"{what}: mode {seen['mode']}, wanted {mode}")
    if user is not None and seen["user"] != user:
        found.append(f"{what}: owner {seen['user']}, wanted {user}")
    if group is not None and seen["group"] != group:
        found.append(f"{what}: group {seen['group']}, wanted {group}")
    return found


def differences(wanted: Wanted, state: dict[str, Any]) -> list[str]:
    """What on the node is not as wanted, one line each (empty: nothing to do)."""
    found: list[str] = []
    if wanted.hostname is not None and state["hostname"] != wanted.hostname:
        found.append(f"hostname is {state['hostname']}, wanted {wanted.hostname}")
    for file in wanted.files:
        seen = state["files"].get(file.path)
        if seen is None:
            found.append(f"{file.path}: missing")
            continue
        if seen["sha1"] != file.sha1:
            found.append(f"{file.path}: content differs")
        found += _ownership(file.path, seen, file.mode, file.user, file.group)
    for path in wanted.absent_files:
        if state["files"].get(path, "unknown") is not None:
            found.append(f"{path}: present, wanted absent")
    for directory in wanted.directories:
        seen = state["directories"].get(directory.path)
        if seen is None:
            found.append(f"{directory.path}/: missing")
            continue
        found += _ownership(
            f"{directory.path}/", seen, directory.mode, directory.user, directory.group
        )
    for service in wanted.services:
        unit = state["units"].get(service.name)
        if unit is None:
            found.append(f"{service.name}: not read")
            continue
        if (unit["SubState"] in RUNNING) != service.running:
            found.append(f"{service.name}: {unit['SubState']}")
        if (unit["UnitFileState"] in ENABLED) != service.enabled:
            found.append(f"{service.name}: {unit['UnitFileState']}")
        if service.own_unit and unit["NeedDaemonReload"] != "no":
            found.append(f"{service.name}: unit file changed since systemd loaded it")
        found += [
            f"{service.name}: started before {path} last changed" for path in _stale(state, service)
        ]
    for package in wanted.packages:
        if state["packages"].get(package) not in INSTALLED:
            found.append(f"package {package}: not installed")
    for package in wanted.held:
        # Only an installed package can be held ("hn": held, not installed, is what apt-mark
        # leaves for a name apt never installed; holding it again would change nothing).
        if state["packages"].get(package) in INSTALLED and state["packages"][package] != HELD:
            found.append(f"package {package}: not held")
    for user in wanted.users:
        seen = state["users"].get(user.name)
        if seen is None:
            found.append(f"user {user.name}: missing")
        elif (seen["home"], seen["shell"]) != (user.home, user.shell):
            found.append(f"user {user.name}: home {seen['home']}, shell {seen['shell']}")
    for module in wanted.modules:
        if not state["modules"].get(module):
            found.append(f"kernel module {module}: not loaded")
    for rule in wanted.no_lines:
        lines = state["texts"].get(rule.path)
        if lines is None:
            continue  # no file: no such line
        pattern = re.compile(rule.pattern)
        if any(pattern.search(line) for line in lines):
            found.append(f"{rule.path}: a line matches {rule.pattern}")
    for block in wanted.blocks:
        if _block(state["texts"].get(block.path), block.marker) != block.content.split("\n"):
            name = " ".join(block.marker.format(mark="").split())
            found.append(f"{block.path}: the {name} block differs")
    return found


def _stale(state: dict[str, Any], service: Service) -> list[str]:
    """The files `service` reads that changed after it started (none when it is not running)."""
    unit = state["units"].get(service.name)
    if unit is None or state["boot"] is None or unit["SubState"] not in RUNNING:
        return []
    entered = unit["ActiveEnterTimestampMonotonic"]
    if not entered.isdigit() or entered == "0":
        return []
    started = state["boot"] + int(entered) / 1_000_000
    return [
        path
        for path in service.reads
        if (seen := state["files"].get(path)) and seen["mtime"] > started + CLOCK_SLACK_S
    ]


def _block(lines: list[str] | None, marker: str) -> list[str] | None:
    """The lines pyinfra's Block fact reads between `marker`'s BEGIN and END lines (its awk: the
    markers are regular expressions found anywhere in a line; every block's lines, in order),
    None when there are none."""
    if lines is None:
        return None
    begin = re.compile(marker.format(mark=MARKER_BEGIN_DEFAULT))
    end = re.compile(marker.format(mark=MARKER_END_DEFAULT))
    inside = False
    found = []
    for line in lines:
        if end.search(line):
            inside = False
        if inside:
            found.append(line)
        if begin.search(line):
            inside = True
    return found or None
