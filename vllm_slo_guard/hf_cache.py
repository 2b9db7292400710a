"""The local Hugging Face hub cache, read and never written: where a model's files already are.

The model's architecture (``vllm_rules/modelinfo.py``) and its tokenizer (``bench/tokenizers.py``) are
looked up in the same snapshot folders that vLLM (through huggingface_hub) would load from.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

_REPO_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, by huggingface_hub's rules (HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def cached_snapshot(repo_id: str, holds: Callable[[Path], bool]) -> Path | None:
    """The snapshot folder of ``repo_id`` that ``holds`` what is wanted (``refs/main`` first, then newest)."""
    if not _REPO_ID.match(repo_id):
        return None
    repo = hub_cache_dir() / ("models--" + repo_id.replace("/", "--"))
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    candidates = []
    ref = repo / "refs" / "main"
    if ref.is_file():
        candidates.append(snapshots / ref.read_text().strip())
    candidates += sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    return next((snap for snap in candidates if snap.is_dir() and holds(snap)), None)
