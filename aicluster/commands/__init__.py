"""Subcommands of `aicluster`, one module each; aicluster/cli.py registers them on the group."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from aicluster.inventory import SpecError, load_spec
from aicluster.spec import ClusterSpec

EXIT_BAD_INPUT = 2


def spec_or_exit(inventory: str | Path) -> ClusterSpec:
    """The validated spec of an inventory; on bad input every problem on stderr, then exit 2."""
    try:
        return load_spec(inventory)
    except SpecError as error:
        for line in error.lines():
            click.echo(line, err=True)
        sys.exit(EXIT_BAD_INPUT)
