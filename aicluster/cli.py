"""The `aicluster` command."""

from __future__ import annotations

import sys

import click
from rich.console import Console
from rich.table import Table

from aicluster.inventory import SpecError, load_spec

# Exit statuses: 0 fine, 1 the command ran and found a failure, 2 bad input or unusable environment.
EXIT_BAD_INPUT = 2

console = Console()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Provision local AI inference clusters with pyinfra and prove they are ready."""


@main.command()
@click.argument("inventories", nargs=-1, required=True, metavar="INVENTORY...")
def validate(inventories: tuple[str, ...]) -> None:
    """Check inventory files (x.yaml or x.py) without touching any host."""
    failed = False
    for inventory in inventories:
        try:
            spec = load_spec(inventory)
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
