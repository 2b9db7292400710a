"""Where a model's architecture comes from, never downloading anything.

In order: a local folder with a ``config.json`` (or the file itself), the local Hugging Face cache,
or the built-in catalog of common models (``catalog.MODELS``), so catalog models work offline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ModelNotFoundError
from ..hf_cache import cached_snapshot
from .arch import ModelArch, arch_from_config
from .catalog import MODELS


def _hf_cache_config(repo_id: str) -> Path | None:
    """config.json of a model already in the local Hugging Face cache, if any (never downloads)."""
    snapshot = cached_snapshot(repo_id, lambda folder: (folder / "config.json").is_file())
    return snapshot / "config.json" if snapshot is not None else None


def _read_config(path: Path, name: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelNotFoundError(f"{name}: cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ModelNotFoundError(f"{name}: {path} is not a JSON object")
    return data


def load_model_arch(model: str) -> ModelArch:
    """Architecture of ``model``: a local folder, the local HF cache, or the built-in catalog."""
    path = Path(model).expanduser()
    if path.is_dir():
        config = path / "config.json"
        if not config.is_file():
            raise ModelNotFoundError(f"model folder {model} has no config.json")
        return arch_from_config(model, _read_config(config, model), source=str(config))
    if path.suffix == ".json" and path.is_file():
        return arch_from_config(model, _read_config(path, model), source=str(path))
    cached = _hf_cache_config(model)
    if cached is not None:
        return arch_from_config(model, _read_config(cached, model), source=str(cached))
    known = MODELS.get(model) or next((a for key, a in MODELS.items() if key.lower() == model.lower()), None)
    if known is not None:
        return known
    names = ", ".join(sorted(MODELS))
    raise ModelNotFoundError(
        f"model {model!r} not found: not a local folder with a config.json, not in the local Hugging Face "
        f"cache, and not one of the built-in models ({names})"
    )
