"""`aicluster parse KIND FILE`: the facts' parsers, for someone debugging a node from a paste."""

from __future__ import annotations

import json
import sys

import click

from aicluster.facts import ParseError, Parser, macos, net, nvidia, rdma

KINDS: dict[str, Parser] = {
    **nvidia.PARSE_KINDS,
    **rdma.PARSE_KINDS,
    **net.PARSE_KINDS,
    **macos.PARSE_KINDS,
}
EXIT_BAD_INPUT = 2


@click.command("parse")
@click.argument("kind", type=click.Choice(sorted(KINDS)))
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
def parse_command(kind: str, file: str) -> None:
    """Turn a pasted command output into JSON (FILE or -)."""
    try:
        with click.open_file(file, encoding="utf-8", errors="replace") as stream:
            text = stream.read()
    except OSError as error:
        click.echo(f"{file}: cannot read: {error.strerror or error}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    try:
        result = KINDS[kind](text)
    except ParseError as error:
        click.echo(f"{file}: not {kind} output: {error}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    click.echo(json.dumps(result, indent=2))
