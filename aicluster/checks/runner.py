"""`aicluster verify`: every node's checks in parallel (one pytest per node), the cluster checks
once, one table; JSON and JUnit for machines."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aicluster.checks import PREFIX, about, check_name
from aicluster.inventory import spec_path
from aicluster.spec import ClusterSpec, Node

VERDICTS = ("pass", "warn", "fail", "skip")
# A node that hangs (a stuck NFS mount, a wedged driver) must not hang the whole verify.
NODE_TIMEOUT_S = 600


class VerifyError(Exception):
    """The checks could not run at all (bad option, broken installation): not a verdict."""


@dataclass(frozen=True)
class Job:
    name: str  # a node's name, or "cluster"
    arguments: tuple[str, ...]


def check_names() -> dict[str, str]:
    """Every check's name (what --only takes) and the first line of what it proves."""
    import aicluster.checks as package

    names: dict[str, str] = {}
    for module in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if not module.name.startswith(PREFIX):
            continue
        loaded = importlib.import_module(f"{package.__name__}.{module.name}")
        for name, function in vars(loaded).items():
            if name.startswith(PREFIX) and callable(function):
                names[check_name(name)] = about(function.__doc__)
    return names


def ssh_config(spec: ClusterSpec, inventory: Path, control_dir: Path) -> str:
    """An OpenSSH client config with one Host per node, as the spec (and pyinfra) connect."""
    base = inventory.resolve().parent
    blocks = []
    for node in spec.nodes:
        lines = [
            f"Host {node.name}",
            f"  HostName {node.ssh.address}",
            f"  Port {node.ssh.port}",
            f"  User {node.ssh.user}",
            "  BatchMode yes",
            "  LogLevel ERROR",
            f"  ControlPath {control_dir}/%C",
        ]
        if node.ssh.key_file:
            lines += [f"  IdentityFile {base / node.ssh.key_file}", "  IdentitiesOnly yes"]
        if node.ssh.known_hosts_file:
            lines += [
                f"  UserKnownHostsFile {base / node.ssh.known_hosts_file}",
                "  StrictHostKeyChecking yes",
            ]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def hostspec(node: Node, local: bool) -> str:
    if local:
        return "local://"
    return f"ssh://{node.name}" + ("?sudo=true" if node.ssh.user != "root" else "")


def _pytest(job: Job, workdir: Path) -> tuple[Job, int, str]:
    report = workdir / f"{job.name}.jsonl"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "--pyargs",
        "aicluster.checks",
        "-c",
        str(workdir / "pytest.ini"),
        "--rootdir",
        str(workdir),
        "-p",
        "no:cacheprovider",
        "-q",
        "--no-header",
        "--tb=no",
        f"--aicluster-report={report}",
        *job.arguments,
    ]
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=NODE_TIMEOUT_S,
            cwd=workdir,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return job, -1, f"the checks of {job.name} did not finish within {NODE_TIMEOUT_S} s"
    return job, done.returncode, done.stdout + done.stderr


def run_checks(
    spec: ClusterSpec,
    inventory: str | Path,
    nodes: list[str] | None = None,
    only: list[str] | None = None,
    local: bool = False,
    deep: bool = False,
) -> list[dict[str, Any]]:
    """Every verdict, node by node then the cluster's, in the spec's node order."""
    spec_file = spec_path(inventory).resolve()
    selected = [n for n in spec.nodes if not nodes or n.name in nodes]
    common = [f"--aicluster-spec={spec_file}"]
    if only:
        common.append(f"--aicluster-only={','.join(only)}")
    if deep:
        common.append("--aicluster-deep")
    with tempfile.TemporaryDirectory(prefix="aicluster-verify-") as tmp:
        workdir = Path(tmp)
        (workdir / "pytest.ini").write_text("[pytest]\n")
        config = workdir / "ssh_config"
        config.write_text(ssh_config(spec, spec_file, workdir))
        config.chmod(0o600)
        ssh = [f"--ssh-config={config}"]
        jobs = [
            Job(
                node.name,
                (
                    *common,
                    *([] if local else ssh),
                    f"--hosts={hostspec(node, local)}",
                    f"--aicluster-node={node.name}",
                    "--aicluster-scope=node",
                ),
            )
            for node in selected
        ]
        if not nodes and not local:
            every = ",".join(hostspec(node, local) for node in spec.nodes)
            jobs.append(
                Job("cluster", (*common, *ssh, f"--hosts={every}", "--aicluster-scope=cluster"))
            )
        try:
            with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
                finished = list(pool.map(lambda job: _pytest(job, workdir), jobs))
        finally:
            if not local:
                _close_connections(spec, config)
        results: list[dict[str, Any]] = []
        for job, code, output in finished:
            # 0: all passed, 1: some failed, 5: --only selected nothing here. Anything else is
            # pytest refusing to run: a usage error, an import error, a timeout.
            if code not in (0, 1, 5):
                tail = "\n".join(output.strip().splitlines()[-8:])
                raise VerifyError(f"the checks of {job.name} did not run (exit {code}):\n{tail}")
            report = workdir / f"{job.name}.jsonl"
            if report.exists():
                results += [json.loads(line) for line in report.read_text().splitlines()]
    return results


def _close_connections(spec: ClusterSpec, config: Path) -> None:
    """Stop the SSH connection masters this run opened (testinfra keeps them 60 s otherwise)."""
    for node in spec.nodes:
        subprocess.run(
            ["ssh", "-F", str(config), "-O", "exit", node.name],
            capture_output=True,
            check=False,
            timeout=10,
        )


def passed(results: list[dict[str, Any]]) -> bool:
    return not any(r["verdict"] == "fail" for r in results)


def counts(results: list[dict[str, Any]]) -> dict[str, int]:
    return {verdict: sum(r["verdict"] == verdict for r in results) for verdict in VERDICTS}


def to_json(results: list[dict[str, Any]], inventory: str) -> str:
    return json.dumps(
        {
            "inventory": inventory,
            "ready": passed(results),
            "counts": counts(results),
            "results": results,
        },
        indent=2,
    )


def to_junit(results: list[dict[str, Any]]) -> str:
    """JUnit XML: one test suite per node (and one for the cluster), one test case per verdict."""
    suites = ET.Element("testsuites", name="aicluster verify")
    by_node: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        by_node.setdefault(result["node"], []).append(result)
    for node, items in by_node.items():
        tally = counts(items)
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=node,
            tests=str(len(items)),
            failures=str(tally["fail"]),
            skipped=str(tally["skip"]),
            errors="0",
        )
        for result in items:
            name = result["check"] + (f"[{result['item']}]" if result["item"] else "")
            case = ET.SubElement(suite, "testcase", classname=f"aicluster.{node}", name=name)
            detail = result["reason"] or ""
            if result["fix"]:
                detail += f"\nfix: {result['fix']}"
            if result["verdict"] == "fail":
                ET.SubElement(case, "failure", message=result["reason"] or "failed").text = detail
            elif result["verdict"] == "skip":
                ET.SubElement(case, "skipped", message=result["reason"] or "skipped")
            elif result["verdict"] == "warn":
                ET.SubElement(case, "system-out").text = f"warning: {detail}"
    ET.indent(suites)
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
    )
