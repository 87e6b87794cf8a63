"""Every parser `aicluster parse` offers: any text, and any slice of a real output, gives a dict or
a one-line ParseError, never another exception or a multi-line message."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from aicluster.commands.parse import KINDS
from aicluster.facts import ParseError
from aicluster.simulation import CAPTURES

FIXTURES = Path(__file__).parents[1] / "fixtures"
REAL_TEXTS = [
    path.read_text()
    for folder in (
        FIXTURES / "nvidia",
        FIXTURES / "rdma",
        FIXTURES / "net",
        CAPTURES / "h100",
        CAPTURES / "h200",
    )
    for path in sorted(folder.glob("*.txt"))
]


def slices_of_real_outputs() -> st.SearchStrategy[str]:
    return st.sampled_from(REAL_TEXTS).flatmap(
        lambda text: st.tuples(st.integers(0, len(text)), st.integers(0, len(text))).map(
            lambda ends: text[min(ends) : max(ends)]
        )
    )


@settings(max_examples=600, deadline=None)
@given(text=st.one_of(st.text(), slices_of_real_outputs()), kind=st.sampled_from(sorted(KINDS)))
def test_any_text_gives_a_dict_or_a_one_line_parse_error(text: str, kind: str) -> None:
    try:
        assert isinstance(KINDS[kind](text), dict)
    except ParseError as error:
        assert len(str(error).splitlines()) == 1
