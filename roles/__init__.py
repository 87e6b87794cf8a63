"""Roles: one module per concern, each exposing one pyinfra @deploy function.

Templates live in templates/<role>/, named after what they configure.
"""

from pathlib import Path
from typing import Any

from jinja2 import Environment, StrictUndefined

from aicluster.wanted import File

TEMPLATES = Path(__file__).parents[1] / "templates"


def rendered(role: str, template: str, **context: Any) -> str:
    """templates/<role>/<template>, rendered as pyinfra's files.template renders it."""
    source = (TEMPLATES / role / template).read_text()
    environment = Environment(undefined=StrictUndefined, keep_trailing_newline=True)
    return environment.from_string(source).render(**context)


def unit_file(role: str, unit: str, **context: Any) -> File:
    """/etc/systemd/system/<unit>.service from templates/<role>/<unit>.service.j2."""
    return File(
        f"/etc/systemd/system/{unit}.service",
        rendered(role, f"{unit}.service.j2", **context),
        "644",
    )
