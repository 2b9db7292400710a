"""The architecture facts of a decoder model that vLLM's memory accounting and the cost model need.

A handful of numbers (layers, heads, hidden sizes, vocabulary, dtype, maximum length), read from a
Hugging Face ``config.json`` dict the way vLLM's ``ModelConfig`` reads them (``vllm/config/model.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ..errors import ModelNotFoundError

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
