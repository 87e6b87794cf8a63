"""What roles share while pyinfra prepares a run: failing one host without stopping the others."""

from __future__ import annotations

import logging

from pyinfra.context import host, state

logger = logging.getLogger("pyinfra")


def fail_host(message: str) -> None:
    """Stop the current host with a message; every other host goes on (a re-run converges it)."""
    logger.error(f"{host.print_prefix}{message}")
    state.fail_hosts({host})  # type: ignore[no-untyped-call]
