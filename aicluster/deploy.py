"""What roles share while pyinfra prepares a run: failing one host alone, keeping a service up."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from pyinfra.api.facts import FactBase
from pyinfra.api.host import Host
from pyinfra.api.operation import OperationMeta
from pyinfra.context import ctx_host, host, state
from pyinfra.operations import systemd

logger = logging.getLogger("pyinfra")
T = TypeVar("T")

# Facts read while pyinfra prepares the run, once per host: they describe the hosts before any
# change, and pyinfra would otherwise send the same command again for every role that asks.
_facts: dict[tuple[str, type[Any]], Any] = {}


def fact(kind: type[FactBase[T]], target: Host | None = None) -> T:
    """A fact of the current host (or `target`), fetched at most once per run."""
    target = target or host
    key = (target.name, kind)
    if key not in _facts:
        _facts[key] = target.get_fact(kind)
    result: T = _facts[key]
    return result


def fail_host(message: str) -> None:
    """Stop the current host with a message; every other host goes on (a re-run converges it)."""
    logger.error(f"{host.print_prefix}{message}")
    # The Host itself, not pyinfra's context proxy: the proxy would stand for whichever host
    # pyinfra works on next, and state.failed_hosts would stop naming this one.
    state.fail_hosts({ctx_host.get()})  # type: ignore[no-untyped-call]


def keep_running(
    unit: str, unit_file: OperationMeta, restart_if: Callable[[], bool] | None
) -> None:
    """A systemd service installed from `unit_file`: loaded when that file changed, running and
    enabled, restarted when `restart_if` says its configuration changed (None: the caller
    restarts it its own way)."""
    systemd.daemon_reload(name="systemd reloaded (unit changed)", _if=unit_file.did_change)
    systemd.service(name=f"{unit} running and enabled", service=unit, running=True, enabled=True)
    if restart_if is None:
        return
    systemd.service(
        name=f"{unit} restarted (configuration changed)",
        service=unit,
        restarted=True,
        _if=restart_if,
    )
