"""pytest wiring of the checks: options, the spec, which node a host is, per-item parameters, verdicts.

Loaded by pytest whenever aicluster.checks is collected (`--pyargs aicluster.checks`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
import testinfra
import testinfra.host

from aicluster.checks import CheckWarned, Finding, about, check_name
from aicluster.checks.context import Target, node_for_host, node_items
from aicluster.facts.system import Container, parse_container
from aicluster.inventory import SpecError, load_spec
from aicluster.spec import ClusterSpec, Node


def _spec(config: pytest.Config) -> ClusterSpec:
    cached: ClusterSpec | None = getattr(config, "_aicluster_spec", None)
    if cached is not None:
        return cached
    inventory = config.getoption("aicluster_spec")
    if not inventory:
        raise pytest.UsageError(
            "aicluster.checks needs --aicluster-spec INVENTORY (or $AICLUSTER_SPEC)"
        )
    try:
        spec = load_spec(inventory)
    except SpecError as error:
        raise pytest.UsageError(str(error)) from None
    except OSError as error:
        raise pytest.UsageError(f"{inventory}: {error.strerror}") from None
    config._aicluster_spec = spec  # type: ignore[attr-defined]
    return spec


def _host_specs(config: pytest.Config) -> list[str]:
    hosts = config.getoption("hosts")
    return [h for h in hosts.split(",") if h] if hosts else []


def _node_of(config: pytest.Config, hostspec: str) -> Node:
    spec = _spec(config)
    try:
        return node_for_host(spec, hostspec, config.getoption("aicluster_node"))
    except LookupError as error:
        raise pytest.UsageError(str(error)) from None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Per-GPU, per-peer, per-port… parameters of each node's own spec, so one failure never hides
    another. With several hosts, pairs of a host and another node's item are deselected below."""
    kinds = [
        name
        for name in ("gpu", "peer", "fabric_port", "sysctl_key", "unit", "member")
        if name in metafunc.fixturenames
    ]
    if not kinds:
        return
    spec = _spec(metafunc.config)
    if "_testinfra_host" in metafunc.fixturenames:
        nodes = [_node_of(metafunc.config, h) for h in _host_specs(metafunc.config)] or list(
            spec.nodes
        )
    else:
        nodes = list(spec.nodes)
    for kind in kinds:
        targets = [target for node in nodes for target in node_items(spec, node, kind)]
        metafunc.parametrize(kind, targets, ids=[t.id for t in targets])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    only = {name.strip() for name in config.getoption("aicluster_only").split(",") if name.strip()}
    scope = config.getoption("aicluster_scope")
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        function = getattr(item, "originalname", item.name)
        cluster = getattr(getattr(item, "module", None), "SCOPE", "node") == "cluster"
        wanted = (not only or check_name(function) in only) and (
            scope == "all" or (scope == "cluster") == cluster
        )
        params = getattr(getattr(item, "callspec", None), "params", {})
        host = params.get("_testinfra_host")
        if wanted and host is not None:
            node = _node_of(config, _hostspec(host)).name
            wanted = all(t.node == node for t in params.values() if isinstance(t, Target))
        (keep if wanted else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def _hostspec(host: testinfra.host.Host) -> str:
    return str(host.backend.hostname)


@pytest.fixture(scope="session")
def spec(pytestconfig: pytest.Config) -> ClusterSpec:
    return _spec(pytestconfig)


@pytest.fixture
def node(pytestconfig: pytest.Config, host: testinfra.host.Host) -> Node:
    """The spec's node this host is."""
    return _node_of(pytestconfig, _hostspec(host))


@pytest.fixture(scope="module")
def container(host: testinfra.host.Host) -> str | None:
    """The container technology the node runs in (None on metal or a VM), asked once per host
    and module, not once per check and item."""
    return parse_container(host.run(Container().command()).stdout)


@pytest.fixture(scope="module")
def hosts(pytestconfig: pytest.Config, spec: ClusterSpec) -> dict[str, testinfra.host.Host]:
    """A testinfra host per spec node (for the cluster checks), from --hosts (and --ssh-config)
    when given, else from the spec's SSH settings."""
    option = pytestconfig.option
    given = [h for h in (option.hosts or "").split(",") if h]
    ssh_config = option.ssh_config
    found: dict[str, testinfra.host.Host] = {}
    for hostspec in given:
        name = node_for_host(spec, hostspec).name
        found[name] = testinfra.get_host(hostspec, ssh_config=ssh_config, sudo=option.sudo)
    for node in spec.nodes:
        if node.name not in found:
            hostspec = f"ssh://{node.ssh.user}@{node.ssh.address}:{node.ssh.port}"
            found[node.name] = testinfra.get_host(
                hostspec, ssh_config=ssh_config, sudo=node.ssh.user != "root"
            )
    return found


# --- verdicts ---------------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    finding = call.excinfo.value if call.excinfo is not None else None
    if isinstance(finding, CheckWarned):
        # A warning is not a failure: plain pytest counts it as passed and lists it at the end.
        report.outcome = "passed"
        report.longrepr = None
    if report.when == "call" or report.outcome != "passed":
        record = _record(item, report, finding)
        report.user_properties.append(("aicluster", record))
        path = item.config.getoption("aicluster_report")
        if path:
            with Path(path).open("a") as out:
                out.write(json.dumps(record) + "\n")
    return report


def _record(
    item: pytest.Item, report: pytest.TestReport, finding: BaseException | None
) -> dict[str, Any]:
    params = getattr(getattr(item, "callspec", None), "params", {})
    host = params.get("_testinfra_host")
    targets = [t.id for t in params.values() if isinstance(t, Target)]
    function = getattr(item, "function", None)
    doc = about(getattr(function, "__doc__", None))
    where = _node_of(item.config, _hostspec(host)).name if host is not None else "cluster"
    reason, fix = None, None
    if isinstance(finding, Finding):
        verdict, reason, fix = finding.verdict, finding.reason, finding.fix
    elif report.skipped:
        verdict = "skip"
        longrepr = report.longrepr
        reason = str(longrepr[2] if isinstance(longrepr, tuple) else longrepr).removeprefix(
            "Skipped: "
        )
    elif report.failed:
        verdict = "fail"
        reason = _unexpected(finding)
    else:
        verdict = "pass"
        # What a passing check measured (record_property("measured", ...)) is worth reading.
        reason = next((str(v) for k, v in item.user_properties if k == "measured"), None)
    return {
        "node": where,
        "check": check_name(getattr(item, "originalname", item.name)),
        "item": "/".join(targets) or None,
        "verdict": verdict,
        "reason": reason,
        "fix": fix,
        "about": doc,
    }


EMPTY_PARAMETERS = re.compile(r"got empty parameter set for \((\w+)\)")
NOTHING_TO_CHECK = {
    "gpu": "no GPUs in the spec",
    "peer": "no other node",
    "fabric_port": "no fabric ports in the spec",
    "unit": "no aicluster service on this node",
}


def _unexpected(error: BaseException | None) -> str:
    """One line for an error no check anticipated: unreachable host, a command that crashed."""
    if error is None:
        return "failed (see pytest's output)"
    result = error.args[0] if error.args else None
    stderr = getattr(result, "stderr", None)
    if isinstance(error, RuntimeError) and stderr is not None:
        lines = [line for line in str(stderr).splitlines() if line.strip()]
        return f"cannot run commands over ssh: {lines[-1] if lines else 'ssh exited 255'}"
    text = f"{type(error).__name__}: {error}".splitlines()
    return text[0][:300]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    warned = [
        value
        for report in terminalreporter.stats.get("passed", [])
        for key, value in report.user_properties
        if key == "aicluster" and value["verdict"] == "warn"
    ]
    if warned:
        terminalreporter.section("aicluster warnings")
        for record in warned:
            item = f"[{record['item']}]" if record["item"] else ""
            fix = f" fix: {record['fix']}" if record["fix"] else ""
            terminalreporter.line(
                f"{record['node']} {record['check']}{item}: {record['reason']}{fix}"
            )
