"""The benchmark workload: which requests are sent, and when.

Shared by the simulated engine (virtual time) and the load generator (real time), so a tuning run
measures the same prompts, output lengths and arrival times on both. Flag names, defaults and
sampling rules follow ``vllm bench serve`` (``vllm/benchmarks/datasets.py`` and ``serve.py``), so a
user's existing bench command line maps onto a :class:`WorkloadSpec` one to one, and a result here is
comparable with one from vLLM's own benchmark.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DatasetError, InputError
from .sim_tokenizer import VOCAB_SIZE, SimTokenizer

# ShareGPT pruning rules of vLLM's ``is_valid_sequence`` (defaults used by its sharegpt sampler).
SHAREGPT_MIN_LEN = 4
SHAREGPT_MAX_PROMPT_LEN = 1024
SHAREGPT_MAX_TOTAL_LEN = 2048

# Independent RNG streams derived from the one user seed, so that changing e.g. the number of
# warm-ups never changes the measured requests or their arrival times.
_STREAM_ARRIVALS = 1
_STREAM_WARMUPS = 2

_INT_FIELDS = frozenset(
    {"num_prompts", "random_input_len", "random_output_len", "random_prefix_len", "num_warmups", "seed"}
)
_FLOAT_FIELDS = frozenset({"request_rate", "burstiness", "random_range_ratio"})


@dataclass(frozen=True)
class WorkloadSpec:
    """What ``vllm bench serve`` would send: dataset, sizes and arrival process (same defaults).

    ``dataset_path`` selects ShareGPT; otherwise the ``random_*`` fields describe vLLM's random dataset.
    ``max_concurrency`` is a client-side cap applied by whoever sends the requests, not here.
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

    def to_dict(self) -> dict[str, Any]:
        """Snake-case fields for TOML/JSON files: infinities become ``"inf"`` (JSON has no infinity)
        and unset (None) fields are left out (TOML has no null); :meth:`from_dict` reads it back."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None:
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
    if key in _INT_FIELDS or key == "max_concurrency":
        if value is None and key == "max_concurrency":
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
    # dataset_path
    if value is None or isinstance(value, str):
        return value or None
    raise InputError(f"workload key {key!r} must be a file path, got {value!r}")


@dataclass(frozen=True)
class WorkloadRequest:
    """One request: its prompt as token ids of :class:`SimTokenizer`, and how many tokens to generate.

    The first ``prefix_len`` ids are the prefix shared by all requests (for prefix caching). ShareGPT
    requests keep their original ``text``, which is what a real server must be sent.
    """

    index: int
    prompt_token_ids: tuple[int, ...]
    output_len: int
    prefix_len: int = 0
    text: str | None = None

    @property
    def prompt_len(self) -> int:
        """Prompt length in tokens."""
        return len(self.prompt_token_ids)

    @property
    def prompt_text(self) -> str:
        """The prompt as text: the original ShareGPT text, else the decoded token ids."""
        if self.text is not None:
            return self.text
        return SimTokenizer().decode(self.prompt_token_ids)


def build_requests(spec: WorkloadSpec) -> list[WorkloadRequest]:
    """The ``num_prompts`` measured requests, reproducible from ``spec.seed``."""
    spec.validate()
    rng = np.random.default_rng(spec.seed)
    if spec.dataset_path is not None:
        return _sharegpt_requests(spec.dataset_path, spec.num_prompts, rng)
    return _random_requests(spec, spec.num_prompts, rng)


def build_warmup_requests(spec: WorkloadSpec) -> list[WorkloadRequest]:
    """``num_warmups`` requests from the same length distribution, from their own seed stream.

    vLLM's bench instead resends its first request ``num_warmups`` times; distinct prompts avoid
    warming the prefix cache with exactly the first measured prompt.
    """
    spec.validate()
    if spec.num_warmups == 0:
        return []
    rng = np.random.default_rng([spec.seed, _STREAM_WARMUPS])
    if spec.dataset_path is not None:
        return _sharegpt_requests(spec.dataset_path, spec.num_warmups, rng)
    return _random_requests(spec, spec.num_warmups, rng)


def length_bounds(length: int, range_ratio: float) -> tuple[int, int]:
    """Inclusive integer range lengths are drawn from, as vLLM's ``RandomDataset.get_sampling_params``:
    ``[floor(L*(1-r)), ceil(L*(1+r))]`` computed in floating point, with the low end raised to 1."""
    low = math.floor(length * (1 - range_ratio))
    high = math.ceil(length * (1 + range_ratio))
    return max(low, 1), max(high, 1)


def _random_requests(spec: WorkloadSpec, n: int, rng: np.random.Generator) -> list[WorkloadRequest]:
    """vLLM's random dataset: uniform integer lengths, one shared random prefix, random ids after it.

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


def _sharegpt_requests(path: str, n: int, rng: np.random.Generator) -> list[WorkloadRequest]:
    """ShareGPT conversations filtered like vLLM's sampler, shuffled, reused cyclically if too few."""
    pairs = _load_sharegpt(path)
    order = rng.permutation(len(pairs)).tolist()
    tokenizer = SimTokenizer()
    encoded: dict[int, tuple[int, ...]] = {}
    requests = []
    for i in range(n):
        k = order[i % len(order)]
        prompt, output_len = pairs[k]
        if k not in encoded:
            encoded[k] = tuple(tokenizer.encode(prompt))
        requests.append(WorkloadRequest(index=i, prompt_token_ids=encoded[k], output_len=output_len, text=prompt))
    return requests


def _load_sharegpt(path: str) -> list[tuple[str, int]]:
    """(prompt text, output length) of every usable entry, in file order; DatasetError otherwise."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise DatasetError(f"dataset file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise DatasetError(
            f"dataset file {path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})"
        ) from None
    except UnicodeDecodeError:
        raise DatasetError(f"dataset file {path} is not UTF-8 text") from None
    except OSError as e:
        raise DatasetError(f"cannot read dataset file {path}: {e.strerror or e}") from None
    if not isinstance(data, list):
        raise DatasetError(
            f"dataset file {path} is not in ShareGPT format: expected a JSON list of objects "
            f'with a "conversations" list, got a JSON {type(data).__name__}'
        )
    tokenizer = SimTokenizer()
    shaped = 0
    pairs: list[tuple[str, int]] = []
    for entry in data:
        turns = _two_turns(entry)
        if turns is None:
            continue
        shaped += 1
        prompt, completion = turns
        prompt_len = tokenizer.count(prompt)
        output_len = tokenizer.count(completion)
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
