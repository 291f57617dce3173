"""Where canao keeps content-addressed files (trained bases) between runs."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$CANAO_CACHE_DIR``, else ``$XDG_CACHE_HOME/canao``, else ``~/.cache/canao``."""
    env = os.environ.get("CANAO_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "canao"
