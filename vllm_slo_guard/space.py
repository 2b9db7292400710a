"""The tunable engine arguments: typed knobs with vLLM's flag names, and search spaces built from them.

A configuration (``Config``) maps knob names (vLLM's ``EngineArgs`` field names, e.g. ``max_num_seqs``)
to values. Knobs are ints (optionally log-scaled), floats, booleans or categoricals; a knob may be
conditional on others (``max_cudagraph_capture_size`` only exists when CUDA graphs are used). Ranges
depend on the hardware (vLLM's batch defaults, GPU vs CPU backend, fp8 support). Every flag the user
pins on the command line is removed from the space and forwarded unchanged.
"""

from __future__ import annotations

import difflib
import json
import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import InputError
from .units import parse_size
from .vllm_rules.args import ArgparseExit, parse_serve_args
from .vllm_rules.catalog import GpuSpec
from .vllm_rules.config import batch_defaults
from .vllm_rules.limits import DEFAULT_GPU_MEMORY_UTILIZATION

Config = dict[str, Any]


@dataclass(frozen=True)
class Knob:
    """One tunable engine argument."""

    name: str
    kind: str  # "int" | "float" | "bool" | "categorical"
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    condition: Callable[[Mapping[str, Any]], bool] | None = field(default=None, compare=False)
    default: Any = None  # vLLM's value when the flag is not given (for reports)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def active(self, config: Mapping[str, Any]) -> bool:
        return self.condition is None or bool(self.condition(config))

    def sample(self, rng: random.Random) -> Any:
        if self.kind in ("bool", "categorical"):
            return rng.choice(self.values)
        assert self.low is not None and self.high is not None
        if self.log:
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high)
        return self.clip(value)

    @property
    def values(self) -> tuple[Any, ...]:
        return (False, True) if self.kind == "bool" else self.choices

    def clip(self, value: float) -> Any:
        assert self.low is not None and self.high is not None
        value = min(max(value, self.low), self.high)
        return round(value) if self.kind == "int" else round(float(value), 4)

    def neighbour(self, value: Any, temperature: float, rng: random.Random) -> Any:
        """A nearby value: a Gaussian step on the knob's own (log or linear) scale, or another choice."""
        if self.kind in ("bool", "categorical"):
            others = [v for v in self.values if v != value]
            return rng.choice(others) if others else value
        assert self.low is not None and self.high is not None
        t = max(temperature, 0.05)
        if self.log:
            span = math.log(self.high) - math.log(self.low)
            proposal = math.exp(math.log(max(value, self.low)) + rng.gauss(0.0, 0.3 * t * span))
        else:
            proposal = value + rng.gauss(0.0, 0.3 * t * (self.high - self.low))
        new = self.clip(proposal)
        if new == value and self.kind == "int":  # always move: one step in a random direction
            new = self.clip(value + rng.choice((-1, 1)) * max(1, round(abs(value) * 0.1)))
        return new

    def argv(self, value: Any) -> list[str]:
        """The ``vllm serve`` flags for this value."""
        if self.kind == "bool":
            if self.name == "enforce_eager":
                return ["--enforce-eager"] if value else []
            return [self.flag] if value else ["--no-" + self.flag[2:]]
        if self.name == "optimization_level":
            return [f"-O{value}"]
        return [self.flag, str(value)]


