"""Where aicluster keeps what it downloads or builds on the control machine."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """AICLUSTER_CACHE_DIR, else /var/cache/aicluster for root, else ~/.cache/aicluster."""
    configured = os.environ.get("AICLUSTER_CACHE_DIR")
    if configured:
        return Path(configured)
    if os.geteuid() == 0:
        return Path("/var/cache/aicluster")
    return Path.home() / ".cache" / "aicluster"
