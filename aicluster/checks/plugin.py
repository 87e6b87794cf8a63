"""The command-line options of aicluster's checks, registered with pytest at start-up (entry
point pytest11) so that `pytest --pyargs aicluster.checks --aicluster-spec ...` parses them. All the
rest (fixtures, parameters, verdicts) is in conftest.py and applies to the checks only."""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("aicluster")
    group.addoption(
        "--aicluster-spec",
        default=os.environ.get("AICLUSTER_SPEC"),
        help="inventory (x.yaml or x.py) giving the expected values; default $AICLUSTER_SPEC",
    )
    group.addoption(
        "--aicluster-node",
        default=None,
        help="the spec node the single host is (for local:// or a host named otherwise)",
    )
    group.addoption(
        "--aicluster-only",
        default="",
        help="comma-separated check names to run (function names without test_)",
    )
    group.addoption(
        "--aicluster-scope",
        choices=("all", "node", "cluster"),
        default="all",
        help="node checks (per host), cluster checks (once), or both",
    )
    group.addoption(
        "--aicluster-deep",
        action="store_true",
        help="also the deep checks: minutes of load (all-reduce bandwidth, GPU peer-to-peer)",
    )
    group.addoption("--aicluster-report", default=None, help="append one JSON line per verdict")
