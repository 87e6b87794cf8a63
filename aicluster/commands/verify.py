"""`aicluster verify INVENTORY`: is each node, and the cluster, ready? A table, exit 0 only if so."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from aicluster.checks import runner
from aicluster.commands import EXIT_BAD_INPUT, spec_or_exit

EXIT_NOT_READY = 1
STYLES = {"pass": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


@click.command("verify")
@click.argument("inventory", required=False, default=None)
@click.option(
    "--node", "nodes", multiple=True, help="Only this node (repeatable); no cluster checks."
)
@click.option("--only", multiple=True, help="Only this check (repeatable), e.g. --only swap_off.")
@click.option("--local", is_flag=True, help="Run the node checks on this machine, as --node NAME.")
@click.option(
    "--deep",
    is_flag=True,
    help="Also the deep checks: all-reduce bandwidth, GPU peer-to-peer (minutes).",
)
@click.option(
    "--json",
    "json_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the verdicts as JSON.",
)
@click.option(
    "--junit",
    "junit_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write JUnit XML.",
)
@click.option("--failures-only", is_flag=True, help="Show only warnings and failures in the table.")
@click.option(
    "--list", "list_checks", is_flag=True, help="List the checks and what each proves, then exit."
)
def verify_command(
    inventory: str | None,
    nodes: tuple[str, ...],
    only: tuple[str, ...],
    local: bool,
    deep: bool,
    json_file: Path | None,
    junit_file: Path | None,
    failures_only: bool,
    list_checks: bool,
) -> None:
    """Readiness checks on every node and on the cluster, with expected values from the spec.

    Each line: node, check, verdict (pass / warn / fail / skip) and, when not passed, the reason and
    the fix. Exit status 0 only when nothing fails; 2 for bad input."""
    if list_checks:
        for name, about in runner.check_names().items():
            click.echo(f"{name:45} {about}")
        return
    if inventory is None:
        raise click.UsageError("missing INVENTORY (e.g. inventories/homelab.py)")
    spec = spec_or_exit(inventory)
    unknown = [name for name in nodes if name not in {n.name for n in spec.nodes}]
    if unknown:
        click.echo(
            f"{inventory}: no node {', '.join(unknown)} (nodes: {', '.join(n.name for n in spec.nodes)})",
            err=True,
        )
        sys.exit(EXIT_BAD_INPUT)
    unknown_checks = sorted(set(only) - set(runner.check_names()))
    if unknown_checks:
        click.echo(
            f"no check named {', '.join(unknown_checks)}: `aicluster verify --list` names them",
            err=True,
        )
        sys.exit(EXIT_BAD_INPUT)
    if local and len(nodes) != 1:
        click.echo("--local checks this machine as one node: give it with --node NAME", err=True)
        sys.exit(EXIT_BAD_INPUT)
    try:
        results = runner.run_checks(
            spec, inventory, list(nodes) or None, list(only) or None, local, deep
        )
    except runner.VerifyError as error:
        click.echo(str(error), err=True)
        sys.exit(EXIT_BAD_INPUT)
    if only and not results:
        click.echo(
            f"no check named {', '.join(only)}: see `pytest --collect-only --pyargs aicluster.checks`",
            err=True,
        )
        sys.exit(EXIT_BAD_INPUT)
    order = {node.name: i for i, node in enumerate(spec.nodes)}
    results.sort(key=lambda r: (order.get(r["node"], len(order)), r["check"], r["item"] or ""))
    Console(width=max(Console().width, 140)).print(_table(results, failures_only))
    tally = runner.counts(results)
    summary = ", ".join(f"{count} {verdict}" for verdict, count in tally.items())
    ready = runner.passed(results)
    click.echo(("READY: " if ready else "NOT READY: ") + summary)
    if json_file:
        json_file.write_text(runner.to_json(results, inventory))
    if junit_file:
        junit_file.write_text(runner.to_junit(results))
    sys.exit(0 if ready else EXIT_NOT_READY)


def _table(results: list[dict[str, Any]], failures_only: bool) -> Table:
    table = Table(title="aicluster verify", show_lines=False)
    for column in ("node", "check", "item", "result", "reason → fix"):
        table.add_column(column, overflow="fold")
    for result in results:
        if failures_only and result["verdict"] in ("pass", "skip"):
            continue
        detail = result["reason"] or ""
        if result["fix"]:
            detail += f" → {result['fix']}"
        verdict = result["verdict"]
        table.add_row(
            result["node"],
            result["check"],
            result["item"] or "",
            f"[{STYLES[verdict]}]{verdict}[/]",
            detail,
        )
    return table
