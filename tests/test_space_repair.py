"""The search space, the repair rules and the shared violation encoding."""

from __future__ import annotations

import math
import random

import pytest

from vllm_slo_guard.errors import InputError
from vllm_slo_guard.outcome import CRASH_VIOLATION, MAX_SLO_VIOLATION, Outcome, rank_key
from vllm_slo_guard.repair import RepairContext, repair
from vllm_slo_guard.space import build_space, config_key, vllm_defaults
from vllm_slo_guard.vllm_rules.catalog import GPUS, resolve_gpu

A100, CPU, H100 = resolve_gpu("A100-40GB"), resolve_gpu("cpu"), resolve_gpu("H100-80GB")


def _ctx(gpu=A100, max_model_len: int = 4096, **pinned) -> RepairContext:
    return RepairContext(gpu, {"max_model_len": max_model_len, **pinned}, max_model_len)


# --- repair rules: each rule once, with its note ------------------------------------------------------


def test_batched_tokens_raised_to_max_num_seqs() -> None:
    fixed = repair({"max_num_seqs": 512, "max_num_batched_tokens": 256}, _ctx())
    assert fixed.config["max_num_batched_tokens"] == 512
    assert fixed.notes == ("max_num_batched_tokens 256 → 512: must be ≥ max_num_seqs",)


def test_max_num_seqs_lowered_when_the_token_budget_is_pinned() -> None:
    fixed = repair({"max_num_seqs": 512}, _ctx(max_num_batched_tokens=256))
    assert fixed.config["max_num_seqs"] == 256 and "must be ≤ max_num_batched_tokens" in fixed.notes[0]


def test_without_chunked_prefill_the_budget_covers_max_model_len() -> None:
    fixed = repair({"max_num_batched_tokens": 1024, "enable_chunked_prefill": False}, _ctx(max_model_len=8192))
    assert fixed.config["max_num_batched_tokens"] == 8192
    assert "without chunked prefill" in fixed.notes[0]
    untouched = repair({"max_num_batched_tokens": 1024, "enable_chunked_prefill": True}, _ctx(max_model_len=8192))
    assert untouched.config["max_num_batched_tokens"] == 1024 and not untouched.notes


@pytest.mark.parametrize(("gpu", "block", "expected"), [(CPU, 16, 32), (CPU, 96, 96), (CPU, 100, 128), (A100, 24, 32)])
def test_block_size_rounded_up_to_what_the_backend_supports(gpu, block: int, expected: int) -> None:
    fixed = repair({"block_size": block}, _ctx(gpu=gpu))
    assert fixed.config["block_size"] == expected
    assert bool(fixed.notes) == (block != expected)


def test_fp8_kv_cache_dropped_where_the_gpu_has_none() -> None:
    assert repair({"kv_cache_dtype": "fp8"}, _ctx(gpu=A100)).config["kv_cache_dtype"] == "auto"
    assert repair({"kv_cache_dtype": "fp8"}, _ctx(gpu=H100)).config["kv_cache_dtype"] == "fp8"


def test_capture_size_dropped_without_graphs_and_capped_by_the_budget() -> None:
    eager = repair({"optimization_level": 0, "max_cudagraph_capture_size": 64}, _ctx())
    assert "max_cudagraph_capture_size" not in eager.config and "no CUDA graphs" in eager.notes[0]
    capped = repair({"max_num_batched_tokens": 512, "max_cudagraph_capture_size": 1024}, _ctx())
    assert capped.config["max_cudagraph_capture_size"] == 512


@pytest.mark.parametrize("gpu", sorted(GPUS))
def test_repaired_configs_start_in_the_simulator(gpu: str) -> None:
    """Property, on every catalog GPU and the CPU backend: whatever the space samples, repair makes it a
    config vLLM accepts (no config_invalid)."""
    from vllm_slo_guard.guard import predict
    from vllm_slo_guard.vllm_rules.startup import Device

    spec = GPUS[gpu]
    space, _ = build_space(spec, ("--max-model-len", "4096"))
    rng = random.Random(0)
    for _ in range(200):
        fixed = repair(space.sample(rng), _ctx(spec))
        verdict = predict("Qwen/Qwen2-1.5B", space.argv(fixed.config), Device(spec))
        assert verdict.ok or verdict.category == "oom", (fixed.config, verdict.message)


