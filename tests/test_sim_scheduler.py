"""vLLM V1 scheduling semantics of the simulator.

As in ``vllm/v1/core/sched/scheduler.py`` and ``vllm/v1/core/kv_cache_manager.py``.
"""

from __future__ import annotations

import dataclasses

import pytest

from vllm_slo_guard.bench.workload import WorkloadSpec
from vllm_slo_guard.sim import evaluator
from vllm_slo_guard.sim.engine import EngineCore, RequestRejected
from vllm_slo_guard.sim.scheduler import BlockPool, Scheduler, SimRequest
from vllm_slo_guard.vllm_rules.args import parse_serve_args
from vllm_slo_guard.vllm_rules.catalog import resolve_gpu
from vllm_slo_guard.vllm_rules.config import resolve_config
from vllm_slo_guard.vllm_rules.memory import plan_memory
from vllm_slo_guard.vllm_rules.modelinfo import load_model_arch

QWEN = "Qwen/Qwen2-1.5B"


def _scheduler(*flags: str, num_blocks: int = 10_000, max_model_len: int = 4096) -> Scheduler:
    arch = load_model_arch(QWEN)
    cfg = resolve_config(
        parse_serve_args([QWEN, "--max-model-len", str(max_model_len), *flags]), arch, resolve_gpu("A100-40GB")
    )
    return Scheduler(cfg, num_blocks, max_model_len)


def _run_step(sched: Scheduler) -> list[tuple[int, int]]:
    step = sched.schedule()
    for req, n in step.items:
        req.num_computed += n
        if req.num_computed >= req.num_tokens:
            req.num_output += 1
    return [(req.req_id, n) for req, n in step.items]


def test_token_budget_chunks_prefill_and_running_go_first() -> None:
    sched = _scheduler("--max-num-batched-tokens", "512", "--max-num-seqs", "8")
    sched.add(SimRequest(0, prompt_len=700, max_tokens=4))
    sched.add(SimRequest(1, prompt_len=100, max_tokens=4))
    assert _run_step(sched) == [(0, 512)]  # FCFS: the first prompt takes the whole budget
    assert _run_step(sched) == [(0, 188), (1, 100)]  # the partial prefill continues first
    assert _run_step(sched) == [(0, 1), (1, 1)]  # both decode


def test_without_chunked_prefill_a_prompt_must_fit_whole() -> None:
    sched = _scheduler("--no-enable-chunked-prefill", "--max-num-batched-tokens", "4096", "--max-num-seqs", "8")
    sched.add(SimRequest(0, prompt_len=3000, max_tokens=4))
    sched.add(SimRequest(1, prompt_len=2000, max_tokens=4))
    assert _run_step(sched) == [(0, 3000)]  # the second does not fit the remaining 1096 tokens
    assert _run_step(sched) == [(0, 1), (1, 2000)]


def test_max_num_seqs_limits_running_requests() -> None:
    sched = _scheduler("--max-num-seqs", "2")
    for i in range(3):
        sched.add(SimRequest(i, prompt_len=10, max_tokens=4))
    assert [rid for rid, _ in _run_step(sched)] == [0, 1]
    assert len(sched.waiting) == 1


def test_recompute_preemption_of_the_latest_request_when_blocks_run_out() -> None:
    # 16-token blocks; 4 usable blocks (one is the null block) hold 64 tokens
    sched = _scheduler("--max-num-seqs", "4", num_blocks=5)
    sched.add(SimRequest(0, prompt_len=32, max_tokens=40))
    sched.add(SimRequest(1, prompt_len=32, max_tokens=40))
    _run_step(sched)  # both prefilled: 4 blocks used, 1 token each sampled
    assert sched.pool.num_free == 0
    step = sched.schedule()  # request 0 needs a 5th block: the most recent (1) is preempted
    assert [r.req_id for r in step.preempted] == [1]
    assert sched.num_preemptions == 1
    victim = sched.waiting[0]
    assert victim.req_id == 1 and victim.num_computed == 0 and not victim.blocks


def test_prefix_cache_hit_skips_cached_blocks() -> None:
    sched = _scheduler("--max-num-seqs", "8")
    prompt = tuple(range(100))
    first = SimRequest(0, prompt_len=100, max_tokens=2, prompt_ids=prompt)
    sched.add(first)
    _run_step(sched)
    second = SimRequest(1, prompt_len=100, max_tokens=2, prompt_ids=prompt)
    sched.add(second)
    assert _run_step(sched) == [(0, 1), (1, 100 - 96)]  # 6 full blocks (96 tokens) reused
    assert second.num_cached_tokens == 96
    assert sched.prefix_hits == 96


def test_prefix_caching_off_recomputes_everything() -> None:
    sched = _scheduler("--no-enable-prefix-caching")
    prompt = tuple(range(100))
    sched.add(SimRequest(0, 100, 2, prompt_ids=prompt))
    _run_step(sched)
    sched.add(SimRequest(1, 100, 2, prompt_ids=prompt))
    assert _run_step(sched) == [(0, 1), (1, 100)]


