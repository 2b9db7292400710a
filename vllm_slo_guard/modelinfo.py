"""Architecture facts of a decoder model, read from its config.json and never downloaded.

The simulator's cost and memory models and the tuner's memory guard need only a handful of numbers
(layers, heads, hidden sizes, vocabulary, dtype, maximum length). They come from, in order: a local
folder with a config.json, the local Hugging Face cache, or the built-in catalog of common models.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .errors import ModelNotFoundError

DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2, "fp8": 1}


@dataclass(frozen=True)
class ModelArch:
    """The architecture facts of one dense decoder-only transformer."""

    name: str
    architecture: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    max_position_embeddings: int
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    torch_dtype: str = "bfloat16"
    source: str = "catalog"

    @property
    def num_params(self) -> int:
        """Parameter count as vLLM loads it (embedding, layers, final norm, LM head unless tied)."""
        h, d = self.hidden_size, self.head_dim
        qkv = h * (self.num_heads + 2 * self.num_kv_heads) * d
        if self.qkv_bias:
            qkv += (self.num_heads + 2 * self.num_kv_heads) * d
        attn_out = self.num_heads * d * h
        mlp = 3 * h * self.intermediate_size
        per_layer = qkv + attn_out + mlp + 2 * h
        embed = self.vocab_size * h
        lm_head = 0 if self.tie_word_embeddings else self.vocab_size * h
        return embed + self.num_layers * per_layer + h + lm_head

    def weight_bytes(self, dtype_bytes: int) -> int:
        return self.num_params * dtype_bytes

    def kv_bytes_per_token(self, kv_dtype_bytes: int, tp: int = 1) -> int:
        """K and V for every layer; KV heads are split over TP ranks and replicated when fewer."""
        kv_heads = max(1, self.num_kv_heads // tp)
        return 2 * self.num_layers * kv_heads * self.head_dim * kv_dtype_bytes

    def with_source(self, source: str) -> ModelArch:
        return replace(self, source=source)


def arch_from_config(name: str, config: dict[str, Any], source: str) -> ModelArch:
    """Build a ModelArch from a Hugging Face config.json dict (dense decoder models)."""
    text = config.get("text_config")
    if isinstance(text, dict):  # multimodal wrappers keep the LM facts here
        config = {**config, **text}
    try:
        hidden = int(config["hidden_size"])
        heads = int(config["num_attention_heads"])
        layers = int(config["num_hidden_layers"])
        inter = int(config.get("intermediate_size") or 4 * hidden)
        vocab = int(config["vocab_size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelNotFoundError(
            f"{name}: config.json lacks a dense-decoder field ({exc}); only decoder-only transformers are supported"
        ) from None
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or hidden // heads)
    max_pos = int(config.get("max_position_embeddings") or config.get("n_positions") or 2048)
    archs = config.get("architectures") or ["UnknownForCausalLM"]
    model_type = str(config.get("model_type", ""))
    return ModelArch(
        name=name,
        architecture=str(archs[0]),
        hidden_size=hidden,
        intermediate_size=inter,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=vocab,
        max_position_embeddings=max_pos,
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        qkv_bias=bool(config.get("attention_bias", model_type.startswith("qwen2"))),
        torch_dtype=str(config.get("torch_dtype") or config.get("dtype") or "bfloat16"),
        source=source,
    )


def _hf_cache_config(repo_id: str) -> Path | None:
    """config.json of a model already in the local Hugging Face cache, if any (never downloads)."""
    roots = []
    if os.environ.get("HF_HUB_CACHE"):
        roots.append(Path(os.environ["HF_HUB_CACHE"]))
    hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    roots.append(hf_home / "hub")
    folder = "models--" + repo_id.replace("/", "--")
    for root in roots:
        snapshots = root / folder / "snapshots"
        if snapshots.is_dir():
            for snap in sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True):
                if (snap / "config.json").is_file():
                    return snap / "config.json"
    return None


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
    from .sim.catalog import MODELS  # local import: the catalog is data, modelinfo is the reader

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
