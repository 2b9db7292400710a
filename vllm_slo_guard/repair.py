"""Repair: deterministic rules that turn a sampled point into a configuration vLLM accepts.

Each rule fixes one of vLLM's startup refusals (the rules of ``vllm_rules.limits``, which vLLM's
config resolution raises with its own message) by moving the *tuned* value the least; pinned flags
are never changed (an infeasible pin is the user's error, reported as such). Every applied rule is
recorded, and the optimizer is told the repaired configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .space import Config
from .vllm_rules.catalog import GpuSpec
from .vllm_rules.limits import (
    DEFAULT_ENABLE_CHUNKED_PREFILL,
    block_size_multiple,
    budget_below_max_model_len,
    budget_below_max_num_seqs,
)


@dataclass(frozen=True)
class Repaired:
    config: Config
    notes: tuple[str, ...]


@dataclass(frozen=True)
class RepairContext:
    """What the rules need besides the config: hardware, and the values the user pinned."""

    gpu: GpuSpec
    pinned: Mapping[str, Any]  # EngineArgs field → value, from the pinned flags and --fix
    max_model_len: int  # the effective max_model_len (pinned, or the model's maximum)


def _value(name: str, config: Mapping[str, Any], ctx: RepairContext, default: Any = None) -> Any:
    if name in config:
        return config[name]
    return ctx.pinned.get(name, default)


def repair(config: Mapping[str, Any], ctx: RepairContext) -> Repaired:
    """Apply every rule in order; return the repaired config and one note per change."""
    out: Config = dict(config)
    notes: list[str] = []

    def set_value(name: str, new: Any, why: str) -> None:
        old = out[name]
        out[name] = new
        notes.append(f"{name} {old} → {new}: {why}")

    block = out.get("block_size")
    if block is not None:
        multiple = block_size_multiple(ctx.gpu.is_cpu)
        if block % multiple:
            set_value("block_size", -(-block // multiple) * multiple, f"block size must be a multiple of {multiple}")
    if out.get("kv_cache_dtype", "auto") != "auto" and not ctx.gpu.supports_fp8:
        set_value("kv_cache_dtype", "auto", f"{ctx.gpu.name} has no fp8 KV cache")
    if "max_cudagraph_capture_size" in out and _value("optimization_level", out, ctx, 2) == 0:
        notes.append("max_cudagraph_capture_size dropped: no CUDA graphs at -O0")
        del out["max_cudagraph_capture_size"]
    seqs = _value("max_num_seqs", out, ctx)
    tokens = _value("max_num_batched_tokens", out, ctx)
    chunked = _value("enable_chunked_prefill", out, ctx, DEFAULT_ENABLE_CHUNKED_PREFILL)
    if "max_num_batched_tokens" in out and budget_below_max_model_len(tokens, ctx.max_model_len, chunked):
        set_value(
            "max_num_batched_tokens", ctx.max_model_len,
            "without chunked prefill a whole prompt (up to max_model_len) must fit the token budget",
        )  # fmt: skip
        tokens = out["max_num_batched_tokens"]
    if seqs is not None and tokens is not None and budget_below_max_num_seqs(tokens, seqs):
        if "max_num_batched_tokens" in out:
            set_value("max_num_batched_tokens", seqs, "must be ≥ max_num_seqs")
        elif "max_num_seqs" in out:
            set_value("max_num_seqs", tokens, "must be ≤ max_num_batched_tokens")
    if "max_cudagraph_capture_size" in out:
        budget = _value("max_num_batched_tokens", out, ctx)
        if budget is not None and out["max_cudagraph_capture_size"] > budget:
            set_value("max_cudagraph_capture_size", budget, "graphs larger than the token budget are never used")
    return Repaired(out, tuple(notes))