@dataclass(frozen=True)
class Space:
    """The knobs to tune, and the user's pinned ``vllm serve`` flags (never tuned, always forwarded)."""

    knobs: tuple[Knob, ...]
    pinned_args: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(k.name for k in self.knobs)

    def knob(self, name: str) -> Knob:
        for knob in self.knobs:
            if knob.name == name:
                return knob
        raise KeyError(name)

    def active_knobs(self, config: Mapping[str, Any]) -> list[Knob]:
        return [k for k in self.knobs if k.active(config)]

    def sample(self, rng: random.Random) -> Config:
        """A uniformly random config (on each knob's scale), conditionals resolved in declaration order."""
        config: Config = {}
        for knob in self.knobs:
            if knob.active(config):
                config[knob.name] = knob.sample(rng)
        return config

    def resolve(
        self, config: Mapping[str, Any], rng: random.Random, *, before: Mapping[str, Any] | None = None
    ) -> Config:
        """Drop knobs that became inactive and sample the ones that became active.

        With ``before`` (the config a move started from), a knob that was already active there and left to
        vLLM (absent) stays absent: a one-knob move must not also pin a vLLM-derived value at random.
        """
        out: Config = {}
        for knob in self.knobs:
            if not knob.active(out):
                continue
            if knob.name in config:
                out[knob.name] = config[knob.name]
            elif before is None or knob.name in before or not knob.active(before):
                out[knob.name] = knob.sample(rng)
        return out

    def argv(self, config: Mapping[str, Any]) -> list[str]:
        """Pinned flags first, then the tuned ones, in knob order."""
        args = list(self.pinned_args)
        for knob in self.knobs:
            if knob.name in config:
                args += knob.argv(config[knob.name])
        return args


def vllm_defaults(space: Space) -> Config:
    """vLLM's own choice for every knob (a knob whose default is vLLM-derived is left out: not passed)."""
    config: Config = {}
    for knob in space.knobs:
        if not knob.active(config) or knob.default is None:
            continue
        value = knob.default
        if knob.kind in ("int", "float"):
            value = knob.clip(value)
        elif value not in knob.values:
            continue
        config[knob.name] = value
    return config


def config_key(config: Mapping[str, Any]) -> str:
    """Canonical text of a config: equal configs, equal keys (dedup, caches, storage)."""
    return json.dumps({k: config[k] for k in sorted(config)}, sort_keys=True)


# --- the default space ----------------------------------------------------------------------------


def _graphs_on(config: Mapping[str, Any]) -> bool:
    return config.get("optimization_level", 2) != 0


def default_knobs(gpu: GpuSpec, *, tune_max_model_len: bool = False, max_model_len: int | None = None) -> list[Knob]:
    """vLLM 0.32's tuning knobs for this hardware.

    Batch defaults from ``EngineArgs.get_batch_defaults`` (``vllm/engine/arg_utils.py``); the other defaults and
    allowed values from vLLM's config classes (``vllm/config/scheduler.py``, ``vllm/config/cache.py``,
    ``vllm/config/compilation.py``) and the CPU platform (``vllm/platforms/cpu.py``: block size 128).
    """
    default_tokens, default_seqs = batch_defaults(gpu, 1)
    knobs = [
        Knob("max_num_seqs", "int", 1, max(default_seqs, 256), log=True, default=default_seqs),
        Knob("max_num_batched_tokens", "int", 256, max(4 * default_tokens, 8192), log=True, default=default_tokens),
    ]
    if gpu.is_cpu:
        knobs.append(Knob("kv_cache_memory_bytes", "int", 64 * 2**20, 8 * 2**30, log=True, default=None))
        knobs.append(Knob("block_size", "categorical", choices=(32, 64, 128, 256), default=128))
        knobs.append(Knob("optimization_level", "categorical", choices=(0, 2), default=2))
    else:
        knobs.append(Knob("gpu_memory_utilization", "float", 0.70, 0.97, default=DEFAULT_GPU_MEMORY_UTILIZATION))
        knobs.append(Knob("block_size", "categorical", choices=(16, 32), default=16))
        knobs.append(Knob("optimization_level", "categorical", choices=(0, 1, 2), default=2))
        knobs.append(Knob("max_cudagraph_capture_size", "int", 8, 1024, log=True, condition=_graphs_on, default=None))
        if gpu.supports_fp8:
            knobs.append(Knob("kv_cache_dtype", "categorical", choices=("auto", "fp8"), default="auto"))
    knobs.append(Knob("enable_chunked_prefill", "bool", default=True))
    knobs.append(Knob("enable_prefix_caching", "bool", default=True))
    if tune_max_model_len:
        high = max_model_len or 32768
        knobs.append(Knob("max_model_len", "int", min(512, high), high, log=True, default=high))
    return knobs


