"""Readiness checks: is each node, and the cluster as a whole, ready to serve?

Each check is one pytest function on testinfra's `host`, named for what it proves, with its
expected values from the spec. Run them with `aicluster verify INVENTORY` (parallel across nodes,
a table, JSON, JUnit), or as plain pytest by people who already run testinfra:

    pytest --pyargs aicluster.checks --aicluster-spec inventories/homelab.yaml \\
        --hosts ssh://gpu1,ssh://gpu2

A check ends in one of four verdicts: pass; warn (works, but something is off); fail; skip (does
not apply to this node, with the reason). A warning or a failure carries the reason and the fix.
"""

from __future__ import annotations

from typing import NoReturn

# The names people pass to --only and read in the table: the function name without "test_".
PREFIX = "test_"


class Finding(Exception):
    """A check's verdict other than pass, with the reason and what to do about it."""

    verdict = "fail"

    def __init__(self, reason: str, fix: str | None = None) -> None:
        self.reason = reason
        self.fix = fix
        super().__init__(reason if fix is None else f"{reason}\nfix: {fix}")


class CheckFailed(Finding, AssertionError):
    """The node or cluster is not ready."""


class CheckWarned(Finding):
    """Ready, but something deserves attention."""

    verdict = "warn"


def fail(reason: str, fix: str | None = None) -> NoReturn:
    raise CheckFailed(reason, fix)


def warn(reason: str, fix: str | None = None) -> NoReturn:
    raise CheckWarned(reason, fix)


def check_name(function_name: str) -> str:
    return function_name.removeprefix(PREFIX)


def about(doc: str | None) -> str:
    """What a check proves: the first paragraph of its docstring, on one line."""
    return " ".join((doc or "").strip().split("\n\n")[0].split())
