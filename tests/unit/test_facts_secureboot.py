"""Secure Boot from mokutil, on the one real output at hand (tests/fixtures/secureboot)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyinfra.api.exceptions import FactProcessError

from aicluster.facts import ParseError
from aicluster.facts.secureboot import SecureBoot, parse_secure_boot

FIXTURES = Path(__file__).parents[2] / "tests" / "fixtures" / "secureboot"


def test_no_efi_variables_is_no_secure_boot() -> None:
    text = (FIXTURES / "mokutil-sb-state-no-efi-debian12.txt").read_text()
    assert parse_secure_boot(text) == {"secure_boot": None, "enrolled_keys": []}


def test_a_node_booted_without_efi_prints_nothing() -> None:
    assert SecureBoot.process([]) == SecureBoot.default()


def test_other_output_is_refused_in_one_line() -> None:
    with pytest.raises(ParseError, match="not mokutil"):
        parse_secure_boot("sh: 1: mokutil: not found\n")
    with pytest.raises(FactProcessError):
        SecureBoot.process(["Cannot determine secure boot state."])
