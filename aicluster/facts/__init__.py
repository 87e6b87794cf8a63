"""Facts: pyinfra FactBase classes (the command) over pure parsers (the meaning).

Parsers take the text a command printed and return plain data; they are tested on real outputs
(tests/fixtures/, aicluster/captures/) and exposed by `aicluster parse KIND FILE`. Bad or truncated
input raises ParseError with a one-line message, never anything else.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pyinfra.api.exceptions import FactProcessError


class ParseError(ValueError):
    """The text is not the output this parser reads; the message says what was expected, in one line."""


Parser = Callable[[str], dict[str, Any]]


_EXIT_LINE = re.compile(r"\[exit ([0-9]+)\]")


def quote_line(line: str, limit: int = 80) -> str:
    """A piece of input for an error message: one line, bounded, with odd characters escaped."""
    text = line.strip()
    if len(text) > limit:
        text = text[:limit] + "..."
    return repr(text)


def split_capture(text: str) -> tuple[str | None, str]:
    """(command, output) of a capture file (`$ command`, output, `[exit N]`); (None, text) for raw
    output, so people can paste either.

    A capture must end with its `[exit N]` line: without it the file was cut short, and a parser
    could not tell a shortened list from a complete one. A command the host did not have (exit 127)
    is refused with the shell's own words, because "not installed" must not read as "nothing to
    report".
    """
    lines = text.replace("\r\n", "\n").split("\n")
    if not lines[0].startswith("$ "):
        return None, text
    command = lines[0][2:].strip()
    body = lines[1:]
    while body and not body[-1].strip():
        body.pop()
    closing = _EXIT_LINE.fullmatch(body[-1].strip()) if body else None
    if closing is None:
        raise ParseError("capture file has no closing '[exit N]' line (truncated?)")
    body.pop()
    if int(closing.group(1)) == 127:
        missing = [line for line in body if "not found" in line]
        more = f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""
        said = f": {quote_line(missing[0])}{more}" if missing else ""
        raise ParseError(f"the captured command was not found on that host (exit 127){said}")
    return command, "\n".join(body) + "\n" if body else ""


def command_output(text: str) -> str:
    """The command's own output, whether `text` is that output or a capture file around it."""
    return split_capture(text)[1]


def process_with(parser: Parser, output: list[str]) -> dict[str, Any]:
    """Run a parser for a FactBase: pyinfra reports a FactProcessError against the host, where any
    other exception would stop the whole run."""
    try:
        return parser("\n".join(output))
    except ParseError as error:
        raise FactProcessError(str(error)) from error
