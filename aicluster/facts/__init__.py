"""Facts: pyinfra FactBase classes (the command) over pure parsers (the meaning).

Parsers take the text a command printed and return plain data; they are tested on real outputs
(tests/fixtures/, aicluster/captures/) and exposed by `aicluster parse KIND FILE`. Bad or truncated
input raises ParseError with a one-line message, never anything else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class ParseError(ValueError):
    """The text is not the output this parser reads; the message says what was expected, in one line."""


Parser = Callable[[str], dict[str, Any]]
