"""What roles share while pyinfra prepares a run: facts read once, skipping a role whose node is
already converged, failing one host alone, keeping a service up."""

from __future__ import annotations

import logging
from collections.abc import Callable
from io import StringIO
from typing import Any, TypeVar

from gevent.event import AsyncResult
from pyinfra.api.facts import FactBase
from pyinfra.api.host import Host
from pyinfra.api.operation import OperationMeta
from pyinfra.context import ctx_host, host, state
from pyinfra.operations import files, systemd

from aicluster import wanted
from aicluster.facts.bundle import Bundle, Request
from aicluster.facts.state import ManagedState

logger = logging.getLogger("pyinfra")
T = TypeVar("T")

# Facts read while pyinfra prepares the run, once per host: they describe the hosts before any
# change, and pyinfra would otherwise send the same command again for every role that asks.
# pyinfra prepares every host at once (one greenlet each): a fact another host's greenlet is
# already reading is waited for, not read again.
_facts: dict[tuple[Any, ...], AsyncResult] = {}


def _key(target: Host, kind: type[Any], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    arguments = ((k, tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items())
    return (target.name, kind, tuple(sorted(arguments)))


def fact(kind: type[FactBase[T]], target: Host | None = None, **kwargs: Any) -> T:
    """A fact of the current host (or `target`), fetched at most once per run."""
    target = target or host
    key = _key(target, kind, kwargs)
    pending = _facts.get(key)
    if pending is None:
        pending = _facts[key] = AsyncResult()
        try:
            pending.set(target.get_fact(kind, **kwargs))
        except BaseException as error:
            pending.set_exception(error)
            raise
    result: T = pending.get()
    return result


def prefetch(*requests: type[FactBase[Any]] | Request) -> None:
    """Read these facts of the current host (classes, or (class, arguments) pairs) in one remote
    command, for fact() to answer from."""
    asked = [r if isinstance(r, tuple) else (r, {}) for r in requests]
    missing = [(kind, kwargs) for kind, kwargs in asked if _key(host, kind, kwargs) not in _facts]
    if not missing:
        return
    values = host.get_fact(Bundle, requests=missing)
    if len(values) != len(missing):  # the host failed: the bundle's default is no value at all
        return
    for (kind, kwargs), value in zip(missing, values, strict=True):
        result = _facts.setdefault(_key(host, kind, kwargs), AsyncResult())
        if not result.ready():
            result.set(value)


def drift(want: wanted.Wanted) -> wanted.Drift | None:
    """What on the current host is not yet as `want` says, read in one remote command.

    None: everything is; the role says so and adds no operation (a no-op run costs one command
    per role). Otherwise the role adds its operations, which read, compare and change each
    thing themselves.
    """
    found = wanted.drift(want, host.get_fact(ManagedState, **want.probe()))
    if found is None:
        host.noop(f"{want.summary()} as wanted")
        return None
    more = f" (and {len(found.differences) - 1} more)" if len(found.differences) > 1 else ""
    logger.debug(f"{host.print_prefix}not converged: {found.differences[0]}{more}")
    return found


# Files put in this run, by host and path: a service that reads a file another role writes
# restarts when it changes (roles/nccl's environment, read by Ray and vLLM).
_written: dict[tuple[str, str], OperationMeta] = {}


def put(file: wanted.File, name: str | None = None) -> OperationMeta:
    """files.put of a wanted file (its content, mode and owner)."""
    op = files.put(
        name=name or file.path,
        src=StringIO(file.content),
        dest=file.path,
        mode=file.mode,
        user=file.user,
        group=file.group,
    )
    _written[(host.name, file.path)] = op
    return op


def written(path: str) -> list[OperationMeta]:
    """The operation of this run that writes `path` on the current host, if a role added one
    (none when that role found the file as wanted)."""
    op = _written.get((host.name, path))
    return [op] if op else []


def fail_host(message: str) -> None:
    """Stop the current host with a message; every other host goes on (a re-run converges it)."""
    logger.error(f"{host.print_prefix}{message}")
    # The Host itself, not pyinfra's context proxy: the proxy would stand for whichever host
    # pyinfra works on next, and state.failed_hosts would stop naming this one.
    state.fail_hosts({ctx_host.get()})  # type: ignore[no-untyped-call]


def keep_running(
    unit: str,
    unit_file: OperationMeta,
    restart_if: Callable[[], bool] | None,
    pending: bool = False,
) -> OperationMeta | None:
    """A systemd service installed from `unit_file`: loaded when that file changed, running and
    enabled, restarted when `restart_if` says its configuration changed (None: the caller
    restarts it its own way). `pending`: systemd still runs an older unit file than the one on
    disk, or the service started before a file it reads changed (a run stopped half-way), so it
    is reloaded and restarted whatever changes. Returns the restart operation, if any."""
    reload_if = None if pending else unit_file.did_change
    systemd.daemon_reload(name="systemd reloaded (unit changed)", _if=reload_if)
    systemd.service(name=f"{unit} running and enabled", service=unit, running=True, enabled=True)
    if restart_if is None:
        return None
    return restart(unit, None if pending else restart_if)


class AnyChanged:
    """pyinfra's any_changed over lists of operations that grow while hosts are prepared (the
    operations of every host: one host restarts when another's changed), read at execution; a
    host that failed before running its operation is passed over. `always`: true whatever."""

    def __init__(self, *lists: list[OperationMeta], always: list[str] | None = None) -> None:
        self.lists = lists
        self.always = always if always is not None else []

    def __call__(self) -> bool:
        if self.always:
            return True
        for op in (op for ops in self.lists for op in ops):
            try:
                if op.did_change():
                    return True
            except RuntimeError:  # a failed host never ran it
                continue
        return False


def restart(unit: str, restart_if: Callable[[], bool] | None) -> OperationMeta:
    """Restart `unit` when `restart_if` says so at execution (None: always)."""
    return systemd.service(
        name=f"{unit} restarted (configuration changed)",
        service=unit,
        restarted=True,
        _if=restart_if,
    )
