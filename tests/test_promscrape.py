"""Parsing vLLM's /metrics: a real vLLM 0.32 exposition, the text format's corner cases, and the
KV-usage peak sampler against the simulated server."""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vllm_slo_guard.bench.promscrape import (
    Sample,
    ServerStats,
    kv_usage_from_text,
    parse_line,
    parse_metrics,
    sample_peak_kv,
    scrape,
)
from vllm_slo_guard.bench.run import LoadGenConfig, run_load
from vllm_slo_guard.bench.workload import WorkloadSpec
from vllm_slo_guard.engine.launcher import ServerProcess, free_port, group_members

SAMPLE = Path(__file__).parent / "data" / "vllm-cpu-logs" / "metrics_sample_after_1_request.txt"


def test_real_vllm_exposition_parses_completely() -> None:
    text = SAMPLE.read_text()
    samples = parse_metrics(text)
    data_lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert sum(len(v) for v in samples.values()) == len(data_lines)
    info = samples["vllm:cache_config_info"][0]
    assert info.value == 1.0
    assert info.labels["num_gpu_blocks"] == "1024" and info.labels["block_size"] == "128"
    assert info.labels["kv_cache_dtype_skip_layers"] == "[]"
    success = {s.labels["finished_reason"]: s.value for s in samples["vllm:request_success_total"]}
    assert success == {"stop": 0.0, "length": 1.0, "abort": 0.0, "error": 0.0, "repetition": 0.0}
    inf_bucket = [s for s in samples["vllm:iteration_tokens_total_bucket"] if s.labels["le"] == "+Inf"]
    assert inf_bucket[0].value == 8.0
    assert samples["python_info"][0].labels["version"] == "3.11.7"
    assert samples["process_virtual_memory_bytes"][0].value == 2.17479168e09


def test_server_stats_of_the_real_exposition() -> None:
    stats = ServerStats.from_text(SAMPLE.read_text())
    assert stats == ServerStats(
        kv_cache_usage=0.0,
        num_preemptions=0,
        running=0,
        waiting=0,
        kv_cache_tokens=131072,
        num_gpu_blocks=1024,
        block_size=128,
        prompt_tokens=4,
        generation_tokens=8,
        prefix_cache_hit_rate=0.0,
    )


def test_label_escapes_special_values_and_bad_lines() -> None:
    line = r'm{a="say \"hi\", ok",b="back\\slash",c="new\nline",d="{}=,"} +Inf 1700000000000'
    assert parse_line(line) == Sample(
        "m", {"a": 'say "hi", ok', "b": "back\\slash", "c": "new\nline", "d": "{}=,"}, math.inf
    )
    assert parse_line("m{} -Inf").value == -math.inf  # type: ignore[union-attr]
    assert math.isnan(parse_line("m NaN").value)  # type: ignore[union-attr]
    assert parse_line('m{ a = "1" , } 2.5e3') == Sample("m", {"a": "1"}, 2500.0)
    assert parse_line("vllm:x_total 3") == Sample("vllm:x_total", {}, 3.0)
    for bad in ("# HELP m text", "", "   ", 'm{a="unterminated} 1', "m{a=1} 1", "m", "m 1 2 3", "m one", "9m 1"):
        assert parse_line(bad) is None, bad
    text = '# TYPE m gauge\nm 1\ngarbage line here\nm{x="y"} 2\n'
    assert [s.value for s in parse_metrics(text)["m"]] == [1.0, 2.0]


def test_stats_fallbacks_and_several_engines() -> None:
    text = "\n".join(
        [
            'vllm:cache_config_info{block_size="16",num_gpu_blocks="100",engine="0"} 1.0',
            'vllm:kv_cache_usage_perc{engine="0"} 0.25',
            'vllm:kv_cache_usage_perc{engine="1"} 0.75',
            'vllm:num_requests_running{engine="0"} 3.0',
            'vllm:num_requests_running{engine="1"} 4.0',
            'vllm:prefix_cache_queries_total{engine="0"} 200.0',
            'vllm:prefix_cache_hits_total{engine="0"} 50.0',
        ]
    )
    stats = ServerStats.from_text(text)
    assert stats.kv_cache_tokens == 1600  # no kv_cache_size_tokens label: blocks x block size
    assert stats.kv_cache_usage == 0.75 and stats.running == 7
    assert stats.prefix_cache_hit_rate == 0.25
    assert stats.waiting is None and stats.generation_tokens is None
    assert ServerStats.from_text("") == ServerStats()
    assert ServerStats.from_text("vllm:prefix_cache_queries_total 0").prefix_cache_hit_rate is None
    assert kv_usage_from_text("vllm:gpu_cache_usage_perc 0.5\n") == 0.5  # the V0 engine's name
    assert parse_metrics(text, names=["vllm:kv_cache_usage_perc"]).keys() == {"vllm:kv_cache_usage_perc"}


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[ServerProcess]:
    """A simulated server with a small KV cache, always stopped, with its process group checked."""
    port = free_port()
    argv = [sys.executable, "-m", "vllm_slo_guard.sim.server", "Qwen/Qwen2-1.5B", "--sim-gpu", "H200-141GB"]
    argv += ["--num-gpu-blocks-override", "512", "--host", "127.0.0.1", "--port", str(port)]
    server = ServerProcess(argv, host="127.0.0.1", port=port, log_path=tmp_path / "sim.log")
    try:
        server.start()
        assert server.wait_ready(60).ready, server.log_text()
        yield server
    finally:
        server.stop(grace_s=5)
        assert server.pid is not None and group_members(server.pid) == []


def test_peak_kv_usage_is_sampled_during_a_run(sim: ServerProcess) -> None:
    workload = WorkloadSpec(num_prompts=24, random_input_len=500, random_output_len=60, max_concurrency=8)

    async def main() -> tuple[float | None, float]:
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_peak_kv(sim.base_url, stop, interval_s=0.02))
        result = await run_load(LoadGenConfig(sim.base_url), workload)
        assert all(r.success for r in result.records)
        stop.set()
        started = time.perf_counter()
        peak = await sampler
        return peak, time.perf_counter() - started

    peak, wind_down_s = asyncio.run(main())
    assert peak is not None and 0.2 < peak <= 1.0  # 8 x ~560 tokens in 512 x 16-token blocks
    assert wind_down_s < 0.5
    text = scrape(sim.base_url)
    assert text is not None
    stats = ServerStats.from_text(text)
    assert stats.kv_cache_usage == 0.0  # instantaneous: back to 0 once the run drained
    assert stats.num_gpu_blocks == 512 and stats.block_size is not None
    assert stats.generation_tokens == 24 * 60


def test_scrape_and_sampler_without_a_server() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert scrape(url, timeout_s=1) is None

    async def main() -> float | None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.1, stop.set)
        return await sample_peak_kv(url, stop, interval_s=0.02)

    assert asyncio.run(main()) is None