# --- the encoding -------------------------------------------------------------------------------------


def test_crash_ranks_below_every_slo_miss_which_ranks_below_every_feasible_trial() -> None:
    feasible = [Outcome("ok", {}, objective=x, violation=-0.5) for x in (0.1, 5.0, 100.0)]
    misses = [Outcome("slo_violation", {}, objective=0.01, violation=v) for v in (1e-6, 0.15, 3.0, 1e9, math.inf)]
    failures = [Outcome("crash", {}, category="oom", violation=math.inf), Outcome("guarded", {}, category="oom")]
    for f in feasible:
        for m in misses:
            assert f.constraint <= 0 < m.constraint and rank_key(f) < rank_key(m)
    for m in misses:
        assert m.constraint <= MAX_SLO_VIOLATION < CRASH_VIOLATION
        for c in failures:
            assert c.constraint == CRASH_VIOLATION and rank_key(m) < rank_key(c)
    # the reference's bug: a 150 ms miss on a 100 ms SLO must rank above (better than) a crash
    assert rank_key(Outcome("slo_violation", {}, violation=1.5)) < rank_key(failures[0])


def test_rank_key_orders_feasible_trials_by_objective_in_both_directions() -> None:
    fast, slow = Outcome("ok", {}, objective=0.1), Outcome("ok", {}, objective=0.2)
    assert rank_key(fast) < rank_key(slow)
    assert rank_key(slow, minimize=False) < rank_key(fast, minimize=False)


# --- the space -----------------------------------------------------------------------------------------


def test_pinned_flags_leave_the_space_and_are_forwarded_first() -> None:
    space, fixed = build_space(A100, ("--max-num-seqs", "64", "--enforce-eager", "--api-key", "k"))
    assert "max_num_seqs" not in space.names and "optimization_level" not in space.names
    assert space.argv({"max_num_batched_tokens": 4096})[:5] == [
        "--max-num-seqs",
        "64",
        "--enforce-eager",
        "--api-key",
        "k",
    ]
    assert fixed == {}


def test_tune_and_fix_adjust_the_space() -> None:
    space, fixed = build_space(
        A100, (), tune=["max_num_seqs=8:64", "block_size=16,32"], fix=["enable_prefix_caching=false"]
    )
    knob = space.knob("max_num_seqs")
    assert (knob.low, knob.high) == (8, 64)
    assert space.knob("block_size").choices == (16, 32)
    assert fixed == {"enable_prefix_caching": False} and "enable_prefix_caching" not in space.names
    with pytest.raises(InputError, match="did you mean max_num_seqs"):
        build_space(A100, (), tune=["max_num_seq=8:64"])
    with pytest.raises(InputError, match="LOW:HIGH"):
        build_space(A100, (), tune=["max_num_seqs=8"])


def test_hardware_dependent_knobs() -> None:
    gpu_space, _ = build_space(A100, ())
    cpu_space, _ = build_space(CPU, ())
    h100_space, _ = build_space(H100, ())
    assert "gpu_memory_utilization" in gpu_space.names and "kv_cache_memory_bytes" not in gpu_space.names
    assert "kv_cache_memory_bytes" in cpu_space.names and "max_cudagraph_capture_size" not in cpu_space.names
    assert set(cpu_space.knob("block_size").choices) == {32, 64, 128, 256}
    assert "kv_cache_dtype" in h100_space.names and "kv_cache_dtype" not in gpu_space.names


def test_samples_respect_ranges_log_scales_and_conditionals() -> None:
    space, _ = build_space(A100, ())
    rng = random.Random(1)
    seqs = []
    for _ in range(400):
        config = space.sample(rng)
        assert ("max_cudagraph_capture_size" in config) == (config["optimization_level"] != 0)
        seqs.append(config["max_num_seqs"])
    assert min(seqs) >= 1 and max(seqs) <= 256
    assert sum(s <= 16 for s in seqs) > 0.35 * len(seqs)  # log scale: half the draws below the geometric mean


def test_defaults_and_keys() -> None:
    space, _ = build_space(A100, ())
    defaults = vllm_defaults(space)
    assert defaults["max_num_seqs"] == 256 and defaults["max_num_batched_tokens"] == 2048
    assert "max_cudagraph_capture_size" not in defaults  # vLLM derives it
    assert config_key({"b": 1, "a": 2}) == config_key({"a": 2, "b": 1})
