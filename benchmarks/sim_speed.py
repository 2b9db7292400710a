"""CPU cost of one in-process simulated trial (issue: simulator speed).

The reference trial is 300 requests, Qwen2-1.5B on A100-40GB, Poisson 8 req/s, 512 prompt / 128
output tokens. A multi-seed study runs thousands of such trials, so one must cost well under 0.2 s of
CPU. The baseline measured in the same run is the same trial stepped one engine step at a time
(no vectorized decode runs), which shows what the decode-run shortcut buys.

Usage: python benchmarks/sim_speed.py [--repeat 5] [--out benchmarks/results/sim_speed.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from vllm_slo_guard.bench.workload import WorkloadSpec
from vllm_slo_guard.sim import evaluator
from vllm_slo_guard.sim.engine import EngineCore

TARGET_CPU_S = 0.2
MODEL, GPU = "Qwen/Qwen2-1.5B", "A100-40GB"
WORKLOAD = WorkloadSpec(num_prompts=300, request_rate=8.0, random_input_len=512, random_output_len=128, seed=0)


def _cpu_seconds(repeat: int) -> tuple[list[float], dict]:
    times, result = [], None
    for i in range(repeat):
        start = time.process_time()
        result = evaluator.simulate([MODEL], WORKLOAD, GPU, seed=i)
        times.append(time.process_time() - start)
    assert result is not None and result.status == "ok"
    return times, {"engine_steps": result.engine_steps, "mean_e2el_ms": result.metrics["mean_e2el_ms"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/sim_speed.json")
    args = parser.parse_args()

    evaluator.simulate([MODEL], WORKLOAD, GPU)  # warm imports and caches
    fast, info = _cpu_seconds(args.repeat)
    original = EngineCore.decode_run_length
    EngineCore.decode_run_length = lambda self: 0  # type: ignore[method-assign]
    try:
        stepwise, step_info = _cpu_seconds(max(1, args.repeat // 2))
    finally:
        EngineCore.decode_run_length = original  # type: ignore[method-assign]
    report = {
        "trial": "300 requests, Qwen2-1.5B, A100-40GB, Poisson 8 req/s, 512 in / 128 out",
        "cpu_s_median": statistics.median(fast),
        "cpu_s_max": max(fast),
        "target_cpu_s": TARGET_CPU_S,
        "meets_target": max(fast) < TARGET_CPU_S,
        "baseline_stepwise_cpu_s_median": statistics.median(stepwise),
        "speedup_vs_stepwise": statistics.median(stepwise) / statistics.median(fast),
        "engine_steps": info["engine_steps"],
        "mean_e2el_ms": info["mean_e2el_ms"],
        "stepwise_mean_e2el_ms": step_info["mean_e2el_ms"],
    }
    for key, value in report.items():
        print(f"{key:32} {value:.4f}" if isinstance(value, float) else f"{key:32} {value}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
