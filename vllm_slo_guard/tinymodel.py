"""A tiny random-weight decoder model folder, for smoke tests of a real vLLM without any download.

The folder holds a Llama (or Qwen2) ``config.json`` and a word-level ``tokenizer.json`` whose
vocabulary is the simulator's (``sim/tokenizer.py``), after three special tokens. So a prompt built
by our workload model has the same token count on the real engine as in the simulator. vLLM serves
it with ``--load-format dummy`` (random weights).
"""

from __future__ import annotations

import json
from pathlib import Path

from .bench.sim_tokenizer import vocabulary

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")


def _tokenizer_json() -> dict:
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for word in vocabulary():
        vocab[word] = len(vocab)
    added = [
        {"id": i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
         "special": True}
        for i, tok in enumerate(SPECIAL_TOKENS)
    ]  # fmt: skip
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": None,
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": False},
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
    }


def make_tiny_model(
    folder: str | Path,
    *,
    architecture: str = "LlamaForCausalLM",
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 2,
    num_kv_heads: int = 2,
    head_dim: int = 32,
    max_position_embeddings: int = 2048,
) -> Path:
    """Write a tiny model into ``folder`` (created) and return its path."""
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    vocab_size = len(SPECIAL_TOKENS) + len(vocabulary())
    model_type = "qwen2" if architecture.startswith("Qwen2") else "llama"
    config = {
        "architectures": [architecture],
        "model_type": model_type,
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads,
        "head_dim": head_dim,
        "vocab_size": vocab_size,
        "max_position_embeddings": max_position_embeddings,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "torch_dtype": "bfloat16",
        "bos_token_id": 1,
        "eos_token_id": 2,
        "tie_word_embeddings": False,
        "hidden_act": "silu",
    }
    (path / "config.json").write_text(json.dumps(config, indent=1))
    (path / "tokenizer.json").write_text(json.dumps(_tokenizer_json()))
    (path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
                "model_max_length": max_position_embeddings,
                "chat_template": "{% for m in messages %}{{ m['content'] }} {% endfor %}",
            }
        )
    )
    (path / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})
    )
    return path
