"""Operation plans of roles: what a role WOULD run on each host, computed without touching one.

How it works (pyinfra 3.10 API, no SSH, nothing executed):

1. The cluster spec is written to a YAML file and turned into pyinfra host data by
   aicluster.inventory.pyinfra_groups, exactly as inventories/<name>.py does; each host is named
   `@fake/<node>` so pyinfra picks its `@fake` connector (which never connects anywhere).
2. `Host.get_fact` is patched for the run: a fact listed in the host's `facts` mapping returns that
   value (or the value a callable gives for the fact's arguments, e.g. File by path). aicluster's
   own facts get their values from REAL captured outputs run through the fact's own `process()`
   (`captured(NvidiaPciDevices, path)`); pyinfra's facts (LinuxDistribution, KernelVersion, ...)
   are given as the values pyinfra would return. Any other fact falls through to the fake
   connector, whose commands print nothing, so it takes the fact's default(): a fresh host, with
   no such file, no such package, no such service.
3. `add_deploy(state, role)` prepares the role for every host, as `pyinfra INVENTORY DEPLOY` does
   before it asks to go on. Each operation's commands are then drawn from its command generator
   (what pyinfra would send with the facts above); nothing is executed.
4. An operation gated by `_if=other.did_change` keeps the names of the operations it waits for
   (`Op.after_change_of`), and `HostPlan.runs(name)` follows pyinfra's rule: it runs when it has
   commands and every operation it waits for runs too. That is how a plan test checks idempotence
   without a host: on a converged host the gating operation has no commands, so neither runs.
5. noop messages, warnings and errors logged for the host, and whether the role failed it
   (aicluster.deploy.fail_host), come back in the HostPlan. pyinfra draws each operation's
   commands twice (its change check, then step 3), so a noop logged inside an operation appears
   twice; the role's own host.noop() calls appear once.

aicluster.deploy caches facts per run by host name and aicluster.inventory.host_spec caches the
spec: both are emptied before every plan, so plans of one test session never see each other.

Writing a plan test for another role: build the spec (`spec_from_inventory`), give each node its
facts (`captured(...)` for aicluster facts, values for pyinfra's), call `plan_role(role, spec,
tmp_path, {node: facts})`, then assert on `plans[node].op(name).commands`, `.uploads`, `.runs()`,
`.noops`, `.errors`, `.failed`.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shlex
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from pyinfra.api import Config, Inventory, State
from pyinfra.api.command import FileUploadCommand, FunctionCommand, StringCommand
from pyinfra.api.connect import connect_all
from pyinfra.api.deploy import add_deploy
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.facts import FactBase
from pyinfra.api.host import Host
from pyinfra.api.operation import OperationMeta
from pyinfra.context import ctx_host, ctx_state

import roles.ray
import roles.vllm
from aicluster import deploy as aicluster_deploy
from aicluster.deploy import AnyChanged
from aicluster.facts import command_output
from aicluster.facts.bundle import Bundle
from aicluster.facts.state import empty_state
from aicluster.inventory import host_spec, pyinfra_groups
from aicluster.spec import ClusterSpec

ROOT = Path(__file__).parents[2]
INVENTORIES = ROOT / "inventories"

# A fact value, or a function of the fact's keyword arguments (File(path=...)) giving one.
FactValue = Any
Facts = Mapping[type[FactBase[Any]], FactValue]


def captured(fact: type[FactBase[Any]], path: Path) -> Any:
    """The value `fact` takes on a host that printed the REAL output in `path` (a capture file with
    its `$ command` / `[exit N]` lines, or a bare output): the fact's own process() reads it."""
    return fact.process(command_output(path.read_text()).splitlines())


