"""Roles: one module per concern, each exposing one pyinfra @deploy function.

Templates live in templates/<role>/, named after what they configure.
"""

from pathlib import Path
from typing import Any

from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files

TEMPLATES = Path(__file__).parents[1] / "templates"


def unit_file(role: str, unit: str, **context: Any) -> OperationMeta:
    """/etc/systemd/system/<unit>.service from templates/<role>/<unit>.service.j2."""
    return files.template(
        name=f"{unit}.service",
        src=str(TEMPLATES / role / f"{unit}.service.j2"),
        dest=f"/etc/systemd/system/{unit}.service",
        mode="644",
        **context,
    )