def test_block_pool_hands_out_never_used_blocks_before_evicting_cached_ones() -> None:
    pool = BlockPool(num_blocks=4, caching=True)  # 3 usable
    blocks = pool.allocate(1)
    pool.cache(blocks, [111], 1)
    pool.free(blocks)
    assert pool.num_free == 3
    assert pool.cached_prefix([111], 1) == blocks  # still reusable
    pool.allocate(2)  # fresh blocks first
    assert pool.cached_prefix([111], 1) == blocks
    pool.allocate(1)  # now the cached block is evicted
    assert pool.cached_prefix([111], 1) == []


def test_request_too_long_is_rejected_like_vllm() -> None:
    server = evaluator.start_server([QWEN, "--max-model-len", "256"], "A100-40GB")
    engine = server.engine(0)
    with pytest.raises(RequestRejected, match="maximum context length is 256 tokens"):
        engine.add_request(SimRequest(0, prompt_len=200, max_tokens=100))


@pytest.mark.parametrize("flags", [[], ["--no-enable-prefix-caching"], ["--max-num-seqs", "8"], ["--enforce-eager"]])
def test_vectorized_decode_runs_equal_single_steps(flags: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    workload = WorkloadSpec(
        num_prompts=120,
        request_rate=6.0,
        random_input_len=256,
        random_output_len=64,
        random_range_ratio=0.5,
        random_prefix_len=64,
    )
    fast = evaluator.simulate([QWEN, *flags], workload, "A100-40GB", seed=5)
    monkeypatch.setattr(EngineCore, "decode_run_length", lambda self: 0)
    slow = evaluator.simulate([QWEN, *flags], workload, "A100-40GB", seed=5)
    assert fast.engine_steps == slow.engine_steps
    for key in ("mean_e2el_ms", "p99_ttft_ms", "p95_itl_ms", "mean_tpot_ms"):
        assert fast.metrics[key] == pytest.approx(slow.metrics[key], rel=1e-9)


def test_same_seed_same_result_other_seed_other_noise() -> None:
    workload = WorkloadSpec(num_prompts=50, request_rate=5.0, random_input_len=128, random_output_len=32)
    a = evaluator.simulate([QWEN], workload, "A100-40GB", seed=1)
    b = evaluator.simulate([QWEN], workload, "A100-40GB", seed=1)
    c = evaluator.simulate([QWEN], workload, "A100-40GB", seed=2)
    assert a.metrics == b.metrics
    assert a.metrics["mean_e2el_ms"] != c.metrics["mean_e2el_ms"]


def test_kv_pressure_causes_preemptions_and_fewer_blocks_more_of_them() -> None:
    workload = WorkloadSpec(num_prompts=64, random_input_len=512, random_output_len=256)
    counts = []
    for blocks in ("400", "200"):
        result = evaluator.simulate(
            [QWEN, "--num-gpu-blocks-override", blocks, "--max-model-len", "2048"], workload, "A100-40GB"
        )
        assert result.status == "ok" and result.metrics["completed"] == 64
        counts.append(result.num_preemptions)
    assert 0 < counts[0] < counts[1]


def test_prefix_caching_cuts_ttft_for_shared_prefixes() -> None:
    workload = WorkloadSpec(
        num_prompts=100, request_rate=10.0, random_input_len=1024, random_output_len=16, random_prefix_len=896
    )
    on = evaluator.simulate(["meta-llama/Llama-3.1-8B-Instruct", "--max-model-len", "4096"], workload, "A100-80GB")
    off = evaluator.simulate(
        ["meta-llama/Llama-3.1-8B-Instruct", "--max-model-len", "4096", "--no-enable-prefix-caching"],
        workload,
        "A100-80GB",
    )
    assert on.metrics["mean_ttft_ms"] < 0.6 * off.metrics["mean_ttft_ms"]


def test_client_max_concurrency_caps_requests_in_flight() -> None:
    capped = WorkloadSpec(num_prompts=20, max_concurrency=2, random_input_len=64, random_output_len=32)
    free = dataclasses.replace(capped, max_concurrency=None)
    a = evaluator.simulate([QWEN], capped, "A100-40GB")
    b = evaluator.simulate([QWEN], free, "A100-40GB")
    # 10 rounds of 2 take far longer than one batch of 20; TTFT excludes the client-side wait
    assert a.metrics["duration"] > 5 * b.metrics["duration"]
    assert a.metrics["mean_ttft_ms"] < b.metrics["mean_ttft_ms"]


def test_memory_plan_blocks_feed_the_scheduler() -> None:
    arch = load_model_arch(QWEN)
    gpu = resolve_gpu("A100-40GB")
    cfg = resolve_config(parse_serve_args([QWEN, "--max-model-len", "4096"]), arch, gpu)
    plan = plan_memory(cfg, arch, gpu)
    engine = EngineCore(cfg, arch, gpu, plan)
    assert engine.scheduler.pool.capacity == plan.num_blocks - 1
