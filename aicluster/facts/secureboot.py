"""Secure Boot: whether the firmware makes the kernel refuse unsigned modules, and which DKMS
signing keys are enrolled (Machine Owner Keys), read from mokutil.

The only real output at hand is a node without EFI variables (tests/fixtures/secureboot); the other
lines are matched exactly as mokutil's source prints them (github.com/lcp/mokutil, src/mokutil.c),
so this parser stays a plain lookup of those lines.
"""

from __future__ import annotations

from typing import Any

from pyinfra.api.facts import FactBase

from aicluster.driver import MOK_KEYS
from aicluster.facts import ParseError, process_with, quote_line, split_capture

NO_EFI = "EFI variables are not supported on this system"
ENABLED = "SecureBoot enabled"
DISABLED = "SecureBoot disabled"
# Printed after "SecureBoot enabled" when shim is told not to verify: unsigned modules then load.
SHIM_NOT_VALIDATING = "SecureBoot validation is disabled in shim"
SETUP_MODE = "Platform is in Setup Mode"
ENROLLED = " is already enrolled"
NOT_ENROLLED = " is not enrolled"


def parse_secure_boot(text: str) -> dict[str, Any]:
    """`mokutil --sb-state` then `mokutil --test-key KEY` lines → {"secure_boot", "enrolled_keys"}.

    secure_boot is True when the kernel enforces signatures, False when it does not, None on a node
    without EFI variables (legacy BIOS boot, containers) or with no output at all.
    """
    _, body = split_capture(text)
    lines = [line.strip() for line in body.splitlines() if line.strip()]
    state: bool | None = None
    enrolled = []
    for line in lines:
        if line == ENABLED:
            state = SHIM_NOT_VALIDATING not in lines
        elif line == DISABLED:
            state = False
        elif line.endswith(ENROLLED):
            enrolled.append(line.removesuffix(ENROLLED))
        elif line not in (NO_EFI, SHIM_NOT_VALIDATING, SETUP_MODE) and not line.endswith(
            NOT_ENROLLED
        ):
            raise ParseError(f"not mokutil --sb-state/--test-key output: {quote_line(line)}")
    return {"secure_boot": state, "enrolled_keys": enrolled}


class SecureBoot(FactBase[dict[str, Any]]):
    """Secure Boot state and the enrolled DKMS signing keys (driver.MOK_KEYS) of a node."""

    def command(self) -> str:
        keys = " ".join(sorted(set(MOK_KEYS.values())))
        # Without /sys/firmware/efi the node booted without EFI: nothing to ask mokutil.
        return (
            "if [ -d /sys/firmware/efi ]; then mokutil --sb-state 2>&1; "
            f'for key in {keys}; do [ -e "$key" ] && mokutil --test-key "$key" 2>&1; done; fi; true'
        )

    @staticmethod
    def default() -> dict[str, Any]:
        return {"secure_boot": None, "enrolled_keys": []}

    @staticmethod
    def process(output: list[str]) -> dict[str, Any]:
        return process_with(parse_secure_boot, output)
