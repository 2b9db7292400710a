"""vLLM bench's datasets in a model's own tokens: random, prefix_repetition, sharegpt and custom.

Each builder follows its class in ``vllm/benchmarks/datasets/datasets.py`` (``RandomDataset``,
``PrefixRepetitionRandomDataset``, ``ShareGPTDataset``, ``CustomDataset``) with one difference that
the tuner needs: lengths are exact. vLLM samples token ids, decodes them to text and re-encodes the text
to the asked length (``gen_prompt_decode_to_target_len``) but accepts a small mismatch and sends text;
here the completions prompt is sent as token ids, so it is exactly the asked length, and a chat
request's content is fitted until the *templated* prompt (what vLLM's ``usage.prompt_tokens`` counts)
is the asked length. Random ids never include special tokens (vLLM pads with any id).

Builders take plain values, not the spec, so :mod:`.workload` (the spec and the simulator's fast path)
can import them without an import circle.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DatasetError, InputError
from .sim_tokenizer import SimTokenizer
from .tokenizers import PromptTokenizer

# ShareGPT pruning rules of vLLM's ``is_valid_sequence`` (defaults used by its sharegpt sampler).
SHAREGPT_MIN_LEN = 4
SHAREGPT_MAX_PROMPT_LEN = 1024
SHAREGPT_MAX_TOTAL_LEN = 2048
CUSTOM_OUTPUT_LEN = 256  # vLLM's --custom-output-len default; -1 takes each line's output_tokens
FIT_RETRIES = 10  # gen_prompt_decode_to_target_len's max_retry
CHAT_FIT_ROUNDS = 4  # content re-fits when the chat template tokenizes the content differently
SAFE_CANDIDATES = 512  # ids tried as padding that never merges with its neighbours


@dataclass(frozen=True)
class WorkloadRequest:
    """One request: its prompt as the token ids the engine sees, and how many tokens to generate.

    ``prompt_token_ids`` are what a completions request sends (with the tokenizer's special tokens),
    or, for a chat request, the ids of the chat-templated prompt the server makes of ``text``. The
    first ``prefix_len`` ids (after the chat template's head) are shared by all requests (random
    dataset; prefix_repetition: by those of one prefix). ``text`` is the prompt text
    (a chat request's message content); None for the simulator's random prompts, whose text is the
    decoded ids.
    """

    index: int
    prompt_token_ids: tuple[int, ...]
    output_len: int
    prefix_len: int = 0
    text: str | None = None

    @property
    def prompt_len(self) -> int:
        """Prompt length in tokens, as the server counts it."""
        return len(self.prompt_token_ids)

    @property
    def prompt_text(self) -> str:
        """The prompt as text: the dataset's text, else the decoded token ids (simulator's vocabulary)."""
        if self.text is not None:
            return self.text
        return SimTokenizer().decode(self.prompt_token_ids)


def length_bounds(length: int, range_ratio: float) -> tuple[int, int]:
    """Inclusive integer range lengths are drawn from, as vLLM's ``RandomDataset.get_sampling_params``:
    ``[floor(L*(1-r)), ceil(L*(1+r))]`` computed in floating point, with the low end raised to 1."""
    low = math.floor(length * (1 - range_ratio))
    high = math.ceil(length * (1 + range_ratio))
    return max(low, 1), max(high, 1)


# --- fitting token ids to an exact length --------------------------------------------------------------


class _Shaper:
    """Turns sampled ids into the text and engine ids of one request, at an exact total length."""

    def __init__(self, tok: PromptTokenizer, rng: np.random.Generator, *, chat: bool) -> None:
        self.tok, self.rng, self.chat = tok, rng, chat
        special = set(tok.all_special_ids)
        self.allowed = np.array([i for i in range(tok.vocab_size) if i not in special], dtype=np.int64)
        if not self.allowed.size:
            raise InputError(f"the tokenizer of {tok.name} has no ordinary tokens to make prompts of")
        self.specials = tok.num_special_tokens_to_add()
        self._overhead: int | None = None
        self._pad: np.ndarray | None = None

    def sample(self, n: int) -> list[int]:
        """``n`` random ordinary (non-special) ids."""
        return self.allowed[self.rng.integers(0, len(self.allowed), size=n)].tolist() if n > 0 else []

    def pad(self, n: int) -> list[int]:
        """``n`` random ids that stay one token each when appended to a text (words with a leading
        space, for a byte-level BPE), so padding converges where random ids merge with their neighbours."""
        if self._pad is None:
            self._pad = self._safe_ids()
        pool = self._pad if self._pad.size else self.allowed
        return pool[self.rng.integers(0, len(pool), size=n)].tolist() if n > 0 else []

    def _safe_ids(self) -> np.ndarray:
        tok, step = self.tok, max(len(self.allowed) // SAFE_CANDIDATES, 1)
        probe = tok.encode("a")
        safe = [
            t for t in self.allowed[::step][:SAFE_CANDIDATES].tolist()
            if tok.encode(tok.decode([*probe, t, t])) == [*probe, t, t]
        ]  # fmt: skip
        return np.array(safe, dtype=np.int64)

    def _clean(self, ids: list[int]) -> bool:
        return self.tok.encode(self.tok.decode(ids)) == ids

    def fit(self, ids: list[int], target: int) -> tuple[str, list[int]]:
        """vLLM's ``gen_prompt_decode_to_target_len``: decode, re-encode, then cut or pad and again, until
        the text encodes to ``target`` ids; ``(text, ids)`` with ``ids == encode(text)`` (the last try may
        miss). Unlike vLLM, a cut goes back to where the ids are a clean encoding, and padding uses
        :meth:`pad`, so the loop ends exact in practice."""
        tok = self.tok
        text = tok.decode(ids)
        ids = tok.encode(text)
        for _ in range(FIT_RETRIES):
            if len(ids) == target:
                return text, ids
            if len(ids) > target:
                keep = target
                while keep > 0 and target - keep < FIT_RETRIES and not self._clean(ids[:keep]):
                    keep -= 1
                ids = ids[:keep]
            ids = ids + self.pad(target - len(ids))
            text = tok.decode(ids)
            ids = tok.encode(text)
        return text, ids

    def overhead(self) -> int:
        """Tokens the engine adds around a prompt: special tokens (completions) or the chat template."""
        if not self.chat:
            return self.specials
        if self._overhead is None:
            probe = self.tok.decode(self.allowed[:: max(len(self.allowed) // 16, 1)][:16].tolist())  # no rng draw
            self._overhead = len(self.chat_ids(probe)) - len(self.tok.encode(probe))
        return self._overhead

    def chat_ids(self, content: str) -> list[int]:
        return self.tok.encode(self.tok.chat_text([{"role": "user", "content": content}]))

    def join(self, prefix: list[int], body: list[int]) -> list[int]:
        """``prefix + body``, with the body's first id replaced by a :meth:`pad` id when the text would
        merge across the seam: the shared prefix must stay the same ids in every request."""
        ids = prefix + body
        if prefix and body and self.tok.encode(self.tok.decode(ids))[: len(prefix)] != prefix:
            ids = prefix + self.pad(1) + body[1:]
        return ids

    def shape(self, ids: list[int], total: int) -> tuple[str, list[int]]:
        """``(text, engine ids)`` with ``len(engine ids) == total``, starting from the sampled ``ids``."""
        content = total - self.overhead()
        text, fitted = self.fit(ids, content)
        if not self.chat:
            engine = self.tok.encode(text, add_special_tokens=True) if self.specials else fitted
            if len(engine) != total:  # the fit missed: the ids sent are what counts, so make them exact
                engine = engine[:total] + self.sample(total - len(engine))
            return text, engine
        engine = self.chat_ids(text)
        for _ in range(CHAT_FIT_ROUNDS):
            miss = len(engine) - total
            if miss == 0 or content - miss < 1:
                break
            content -= miss
            text, fitted = self.fit(fitted, content)
            engine = self.chat_ids(text)
        return text, engine

    def too_short(self, what: str, length: int) -> InputError:
        kind = "its chat template" if self.chat else "special tokens"
        return InputError(
            f"{what} ({length}) is too short for {self.tok.name}: the server adds {self.overhead()} tokens "
            f"({kind}) to every prompt"
        )


# --- random and prefix_repetition -----------------------------------------------------------------------


def random_requests(
    tok: PromptTokenizer,
    n: int,
    rng: np.random.Generator,
    *,
    input_len: int,
    output_len: int,
    range_ratio: float,
    prefix_len: int,
    chat: bool,
) -> list[WorkloadRequest]:
    """vLLM's ``RandomDataset.sample`` in ``tok``'s tokens: each prompt is ``prefix_len`` + a length from
    ``length_bounds(input_len - overhead, range_ratio)`` + the overhead (special tokens or chat template).

    Draws in vLLM's order: input lengths, output lengths, vocabulary offsets, the prefix; each body is
    ``allowed[(offset + i + arange(L)) % len(allowed)]`` (consecutive ordinary ids from a random offset).
    """
    shaper = _Shaper(tok, rng, chat=chat)
    overhead = shaper.overhead()
    if input_len - overhead < 1:
        raise shaper.too_short("random_input_len", input_len)
    in_low, in_high = length_bounds(input_len - overhead, range_ratio)
    out_low, out_high = length_bounds(output_len, range_ratio)
    input_lens = rng.integers(in_low, in_high + 1, size=n).tolist()
    output_lens = rng.integers(out_low, out_high + 1, size=n).tolist()
    offsets = rng.integers(0, tok.vocab_size, size=n).tolist()
    prefix = shaper.fit(shaper.sample(prefix_len), prefix_len)[1] if prefix_len > 0 else []
    allowed = shaper.allowed
    requests = []
    for i in range(n):
        body = allowed[(offsets[i] + i + np.arange(input_lens[i])) % len(allowed)].tolist()
        text, ids = shaper.shape(shaper.join(prefix, body), prefix_len + input_lens[i] + overhead)
        requests.append(WorkloadRequest(i, tuple(ids), output_lens[i], prefix_len=prefix_len, text=text))
    return requests


def prefix_repetition_requests(
    tok: PromptTokenizer,
    n: int,
    rng: np.random.Generator,
    *,
    prefix_len: int,
    suffix_len: int,
    num_prefixes: int,
    output_len: int,
    chat: bool,
) -> list[WorkloadRequest]:
    """vLLM's ``PrefixRepetitionRandomDataset``: ``num_prefixes`` random prefixes, each shared by its
    share of the requests and followed by a random suffix, in shuffled order.

    Unlike vLLM, which makes ``num_prefixes * (n // num_prefixes)`` requests, exactly ``n`` are made
    (prefix ``i % num_prefixes`` for request ``i`` before the shuffle), so the planned count is the asked one.
    """
    shaper = _Shaper(tok, rng, chat=chat)
    overhead = shaper.overhead()
    if suffix_len - overhead < 1:
        raise shaper.too_short("prefix_repetition_suffix_len", suffix_len)
    prefixes = [shaper.fit(shaper.sample(prefix_len), prefix_len)[1] if prefix_len else [] for _ in range(num_prefixes)]
    made = []
    for i in range(n):
        prefix = prefixes[i % num_prefixes]
        suffix = shaper.fit(shaper.sample(suffix_len - overhead), suffix_len - overhead)[1]
        made.append(shaper.shape(shaper.join(prefix, suffix), prefix_len + suffix_len))
    order = rng.permutation(n).tolist()
    return [
        WorkloadRequest(i, tuple(made[k][1]), output_len, prefix_len=prefix_len, text=made[k][0])
        for i, k in enumerate(order)
    ]


# --- text datasets: sharegpt and custom ------------------------------------------------------------------


def text_requests(
    tok: PromptTokenizer,
    pairs: Sequence[tuple[str, int]],
    n: int,
    rng: np.random.Generator,
    *,
    chat: bool,
    template: bool = False,
) -> list[WorkloadRequest]:
    """``n`` requests from (prompt text, output length) pairs: shuffled, reused cyclically when too few.

    The ids are what the server makes of the text: the completions encoding with special tokens, or
    the chat-templated prompt. ``template``: a completions prompt is first wrapped in the model's chat
    template, as vLLM's custom dataset does unless ``--skip-chat-template``.
    """
    order = rng.permutation(len(pairs)).tolist()
    encoded: dict[int, tuple[str, tuple[int, ...]]] = {}
    requests = []
    for i in range(n):
        k = order[i % len(order)]
        prompt, output_len = pairs[k]
        if k not in encoded:
            encoded[k] = _encode_text(tok, prompt, chat=chat, template=template)
        text, ids = encoded[k]
        requests.append(WorkloadRequest(index=i, prompt_token_ids=ids, output_len=output_len, text=text))
    return requests


def _encode_text(tok: PromptTokenizer, prompt: str, *, chat: bool, template: bool) -> tuple[str, tuple[int, ...]]:
    if chat:
        return prompt, tuple(tok.encode(tok.chat_text([{"role": "user", "content": prompt}])))
    if template and tok.has_chat_template:
        prompt = tok.chat_text([{"role": "user", "content": prompt}])
    return prompt, tuple(tok.encode(prompt, add_special_tokens=True))


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise DatasetError(f"dataset file not found: {path}") from None
    except UnicodeDecodeError:
        raise DatasetError(f"dataset file {path} is not UTF-8 text") from None
    except OSError as e:
        raise DatasetError(f"cannot read dataset file {path}: {e.strerror or e}") from None


def load_sharegpt(path: str, tok: PromptTokenizer) -> list[tuple[str, int]]:
    """(prompt text, output length) of every usable entry, in file order; DatasetError otherwise.

    Lengths are ``tok``'s counts with special tokens (``tokenizer(text).input_ids``, as vLLM counts).
    """
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise DatasetError(
            f"dataset file {path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})"
        ) from None
    if not isinstance(data, list):
        raise DatasetError(
            f"dataset file {path} is not in ShareGPT format: expected a JSON list of objects "
            f'with a "conversations" list, got a JSON {type(data).__name__}'
        )
    sim = tok if isinstance(tok, SimTokenizer) else None
    shaped = 0
    pairs: list[tuple[str, int]] = []
    for entry in data:
        turns = _two_turns(entry)
        if turns is None:
            continue
        shaped += 1
        prompt, completion = turns
        if sim is not None:  # the word count, without building id lists
            prompt_len, output_len = sim.count(prompt), sim.count(completion)
        else:
            prompt_len = len(tok.encode(prompt, add_special_tokens=True))
            output_len = len(tok.encode(completion, add_special_tokens=True))
        if (
            prompt_len < SHAREGPT_MIN_LEN
            or output_len < SHAREGPT_MIN_LEN
            or prompt_len > SHAREGPT_MAX_PROMPT_LEN
            or prompt_len + output_len > SHAREGPT_MAX_TOTAL_LEN
        ):
            continue
        pairs.append((prompt, output_len))
    if shaped == 0:
        raise DatasetError(
            f'dataset file {path} is not in ShareGPT format: no entry has a "conversations" list '
            'with at least two turns of {"from": ..., "value": ...}'
        )
    if not pairs:
        raise DatasetError(
            f"dataset file {path} has no usable conversations: all {shaped} are outside vLLM's limits "
            f"(prompt and output >= {SHAREGPT_MIN_LEN} tokens, prompt <= {SHAREGPT_MAX_PROMPT_LEN}, "
            f"total <= {SHAREGPT_MAX_TOTAL_LEN})"
        )
    return pairs


def _two_turns(entry: Any) -> tuple[str, str] | None:
    """The first two turn texts of a ShareGPT entry, or None when the entry has another shape."""
    if not isinstance(entry, Mapping):
        return None
    turns = entry.get("conversations")
    if not isinstance(turns, Sequence) or isinstance(turns, str) or len(turns) < 2:
        return None
    texts = []
    for turn in turns[:2]:
        value = turn.get("value") if isinstance(turn, Mapping) else None
        if not isinstance(value, str):
            return None
        texts.append(value)
    return texts[0], texts[1]


def load_custom(path: str, output_len: int | None) -> list[tuple[str, int]]:
    """vLLM's custom dataset: JSONL lines ``{"prompt": ..., "output_tokens": ...}`` (the user's traffic).

    ``output_len`` None is vLLM's default of 256 tokens for every request, -1 takes each line's
    ``output_tokens``, any other value is used for every request.
    """
    fixed = CUSTOM_OUTPUT_LEN if output_len is None else output_len
    pairs: list[tuple[str, int]] = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"dataset file {path} line {number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{where} is not valid JSON ({e.msg}); a custom dataset is JSONL") from None
        prompt = item.get("prompt") if isinstance(item, dict) else None
        if not isinstance(prompt, str) or not prompt:
            raise DatasetError(f'{where} has no "prompt" text; each line is {{"prompt": ..., "output_tokens": ...}}')
        if fixed != -1:
            pairs.append((prompt, fixed))
            continue
        tokens = item.get("output_tokens")
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
            raise DatasetError(
                f'{where} needs "output_tokens" (a positive integer) with custom_output_len -1, got {tokens!r}'
            )
        pairs.append((prompt, tokens))
    if not pairs:
        raise DatasetError(f"dataset file {path} has no requests (a custom dataset is JSONL with a prompt per line)")
    return pairs
