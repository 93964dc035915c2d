"""Where polyemo keeps its caches (features, content hashes, converted weights)."""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir() -> Path:
    """``$POLYEMO_CACHE`` if set, else ``$XDG_CACHE_HOME/polyemo`` or ``~/.cache/polyemo``."""
    env = os.environ.get("POLYEMO_CACHE")
    if env:
        path = Path(env)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        path = Path(base) / "polyemo"
    path.mkdir(parents=True, exist_ok=True)
    return path