def spec_from_inventory(
    name: str, edit: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """inventories/<name>.yaml as plain data, changed in place by `edit` (validated later)."""
    data: dict[str, Any] = yaml.safe_load((INVENTORIES / f"{name}.yaml").read_text())
    if edit:
        edit(data)
    return data


@dataclass(frozen=True)
class Op:
    """One operation prepared for one host."""

    name: str
    commands: tuple[str, ...]
    """Shell commands as pyinfra would send them; uploads as `upload <dest>`, Python steps as
    `python <function>`."""
    uploads: Mapping[str, str]
    """Destination path -> content of each file the operation would upload."""
    after_change_of: tuple[str | tuple[str, ...], ...]
    """Names of the operations whose change this one waits for (`_if=op.did_change`); a tuple
    inside stands for `_if=any_changed(...)`: a change of any one of them."""
    arguments: Mapping[str, Any]
    """pyinfra's global arguments of the operation (_serial, _sudo, ...)."""


@dataclass
class HostPlan:
    node: str
    ops: list[Op] = field(default_factory=list)
    noops: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    failed: bool = False

    def names(self) -> list[str]:
        return [op.name for op in self.ops]

    def op(self, name: str) -> Op:
        found = [op for op in self.ops if op.name == name]
        if len(found) != 1:
            raise AssertionError(f"{self.node}: no single operation {name!r} in {self.names()}")
        return found[0]

    def find(self, prefix: str) -> Op:
        """The one operation whose name starts with `prefix` (names that carry a version)."""
        found = [op for op in self.ops if op.name.startswith(prefix)]
        if len(found) != 1:
            raise AssertionError(f"{self.node}: no single operation {prefix!r}… in {self.names()}")
        return found[0]

    def runs(self, name: str) -> bool:
        """Whether pyinfra would run the operation: it has commands, and every operation whose
        change it waits for would run (and so change) too."""
        op = self.op(name)
        return bool(op.commands) and all(
            self.runs(other) if isinstance(other, str) else any(self.runs(o) for o in other)
            for other in op.after_change_of
        )

    def commands(self) -> list[str]:
        return [command for op in self.ops for command in op.commands]


class _Records(logging.Handler):
    """pyinfra's log lines for the run: noops (info), warnings, errors, each with its host prefix."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelno, record.getMessage()))


def _command_text(command: Any, uploads: dict[str, str]) -> str:
    if isinstance(command, StringCommand):
        return str(command.get_raw_value())
    if isinstance(command, FileUploadCommand):
        src = command.src
        if hasattr(src, "getvalue"):
            uploads[command.dest] = src.getvalue()
        else:
            uploads[command.dest] = Path(src).read_text()
        return f"upload {command.dest}"
    if isinstance(command, FunctionCommand):
        return f"python {command.function.__name__}"
    return str(command)


@contextmanager
def _facts_of(hosts: Mapping[str, Facts]) -> Iterator[None]:
    """Host.get_fact answering from `hosts` (by host name) first, then from the fake connector."""
    original = Host.get_fact

    def get_fact(self: Host, cls: Any, *args: Any, **kwargs: Any) -> Any:
        facts = hosts.get(self.name, {})
        if cls is Bundle:  # each bundled fact answered as if asked alone
            return [get_fact(self, kind, **arguments) for kind, arguments in kwargs["requests"]]
        if cls in facts:
            value = facts[cls]
            return value(**kwargs) if callable(value) else value
        return original(self, cls, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Host, "get_fact", get_fact)
        yield


def plan_role(
    role: Callable[[], None],
    spec: dict[str, Any],
    directory: Path,
    facts: Mapping[str, Facts],
    data: Mapping[str, Any] | None = None,
) -> dict[str, HostPlan]:
    """Prepare `role` for every node of `spec` that has an entry in `facts`; plans by node name.
    `data`: more pyinfra host data for every host, as `pyinfra --data KEY=VALUE` gives."""
    spec_file = directory / "cluster.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    groups = pyinfra_groups(ClusterSpec.model_validate(spec), spec_file)
    hosts = [
        (f"@fake/{name}", {**host_data, **(data or {}), "fake_delay": 0, "fake_delay_jitter": 0})
        for name, host_data in groups["nodes"]
        if name in facts
    ]
    missing = set(facts) - {host_data["aicluster_node"] for _, host_data in hosts}
    assert not missing, f"no such node in the spec: {sorted(missing)}"
    state = State(Inventory((hosts, {})), Config())
    state.print_noop_info = True
    connect_all(state)  # the @fake connector: marks the hosts active, opens nothing
    aicluster_deploy._facts.clear()
    aicluster_deploy._written.clear()
    # Operations roles gather across hosts for restarts that wait on other hosts' changes.
    for ops in (roles.ray.RESTARTS, roles.vllm._ENGINE_CONFIG, roles.vllm._ENGINE_PENDING):
        ops.clear()
    host_spec.cache_clear()
    records = _Records()
    pyinfra_logger = logging.getLogger("pyinfra")
    level = pyinfra_logger.level
    pyinfra_logger.addHandler(records)
    pyinfra_logger.setLevel(logging.DEBUG)
    try:
        with _facts_of({f"@fake/{node}": node_facts for node, node_facts in facts.items()}):
            try:
                add_deploy(state, role)
            except PyinfraError as error:
                # fail_host on the last host left: pyinfra stops the run, as its CLI does.
                if str(error) != "No hosts remaining!":
                    raise
            return {
                host.data.aicluster_node: _host_plan(state, host, records)
                for host in state.inventory
            }
    finally:
        pyinfra_logger.removeHandler(records)
        pyinfra_logger.setLevel(level)


def _host_plan(state: State, host: Host, records: _Records) -> HostPlan:
    plan = HostPlan(node=host.data.aicluster_node, failed=host in state.failed_hosts)
    prefix = host.print_prefix
    for level, line in records.lines:
        if not line.startswith(prefix):
            continue
        text = line.removeprefix(prefix)
        if level >= logging.ERROR:
            plan.errors.append(text)
        elif level >= logging.WARNING:
            plan.warnings.append(text)
        elif text.startswith("noop: "):
            plan.noops.append(text.removeprefix("noop: "))
    names = {op_hash: _op_name(state, op_hash) for op_hash in state.ops.get(host, {})}
    for op_hash in state.get_op_order():
        if op_hash not in names:
            continue
        data = state.get_op_data_for_host(host, op_hash)
        uploads: dict[str, str] = {}
        with ctx_state.use(state), ctx_host.use(host):
            commands = tuple(_command_text(c, uploads) for c in data.command_generator())
        conditions = data.global_arguments.get("_if") or []
        if callable(conditions):
            conditions = [conditions]
        plan.ops.append(
            Op(
                name=names[op_hash],
                commands=commands,
                uploads=uploads,
                after_change_of=tuple(_changed_op(c, names) for c in conditions),
                arguments={**state.op_meta[op_hash].global_arguments, **data.global_arguments},
            )
        )
    return plan


def _changed_op(condition: Callable[[], bool], names: Mapping[str, str]) -> str | tuple[str, ...]:
    """The name of the operation behind `_if=<operation>.did_change`, or the names behind
    pyinfra's `any_changed(...)` or aicluster.deploy.AnyChanged (this host's operations among
    them, by name, once each: the harness prepares in pyinfra's API mode, where operations are
    told apart by their index on each host, so another host's cannot be named); DESIGN.md
    allows no other kind of condition on a change, so any other is reported rather than
    guessed."""
    if isinstance(condition, AnyChanged):
        ops = (op for ops in condition.lists for op in ops)
        return tuple(dict.fromkeys(names[op._hash] for op in ops if op._hash in names))
    cells = [cell.cell_contents for cell in getattr(condition, "__closure__", None) or ()]
    if getattr(condition, "__qualname__", "").startswith("any_changed.") and len(cells) == 1:
        return tuple(names[meta._hash] for meta in cells[0])
    meta = getattr(condition, "__self__", None)
    if not isinstance(meta, OperationMeta) or getattr(condition, "__name__", "") != "did_change":
        raise AssertionError(f"_if={condition!r}: only _if=<operation>.did_change is understood")
    return names[meta._hash]


def _op_name(state: State, op_hash: str) -> str:
    """The operation's own name, without the deploy's prefix ("NVIDIA driver | ...")."""
    (name,) = state.op_meta[op_hash].names
    return str(name).rpartition(" | ")[2]


_DEB_URL = re.compile(r"/([A-Za-z0-9.+-]+)_[^/ ]*\.deb")


def converged_state(plan: HostPlan) -> Callable[..., dict[str, Any]]:
    """aicluster.facts.state.ManagedState's value (a function of the probe's arguments, as a
    FactValue may be) on the host once every operation of `plan` ran:
    what the uploads, chmod/chown, apt-get install, apt-mark hold, systemctl start/enable, mkdir,
    modprobe and rm commands leave. A second plan given this state must add no operation: that
    proves the role's Wanted agrees with what its own operations make."""
    state = empty_state()
    for op in plan.ops:
        for command in op.commands:
            words = shlex.split(command) if not command.startswith("(") else command.split()
            if command.startswith("upload "):
                path = command.removeprefix("upload ")
                state["files"][path] = {
                    "mode": "644",
                    "user": "root",
                    "group": "root",
                    "sha1": hashlib.sha1(op.uploads[path].encode()).hexdigest(),
                    "mtime": 0,
                }
            elif words[:1] == ["chmod"] and words[-1] in state["files"]:
                state["files"][words[-1]]["mode"] = words[-2].lstrip("0")
            elif words[:1] == ["chmod"] and words[-1] in state["directories"]:
                state["directories"][words[-1]]["mode"] = words[-2].lstrip("0")
            elif words[:1] == ["chown"] and words[-1] in state["files"]:
                user, _, group = words[-2].partition(":")
                state["files"][words[-1]].update(user=user, group=group or user)
            elif words[:2] == ["mkdir", "-p"]:
                for path in words[2:]:
                    state["directories"][path] = {"mode": "755", "user": "root", "group": "root"}
            elif words[:2] == ["rm", "-f"]:
                for path in words[2:]:
                    state["files"][path] = None
            elif "apt-get" in words and "install" in words:
                for name in words[words.index("install") + 1 :]:
                    if not name.startswith("-"):
                        state["packages"][name] = "ii"
            elif "dpkg" in words and "-i" in words:
                for name in _DEB_URL.findall(" ".join(op.commands)):
                    state["packages"][name] = "ii"
            elif words[:2] == ["apt-mark", "hold"]:
                for name in words[2:]:
                    state["packages"][name] = "hi"
            elif words[:1] == ["systemctl"] and words[1:2] in (["start"], ["restart"], ["enable"]):
                unit = state["units"].setdefault(
                    words[2],
                    {
                        "SubState": "dead",
                        "UnitFileState": "disabled",
                        "NeedDaemonReload": "no",
                        "ActiveEnterTimestampMonotonic": "0",
                    },
                )
                if words[1] == "enable":
                    unit["UnitFileState"] = "enabled"
                else:
                    unit["SubState"] = "running"
            elif words[:1] == ["modprobe"]:
                for name in words[1:]:
                    if not name.startswith("-"):
                        state["modules"][name] = True

    def probed(**probe: Any) -> dict[str, Any]:
        # What the plan did not make is not there, as the real command reports it.
        for kind in ("files", "directories"):
            for path in probe.get(kind, ()):
                state[kind].setdefault(path, None)
        return state

    return probed
