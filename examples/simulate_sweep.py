"""Sweep max_num_seqs on the simulated engine and print p95 TTFT and E2E (Python API example).

Run: python examples/simulate_sweep.py
"""

from vllm_slo_guard import simulate
from vllm_slo_guard.bench.workload import WorkloadSpec

workload = WorkloadSpec(num_prompts=300, request_rate=8.0, random_input_len=512, random_output_len=128)
print(f"{'max_num_seqs':>12} {'status':>7} {'p95 TTFT ms':>12} {'p95 E2E ms':>11}")
for seqs in (4, 8, 16, 64, 256):
    result = simulate(["Qwen/Qwen2-1.5B", "--max-num-seqs", str(seqs)], workload, "A100-40GB")
    m = result.metrics
    print(f"{seqs:>12} {result.status:>7} {m['p95_ttft_ms']:>12.1f} {m['p95_e2el_ms']:>11.1f}")
