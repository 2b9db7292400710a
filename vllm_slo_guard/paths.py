"""Where vllm-tune keeps files: ``$XDG_CACHE_HOME/vllm-tune`` (default ``~/.cache/vllm-tune``)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vllm-tune"


def log_dir() -> Path:
    """Per-trial server logs."""
    return cache_dir() / "logs"
