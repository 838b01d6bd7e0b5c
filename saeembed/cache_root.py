"""Where saeembed keeps what it can compute again: vectors of embedded documents, labels, checked parts."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_root() -> Path:
    """`$SAEEMBED_CACHE`, else `$XDG_CACHE_HOME/saeembed`, else `~/.cache/saeembed`."""
    if os.environ.get("SAEEMBED_CACHE"):
        return Path(os.environ["SAEEMBED_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "saeembed"
