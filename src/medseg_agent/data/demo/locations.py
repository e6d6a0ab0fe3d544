"""Where the demo's downloads and the built dataset live (``$MEDSEG_AGENT_CACHE`` aware)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$MEDSEG_AGENT_CACHE`` or ``~/.cache/medseg-agent``."""
    env = os.environ.get("MEDSEG_AGENT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "medseg-agent"


def default_demo_dir() -> Path:
    """Where the demo dataset goes by default: ``<cache_root()>/demo``."""
    return cache_root() / "demo"


def downloads_dir() -> Path:
    return cache_root() / "downloads"