_ALIASES = {"gpu_memory_utilization": ("device_memory_utilization",), "optimization_level": ("O",)}


def pinned_knob_names(pinned_args: Sequence[str]) -> set[str]:
    """EngineArgs fields the user set on the command line (so they leave the space)."""
    if not pinned_args:
        return set()
    try:
        ns = parse_serve_args(["_model_", *pinned_args])
    except ArgparseExit as exc:
        raise InputError(exc.line) from None
    defaults = vars(parse_serve_args(["_model_"]))
    names = {key for key, value in vars(ns).items() if value != defaults.get(key)}
    if ns.enforce_eager:
        names.add("optimization_level")
    if ns.compilation_config:
        names.update({"max_cudagraph_capture_size", "optimization_level"})
    return names


def _parse_range(knob: Knob, text: str) -> Knob:
    if knob.kind in ("bool", "categorical"):
        values = tuple(_parse_value(knob, part) for part in text.split(","))
        return replace(knob, kind="categorical", choices=values)
    low_text, sep, high_text = text.partition(":")
    if not sep:
        raise InputError(f"--tune {knob.name}={text}: expected LOW:HIGH (e.g. 4:256)")
    low, high = float(_parse_value(knob, low_text)), float(_parse_value(knob, high_text))
    if not low < high:
        raise InputError(f"--tune {knob.name}={text}: LOW must be below HIGH")
    return replace(knob, low=low, high=high)


def _parse_value(knob: Knob, text: str) -> Any:
    text = text.strip()
    try:
        if knob.kind == "bool" or (knob.kind == "categorical" and all(isinstance(c, bool) for c in knob.choices)):
            if text.lower() in ("true", "1", "yes", "on"):
                return True
            if text.lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError(text)
        if knob.kind == "float":
            return float(text)
        if knob.kind == "int" or all(isinstance(c, int) for c in knob.choices):
            return parse_size(text)
        return text
    except (ValueError, InputError):
        raise InputError(f"invalid value {text!r} for {knob.name}") from None


def build_space(
    gpu: GpuSpec,
    pinned_args: Sequence[str] = (),
    *,
    tune: Iterable[str] = (),
    fix: Iterable[str] = (),
    max_model_len: int | None = None,
) -> tuple[Space, Config]:
    """The search space for ``gpu`` minus pinned flags, adjusted by ``--tune KNOB=RANGE`` / ``--fix KNOB=VALUE``.

    Returns the space and the fixed values (``--fix``), which are forwarded like pinned flags.
    """
    tune_map = _kv_pairs(tune, "--tune")
    fix_map = _kv_pairs(fix, "--fix")
    knobs = default_knobs(gpu, tune_max_model_len="max_model_len" in tune_map, max_model_len=max_model_len)
    by_name = {k.name: k for k in knobs}
    for name in list(tune_map) + list(fix_map):
        if name not in by_name:
            close = difflib.get_close_matches(name, list(by_name), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise InputError(f"unknown knob {name!r}{hint}; tunable: {', '.join(by_name)}")
    knobs = [_parse_range(k, tune_map[k.name]) if k.name in tune_map else k for k in knobs]
    fixed = {name: _parse_value(by_name[name], value) for name, value in fix_map.items()}
    pinned = pinned_knob_names(pinned_args)
    knobs = [k for k in knobs if k.name not in pinned and k.name not in fixed]
    return Space(tuple(knobs), tuple(pinned_args)), fixed


def _kv_pairs(items: Iterable[str], option: str) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not value:
            raise InputError(f"{option} {item!r}: expected KNOB=VALUE")
        out[name.strip().replace("-", "_")] = value
    return out
