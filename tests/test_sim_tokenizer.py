"""The simulated engine's tokenizer: exact round trips and counts, stable ids across processes."""

from __future__ import annotations

import subprocess
import sys
import zlib

import pytest

from vllm_slo_guard.bench.sim_tokenizer import VOCAB_SIZE, SimTokenizer, vocabulary


def test_vocabulary_is_4096_unique_lowercase_ascii_words() -> None:
    words = vocabulary()
    assert len(words) == VOCAB_SIZE == 4096
    assert len(set(words)) == VOCAB_SIZE
    for word in words:
        assert word.isascii() and word.isalpha() and word == word.lower()


def test_vocabulary_is_pinned() -> None:
    # Every random workload is a sequence of these words: changing them changes every prompt text.
    assert vocabulary()[0] == "baba"
    assert vocabulary()[-1] == "chocho"


@pytest.mark.parametrize(
    "ids", [[], [0], [1, 2, 3], [4095, 0, 4095], [4096, 4097, 10_000, 123_456_789], list(range(0, 9000, 7))]
)
def test_encode_decode_round_trip_modulo_vocab(ids: list[int]) -> None:
    tok = SimTokenizer()
    assert tok.encode(tok.decode(ids)) == [i % VOCAB_SIZE for i in ids]


def test_decode_is_space_joined_words() -> None:
    tok = SimTokenizer()
    assert tok.decode([0, 1]) == f"{vocabulary()[0]} {vocabulary()[1]}"
    assert tok.decode([]) == ""


def test_unknown_words_map_to_crc32_and_stay_in_range() -> None:
    tok = SimTokenizer()
    ids = tok.encode("Hello, wörld! 42")
    assert ids == [zlib.crc32(w.encode()) % VOCAB_SIZE for w in ("Hello,", "wörld!", "42")]
    assert all(0 <= i < VOCAB_SIZE for i in ids)
    assert tok.encode("Hello, wörld! 42") == ids  # stable between calls and instances


def test_unknown_word_ids_do_not_depend_on_hash_seed() -> None:
    code = "from vllm_slo_guard.bench.sim_tokenizer import SimTokenizer; print(SimTokenizer().encode('xyzzy plugh'))"
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONHASHSEED": seed, "PYTHONPATH": ":".join(sys.path)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1


@pytest.mark.parametrize(
    "text",
    ["", "   ", "one", "a b  c", " lead and trail ", "tabs\tand\nnewlines\r\nmixed", "baba zozo unknown"],
)
def test_count_equals_encode_length(text: str) -> None:
    tok = SimTokenizer()
    assert tok.count(text) == len(tok.encode(text)) == len(text.split())


def test_vocab_size_property() -> None:
    assert SimTokenizer().vocab_size == VOCAB_SIZE
