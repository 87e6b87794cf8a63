"""Secrets on the control machine: files readable only by their owner, generated when missing.

A secret is never a value in the inventory, an operation name, a command line or a log line: roles
push the file itself to a 0600 file on the node.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path


class SecretError(Exception):
    """A secret file exists but is unsafe or empty; the message says which and how to fix it."""


def ensure_secret(path: Path) -> Path:
    """The secret file at `path`, created with a fresh random token (0600) if it does not exist."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(secrets.token_urlsafe(32) + "\n")
        return path
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise SecretError(f"{path} is readable by others (mode {mode:o}): chmod 600 {path}")
    if not path.read_text().strip():
        raise SecretError(
            f"{path} is empty: put the secret in it, or delete it to have one generated"
        )
    return path


def secret_path(spec_file: str, configured: str) -> Path:
    """A secret path from the spec, relative to the inventory file unless absolute."""
    return Path(spec_file).parent / configured
