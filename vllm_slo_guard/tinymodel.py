"""Tiny random-weight decoder model folders, for smoke tests of a real vLLM without any download.

Each folder holds a Llama (or Qwen2) ``config.json`` and a tokenizer; vLLM serves it with
``--load-format dummy`` (random weights). :func:`make_tiny_model` has a word-level tokenizer whose
vocabulary is the simulator's (``bench/sim_tokenizer.py``) after three special tokens.
:func:`make_bpe_model` has a byte-level BPE tokenizer trained on a small corpus, as real models have,
and shaped around nothing of ours: the model of the vLLM CPU runs behind ``tests/data/vllm-cpu-logs``
(a BPE of 512 asked tokens, Llama), a 384-token one (Qwen2), optionally with a ChatML chat template.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

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
    """Write a tiny model with the simulator's vocabulary into ``folder`` (created) and return its path."""
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    vocab_size = len(SPECIAL_TOKENS) + len(vocabulary())
    _write_config(
        path, architecture, vocab_size, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
        num_kv_heads=num_kv_heads, head_dim=head_dim, max_position_embeddings=max_position_embeddings,
    )  # fmt: skip
    (path / "tokenizer.json").write_text(json.dumps(_tokenizer_json()))
    _write_tokenizer_config(
        path, "</s>", max_position_embeddings, "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    )
    return path


# the corpus of make_tiny_model.py behind tests/data/vllm-cpu-logs: 2000 lines of 50 of these words
BPE_WORDS = (
    "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "vllm", "serve", "token", "cache", "model",
    "tune", "engine", "batch", "prefill", "decode", "memory", "block",
)  # fmt: skip
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
    "'\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _corpus(words: int) -> list[str]:
    """Training text: make_tiny_model.py's (``BPE_WORDS``), or ``words`` pseudo-words (enough merges for
    a vocabulary of a few hundred tokens); seeded, so the same tokenizer comes out every time."""
    rng = random.Random(0)
    if words <= len(BPE_WORDS):
        vocab = list(BPE_WORDS)
    else:
        letters = "abcdefghijklmnopqrstuvwxyz"
        vocab = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(words)]
    return [" ".join(rng.choice(vocab) for _ in range(50)) for _ in range(2000)]


def make_bpe_model(
    folder: str | Path,
    *,
    vocab_size: int = 512,
    architecture: str = "LlamaForCausalLM",
    chat_template: bool = False,
    corpus_words: int | None = None,
    max_position_embeddings: int = 2048,
) -> Path:
    """Write a tiny model with a byte-level BPE tokenizer into ``folder`` (created); return its path.

    The defaults are make_tiny_model.py's model: 512 tokens asked of the trainer, which stops at 347
    on its 20-word corpus. A larger ``vocab_size`` or ``corpus_words`` trains on pseudo-words, which
    gives exactly ``vocab_size`` tokens. ``chat_template``: ChatML (``<|im_start|>``/``<|im_end|>``
    special tokens and Qwen's template), ``<|im_end|>`` being the EOS token.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    words = corpus_words if corpus_words is not None else (len(BPE_WORDS) if vocab_size == 512 else 400)
    # Qwen2's tokenizer class adds "<|endoftext|>" as its pad token when the vocabulary lacks it
    qwen = ("<|endoftext|>",) if architecture.startswith("Qwen2") else ()
    specials = ["<unk>", "<s>", "</s>", *qwen, *(CHATML_TOKENS if chat_template else ())]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(words), trainer)
    tok.save(str(path / "tokenizer.json"))
    eos = "<|im_end|>" if chat_template else "</s>"
    _write_tokenizer_config(path, eos, max_position_embeddings, CHATML_TEMPLATE if chat_template else None)
    eos_id = tok.token_to_id(eos)
    assert eos_id is not None  # a special token of the trainer
    _write_config(
        path, architecture, tok.get_vocab_size(), eos_token_id=eos_id,
        max_position_embeddings=max_position_embeddings,
    )  # fmt: skip
    return path


def _write_tokenizer_config(path: Path, eos: str, max_len: int, chat_template: str | None) -> None:
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": eos,
        "unk_token": "<unk>",
        "model_max_length": max_len,
    }
    if chat_template is not None:
        config["chat_template"] = chat_template
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    (path / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": eos, "unk_token": "<unk>"})
    )


def _write_config(
    path: Path,
    architecture: str,
    vocab_size: int,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 2,
    num_kv_heads: int = 2,
    head_dim: int = 32,
    max_position_embeddings: int = 2048,
    eos_token_id: int = 2,
) -> None:
    config = {
        "architectures": [architecture],
        "model_type": "qwen2" if architecture.startswith("Qwen2") else "llama",
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
        "eos_token_id": eos_token_id,
        "tie_word_embeddings": False,
        "hidden_act": "silu",
    }
    (path / "config.json").write_text(json.dumps(config, indent=1))
