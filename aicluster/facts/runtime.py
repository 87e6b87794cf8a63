"""The version fingerprint of a node's serving environment, in one remote command."""

from __future__ import annotations

from typing import Any

from pyinfra.api.facts import FactBase

from aicluster.runtime import VENV, fingerprint_command, parse_fingerprint


class RuntimeFingerprint(FactBase[dict[str, Any]]):
    """Python, vLLM, Ray, torch, NCCL, driver and kernel versions of a node (None where absent)."""

    def command(self, venv: str = VENV) -> str:
        return fingerprint_command(venv)

    def requires_command(self, *args: Any, **kwargs: Any) -> str:
        return "python3"

    def process(self, output: list[str]) -> dict[str, Any]:
        return parse_fingerprint("\n".join(output))
