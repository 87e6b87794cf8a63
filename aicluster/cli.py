"""The `aicluster` command."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click
from rich.console import Console
from rich.table import Table

from aicluster import lab as lab_module
from aicluster import plan as planner
from aicluster import simulation
from aicluster.commands.complete import complete_command
from aicluster.commands.parse import parse_command
from aicluster.commands.plan import plan_command
from aicluster.commands.verify import verify_command
from aicluster.inventory import SpecError, load_spec, spec_path
from aicluster.lab import LabError

# Exit statuses: 0 fine, 1 the command ran and found a failure, 2 bad input or unusable environment.
EXIT_BAD_INPUT = 2

console = Console()
T = TypeVar("T")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Provision local AI inference clusters with pyinfra and prove they are ready."""


@main.command()
@click.argument("inventories", nargs=-1, required=True, metavar="INVENTORY...")
def validate(inventories: tuple[str, ...]) -> None:
    """Check inventories (x.yaml or x.py); touches no host."""
    failed = False
    for inventory in inventories:
        try:
            spec = load_spec(inventory)
            # A valid file whose explicit layout cannot hold its model is refused too, with numbers.
            problems = planner.spec_problems(spec)
            if problems:
                raise SpecError(spec_path(inventory), problems)
        except SpecError as error:
            failed = True
            for line in error.lines():
                click.echo(line, err=True)
            continue
        table = Table(title=f"{inventory}: valid", title_justify="left")
        for column in ("node", "role", "os", "ssh", "data address", "devices"):
            table.add_column(column)
        for node in spec.nodes:
            devices = ", ".join(f"{g.count}x {g.model}" for g in node.gpus) or "cpu"
            table.add_row(
                node.name,
                node.role,
                node.os,
                f"{node.ssh.user}@{node.ssh.address}",
                str(node.data_address),
                devices,
            )
        console.print(table)
    if failed:
        sys.exit(EXIT_BAD_INPUT)


main.add_command(plan_command)
main.add_command(parse_command)
main.add_command(complete_command)
main.add_command(verify_command)


@main.group()
def lab() -> None:
    """Local lab machines (systemd-nspawn) to try and test on.

    Real Debian 12 machines on this host, with a management and a data network, for the demo,
    the tests and CI."""


def _lab_call(action: Callable[[], T]) -> T:
    try:
        return action()
    except LabError as error:
        click.echo(f"aicluster lab: {error}", err=True)
        sys.exit(EXIT_BAD_INPUT)


@lab.command("up")
@click.option("--nodes", default=2, show_default=True, help="Cluster nodes to run (1-8).")
@click.option(
    "--outsider", is_flag=True, help="Add a machine on the data network that is not in the cluster."
)
@click.option(
    "--profile",
    default="cpu",
    show_default=True,
    type=click.Choice(simulation.profiles()),
    help="Simulated hardware: cpu, or a GPU host whose real outputs the machines replay.",
)
@click.option(
    "--inventory",
    default="inventories/lab.yaml",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the lab's inventory (and its pyinfra module beside it).",
)
def lab_up(nodes: int, outsider: bool, profile: str, inventory: Path) -> None:
    """Start the lab machines (again): running ones are kept, missing or killed ones started."""
    _lab_call(lambda: lab_module.up(nodes, outsider, profile, inventory, say=_say))
    _print_lab_status()
    console.print(f"inventory: {inventory} (pyinfra {inventory.with_suffix('.py')} ...)")


@lab.command("down")
def lab_down() -> None:
    """Stop and remove every lab machine, bridge, rule and mount."""
    _lab_call(lambda: lab_module.down(say=_say))
    console.print("lab is down")


@lab.command("status")
def lab_status() -> None:
    """Show each lab machine, its addresses and whether it answers SSH (exit 1 if any does not)."""
    if not _print_lab_status():
        sys.exit(1)


@lab.command("ssh", context_settings={"ignore_unknown_options": True})
@click.argument("node")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def lab_ssh(node: str, command: tuple[str, ...]) -> None:
    """Open a shell on a lab machine, or run COMMAND there."""
    _lab_call(lab_module.require_host)
    config = lab_module.ssh_config_path()
    if not config.exists():
        click.echo("aicluster lab: no lab is up (aicluster lab up)", err=True)
        sys.exit(EXIT_BAD_INPUT)
    os.execvp("ssh", ["ssh", "-F", str(config), node, *command])


def _say(message: str) -> None:
    console.print(message, highlight=False)


def _print_lab_status() -> bool:
    state, rows = _lab_call(lab_module.status)
    if state is None:
        console.print("no lab is up (aicluster lab up)")
        return False
    title = f"lab: {state.nodes} node(s), profile {state.profile}"
    if state.profile != "cpu":
        title += " (SIMULATED hardware replaying real captures)"
    table = Table(title=title, title_justify="left")
    for column in ("machine", "role", "state", "ssh", "management", "data"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row.name,
            row.role,
            "running" if row.running else "[red]stopped[/red]",
            "yes" if row.ssh else "[red]no[/red]",
            row.mgmt_address,
            row.data_address,
        )
    console.print(table)
    return all(row.running and row.ssh for row in rows)
