"""The deterministic word-level tokenizer of the simulated engine.

The simulator must count prompt and output tokens the same way on the client and the server,
offline and without downloading a Hugging Face tokenizer. One whitespace-separated word is one
token, so ``count(text)`` is exact and cheap, and ``decode`` produces text that encodes back to the
same ids, which keeps prefix caching in the simulator faithful to the token ids a workload chose.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

VOCAB_SIZE = 4096
"""Number of distinct token ids; every id the tokenizer returns is in ``[0, VOCAB_SIZE)``."""

# 16 onsets x 4 vowels = 64 syllables; two syllables per word gives exactly 64 * 64 = 4096 words,
# all distinct, lowercase ASCII and free of whitespace.
_ONSETS = ("b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "ch")
_VOWELS = ("a", "e", "i", "o")


@functools.lru_cache(maxsize=1)
def vocabulary() -> tuple[str, ...]:
    """The ``VOCAB_SIZE`` pseudo-words, word ``i`` being token id ``i`` (built once, then cached)."""
    syllables = [onset + vowel for onset in _ONSETS for vowel in _VOWELS]
    words = tuple(first + second for first in syllables for second in syllables)
    assert len(words) == VOCAB_SIZE and len(set(words)) == VOCAB_SIZE
    return words


@functools.lru_cache(maxsize=1)
def _word_ids() -> dict[str, int]:
    """Reverse map of :func:`vocabulary`; cached because every ``encode`` needs it."""
    return {word: index for index, word in enumerate(vocabulary())}


def _unknown_word_id(word: str) -> int:
    """A stable id for a word outside the vocabulary (crc32, not ``hash``, which is salted per process)."""
    return zlib.crc32(word.encode("utf-8")) % VOCAB_SIZE


@dataclass(frozen=True)
class SimTokenizer:
    """Whitespace tokenizer over a fixed pseudo-word vocabulary: one word, one token.

    ``encode(decode(ids)) == [i % VOCAB_SIZE for i in ids]`` holds exactly, and any text has
    ``len(encode(text)) == count(text)``. There are no special tokens (no BOS/EOS are added) and no
    chat template. It has the calls of ``bench.tokenizers.PromptTokenizer``, so a workload can be made
    of it where a model has no tokenizer of its own (the simulated engine on a catalog model).
    """

    @property
    def name(self) -> str:
        return "the simulator's vocabulary"

    @property
    def vocab_size(self) -> int:
        """Size of the id space, for code written against Hugging Face tokenizers."""
        return VOCAB_SIZE

    @property
    def max_token_id(self) -> int:
        return VOCAB_SIZE - 1

    @property
    def all_special_ids(self) -> tuple[int, ...]:
        return ()

    @property
    def has_chat_template(self) -> bool:
        return False

    def num_special_tokens_to_add(self) -> int:
        return 0

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        """Token ids of ``text``: vocabulary words map to their index, other words to a stable hash."""
        ids = _word_ids()
        return [ids[word] if word in ids else _unknown_word_id(word) for word in text.split()]

    def chat_text(self, messages: Sequence[Mapping[str, Any]]) -> str:
        """Chat messages as the simulated server reads them without a chat template: the contents, space-joined."""
        return " ".join(str(m.get("content") or "") for m in messages)

    def decode(self, ids: Iterable[int]) -> str:
        """Space-joined vocabulary words; ids are taken modulo ``VOCAB_SIZE``."""
        words = vocabulary()
        return " ".join([words[int(i) % VOCAB_SIZE] for i in ids])

    def count(self, text: str) -> int:
        """Number of tokens in ``text`` without building the id list (the word count)."""
        return len(text.split())
