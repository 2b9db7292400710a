"""The benchmark workload: which requests are sent, and when.

Shared by the simulated engine (virtual time) and the load generator (real time), so a tuning run
measures the same prompts, output lengths and arrival times on both. Flag names, defaults and
sampling rules follow ``vllm bench serve`` (``vllm/benchmarks/datasets/datasets.py`` and
``serve.py``), so a user's existing bench command line maps onto a :class:`WorkloadSpec` one to one,
and a result here is comparable with one from vLLM's own benchmark.

Prompts are made of the served model's own tokens (``tokenizer``, from :mod:`.tokenizers`; the
datasets in :mod:`.datasets`), since vLLM refuses ids outside its vocabulary and counts text with
its tokenizer. Without one (the simulated engine on a catalog model) they are the simulator's
vocabulary, built here on a fast path; one seed gives the same requests wherever they are built.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from .datasets import (
    WorkloadRequest,
    length_bounds,
    load_custom,
    load_sharegpt,
    prefix_repetition_requests,
    random_requests,
    text_requests,
)
from .sim_tokenizer import VOCAB_SIZE, SimTokenizer
from .tokenizers import NO_CHAT_TEMPLATE, PromptTokenizer

DATASETS = ("random", "sharegpt", "custom", "prefix_repetition")  # vLLM's --dataset-name values we build

# Independent RNG streams derived from the one user seed, so that changing e.g. the number of
# warm-ups never changes the measured requests or their arrival times.
_STREAM_ARRIVALS = 1
_STREAM_WARMUPS = 2

_INT_FIELDS = frozenset(
    {
        "num_prompts", "random_input_len", "random_output_len", "random_prefix_len", "num_warmups", "seed",
        "prefix_repetition_prefix_len", "prefix_repetition_suffix_len", "prefix_repetition_num_prefixes",
        "prefix_repetition_output_len",
    }
)  # fmt: skip
_NULLABLE_INT_FIELDS = frozenset({"max_concurrency", "custom_output_len"})
_FLOAT_FIELDS = frozenset({"request_rate", "burstiness", "random_range_ratio"})
_BOOL_FIELDS = frozenset({"skip_chat_template"})
# fields added after studies were first stored: left out of to_dict() at their defaults, so a spec that
# does not use them keeps its dict form, and a study its fingerprint
_LATER_FIELDS = frozenset(
    {
        "skip_chat_template", "prefix_repetition_prefix_len", "prefix_repetition_suffix_len",
        "prefix_repetition_num_prefixes", "prefix_repetition_output_len",
    }
)  # fmt: skip


@dataclass(frozen=True)
class WorkloadSpec:
    """What ``vllm bench serve`` would send: dataset, sizes and arrival process (same defaults).

    ``dataset_name`` is vLLM's ``--dataset-name``; unset, it is ``sharegpt`` when ``dataset_path`` is
    given and ``random`` otherwise (the name that is implied is stored as None, so both spellings are
    one spec). ``random_*`` describe the random dataset, ``custom_output_len`` and
    ``skip_chat_template`` the custom one (JSONL of ``prompt`` and ``output_tokens``; None is vLLM's
    256 output tokens, -1 each line's ``output_tokens``), ``prefix_repetition_*`` the
    prefix_repetition one. ``max_concurrency`` is a client-side cap applied by whoever sends the
    requests, not here.
    """

    num_prompts: int = 1000
    request_rate: float = math.inf
    burstiness: float = 1.0
    max_concurrency: int | None = None
    random_input_len: int = 1024
    random_output_len: int = 128
    random_range_ratio: float = 0.0
    random_prefix_len: int = 0
    dataset_path: str | None = None
    num_warmups: int = 0
    seed: int = 0
    dataset_name: str | None = None
    custom_output_len: int | None = None
    skip_chat_template: bool = False
    prefix_repetition_prefix_len: int = 256
    prefix_repetition_suffix_len: int = 256
    prefix_repetition_num_prefixes: int = 10
    prefix_repetition_output_len: int = 128

    def __post_init__(self) -> None:
        if self.dataset_name is not None and self.dataset_name == self._implied_dataset():
            object.__setattr__(self, "dataset_name", None)

    def _implied_dataset(self) -> str:
        return "sharegpt" if self.dataset_path is not None else "random"

    @property
    def dataset(self) -> str:
        """The dataset's vLLM name: ``random``, ``sharegpt``, ``custom`` or ``prefix_repetition``."""
        return self.dataset_name or self._implied_dataset()

    def validate(self) -> None:
        """Raise :class:`InputError` with one line naming the first bad field (vLLM would fail later)."""
        if self.num_prompts < 1:
            raise InputError(f"num_prompts must be at least 1, got {self.num_prompts}")
        if math.isnan(self.request_rate) or self.request_rate <= 0:
            raise InputError(f"request_rate must be a positive number of requests/s or inf, got {self.request_rate}")
        if math.isnan(self.burstiness) or self.burstiness <= 0:
            raise InputError(f"burstiness must be positive (1 = Poisson arrivals), got {self.burstiness}")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise InputError(f"max_concurrency must be at least 1 (or unset), got {self.max_concurrency}")
        if self.random_input_len < 1:
            raise InputError(f"random_input_len must be at least 1 token, got {self.random_input_len}")
        if self.random_output_len < 1:
            raise InputError(f"random_output_len must be at least 1 token, got {self.random_output_len}")
        if not 0.0 <= self.random_range_ratio < 1.0:
            raise InputError(f"random_range_ratio must be in [0, 1), got {self.random_range_ratio}")
        if self.random_prefix_len < 0:
            raise InputError(f"random_prefix_len must not be negative, got {self.random_prefix_len}")
        if self.num_warmups < 0:
            raise InputError(f"num_warmups must not be negative, got {self.num_warmups}")
        if self.seed < 0:
            raise InputError(f"seed must not be negative, got {self.seed}")
        self._validate_dataset()

    def _validate_dataset(self) -> None:
        dataset = self.dataset
        if dataset not in DATASETS:
            raise InputError(f"dataset_name must be one of {', '.join(DATASETS)}, got {dataset!r}")
        if dataset in ("sharegpt", "custom") and self.dataset_path is None:
            raise InputError(f"the {dataset} dataset needs dataset_path (--dataset-path FILE)")
        if self.custom_output_len is not None and self.custom_output_len != -1 and self.custom_output_len < 1:
            raise InputError("custom_output_len must be at least 1, or -1 for each line's output_tokens")
        if dataset != "prefix_repetition":
            return
        for name in ("prefix_repetition_suffix_len", "prefix_repetition_num_prefixes", "prefix_repetition_output_len"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.prefix_repetition_prefix_len < 0:
            raise InputError(
                f"prefix_repetition_prefix_len must not be negative, got {self.prefix_repetition_prefix_len}"
            )
        if self.num_prompts < self.prefix_repetition_num_prefixes:
            raise InputError(
                f"num_prompts ({self.num_prompts}) must be at least prefix_repetition_num_prefixes "
                f"({self.prefix_repetition_num_prefixes}): every prefix is used by at least one request"
            )

    def to_dict(self) -> dict[str, Any]:
        """Snake-case fields for TOML/JSON files: infinities become ``"inf"`` (JSON has no infinity)
        and unset (None) fields are left out (TOML has no null), as are fields added later while at
        their defaults; :meth:`from_dict` reads it back."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None or (field.name in _LATER_FIELDS and value == field.default):
                continue
            if isinstance(value, float) and math.isinf(value):
                value = "inf" if value > 0 else "-inf"
            out[field.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WorkloadSpec:
        """Parse the :meth:`to_dict` form (``"inf"`` strings, dashes or underscores) and validate it."""
        if not isinstance(data, Mapping):
            raise InputError(f"workload must be a table of settings, got {type(data).__name__}")
        names = [field.name for field in dataclasses.fields(cls)]
        kwargs: dict[str, Any] = {}
        for raw_key, value in data.items():
            key = str(raw_key).replace("-", "_")
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f"; known keys: {', '.join(names)}"
                raise InputError(f"unknown workload key {raw_key!r}{hint}")
            kwargs[key] = _coerce(key, value)
        spec = cls(**kwargs)
        spec.validate()
        return spec


def _coerce(key: str, value: Any) -> Any:
    """Convert one from_dict value to its field's type, or say which key has the wrong type."""
    if key in _FLOAT_FIELDS:
        if isinstance(value, bool):
            raise InputError(f"workload key {key!r} must be a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())  # accepts "inf", "Infinity", "2.5"
            except ValueError:
                pass
        raise InputError(f"workload key {key!r} must be a number or 'inf', got {value!r}")
    if key in _INT_FIELDS or key in _NULLABLE_INT_FIELDS:
        if value is None and key in _NULLABLE_INT_FIELDS:
            return None
        if isinstance(value, bool):
            raise InputError(f"workload key {key!r} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise InputError(f"workload key {key!r} must be an integer, got {value!r}")
    if key in _BOOL_FIELDS:
        if isinstance(value, bool):
            return value
        raise InputError(f"workload key {key!r} must be true or false, got {value!r}")
    if key == "dataset_name":
        if value is None or isinstance(value, str):
            return value or None
        raise InputError(f"workload key {key!r} must be one of {', '.join(DATASETS)}, got {value!r}")
    # dataset_path
    if value is None or isinstance(value, str):
        return value or None
    raise InputError(f"workload key {key!r} must be a file path, got {value!r}")


def build_requests(
    spec: WorkloadSpec, tokenizer: PromptTokenizer | None = None, *, chat: bool = False
) -> list[WorkloadRequest]:
    """The ``num_prompts`` measured requests, reproducible from ``spec.seed``.

    ``tokenizer`` is the served model's (:func:`.tokenizers.prompt_tokenizer`); None is the simulator's.
    ``chat``: the requests go to the chat endpoint, so each prompt is fitted (random datasets) and
    counted through the model's chat template.
    """
    spec.validate()
    return _requests(spec, spec.num_prompts, np.random.default_rng(spec.seed), tokenizer, chat)


def build_warmup_requests(
    spec: WorkloadSpec, tokenizer: PromptTokenizer | None = None, *, chat: bool = False
) -> list[WorkloadRequest]:
    """``num_warmups`` requests from the same length distribution, from their own seed stream.

    vLLM's bench instead resends its first request ``num_warmups`` times; distinct prompts avoid
    warming the prefix cache with exactly the first measured prompt.
    """
    spec.validate()
    if spec.num_warmups == 0:
        return []
    rng = np.random.default_rng([spec.seed, _STREAM_WARMUPS])
    return _requests(spec, spec.num_warmups, rng, tokenizer, chat)


def _requests(
    spec: WorkloadSpec, n: int, rng: np.random.Generator, tokenizer: PromptTokenizer | None, chat: bool
) -> list[WorkloadRequest]:
    tok = tokenizer if tokenizer is not None else SimTokenizer()
    sim = isinstance(tok, SimTokenizer)
    if chat and not sim and not tok.has_chat_template:
        raise InputError(f"--endpoint chat needs a chat template, and the tokenizer of {tok.name} has none: "
                         f"vLLM answers {NO_CHAT_TEMPLATE!r}")  # fmt: skip
    dataset = spec.dataset
    if dataset == "sharegpt":
        assert spec.dataset_path is not None  # validate() checked
        return text_requests(tok, load_sharegpt(spec.dataset_path, tok), n, rng, chat=chat)
    if dataset == "custom":
        assert spec.dataset_path is not None
        pairs = load_custom(spec.dataset_path, spec.custom_output_len)
        return text_requests(tok, pairs, n, rng, chat=chat, template=not spec.skip_chat_template)
    if dataset == "prefix_repetition":
        return prefix_repetition_requests(
            tok, n, rng, prefix_len=spec.prefix_repetition_prefix_len, suffix_len=spec.prefix_repetition_suffix_len,
            num_prefixes=spec.prefix_repetition_num_prefixes, output_len=spec.prefix_repetition_output_len, chat=chat,
        )  # fmt: skip
    if sim:  # the simulator's vocabulary: every id is a word, no fitting needed (and the fast path)
        return _sim_random_requests(spec, n, rng)
    return random_requests(
        tok, n, rng, input_len=spec.random_input_len, output_len=spec.random_output_len,
        range_ratio=spec.random_range_ratio, prefix_len=spec.random_prefix_len, chat=chat,
    )  # fmt: skip


def _sim_random_requests(spec: WorkloadSpec, n: int, rng: np.random.Generator) -> list[WorkloadRequest]:
    """vLLM's random dataset in the simulator's vocabulary: uniform integer lengths, one shared random
    prefix, random ids after it.

    Draws in vLLM's order (input lengths, output lengths, then the prefix); the body is one numpy
    call for all requests so that building hundreds of long prompts stays in the millisecond range.
    """
    in_low, in_high = length_bounds(spec.random_input_len, spec.random_range_ratio)
    out_low, out_high = length_bounds(spec.random_output_len, spec.random_range_ratio)
    input_lens = rng.integers(in_low, in_high + 1, size=n)
    output_lens = rng.integers(out_low, out_high + 1, size=n).tolist()
    table = _token_id_objects()
    prefix_len = spec.random_prefix_len
    prefix = table[rng.integers(0, VOCAB_SIZE, size=prefix_len, dtype=np.uint16)].tolist()
    ends = np.cumsum(input_lens).tolist()
    # uint16 ids and per-request lookups keep temporaries small and reused: fresh memory (page
    # faults) is what makes a cold first build slow, more than the arithmetic.
    body = rng.integers(0, VOCAB_SIZE, size=ends[-1] if ends else 0, dtype=np.uint16)
    requests = []
    start = 0
    for i, end in enumerate(ends):
        requests.append(
            WorkloadRequest(
                index=i,
                prompt_token_ids=tuple(prefix + table[body[start:end]].tolist()),
                output_len=output_lens[i],
                prefix_len=prefix_len,
            )
        )
        start = end
    return requests


@functools.lru_cache(maxsize=1)
def _token_id_objects() -> np.ndarray:
    """Read-only object array of the Python ints ``0 .. VOCAB_SIZE-1``.

    Indexing it with sampled ids and calling ``tolist()`` reuses these int objects instead of
    allocating one per token, which halves the time to build long prompts.
    """
    table = np.array(list(range(VOCAB_SIZE)), dtype=object)
    table.flags.writeable = False
    return table


def arrival_offsets(spec: WorkloadSpec, n: int) -> np.ndarray:
    """Send times in seconds from the start of the run for ``n`` requests, non-decreasing.

    Follows vLLM's ``get_request`` (``vllm/benchmarks/serve.py``, no ramp-up):
    - ``request_rate = inf``: every request at t = 0.
    - otherwise each request waits one gap *before* it is sent, so the first one is sent after the
      first gap, not at t = 0; gaps are Gamma(shape=burstiness, scale=1/(rate*burstiness)), and
      ``burstiness = inf`` gives constant gaps of 1/rate.
    - the cumulative times are then rescaled so the last request is sent at exactly ``n / rate``,
      as vLLM does to make throughput comparable across seeds (mean gap exactly 1/rate; the
      shape of the gaps, e.g. their coefficient of variation, is unchanged).
    Seeded from ``spec.seed`` on a stream separate from :func:`build_requests`.
    """
    spec.validate()
    if n < 0:
        raise InputError(f"number of arrivals must not be negative, got {n}")
    rate = spec.request_rate
    if n == 0 or math.isinf(rate):
        return np.zeros(n, dtype=np.float64)
    if math.isinf(spec.burstiness):
        return np.arange(1, n + 1, dtype=np.float64) / rate
    rng = np.random.default_rng([spec.seed, _STREAM_ARRIVALS])
    gaps = rng.gamma(shape=spec.burstiness, scale=1.0 / (rate * spec.burstiness), size=n)
    offsets = np.cumsum(gaps)
    if offsets[-1] > 0:
        offsets *= (n / rate) / offsets[-1]
    return offsets
