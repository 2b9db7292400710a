"""Tune from Python: build a TuneSpec, call tune(), read the winner (simulated A100, virtual time).

Run: python examples/tune_api.py   (the study goes to the cache folder; re-running resumes it)
"""

from __future__ import annotations

from vllm_slo_guard.bench.workload import WorkloadSpec
from vllm_slo_guard.export import serve_command, to_toml
from vllm_slo_guard.files import write_atomic
from vllm_slo_guard.progress import make_progress
from vllm_slo_guard.search.tuner import tune
from vllm_slo_guard.spec import TuneSpec, parse_slo


def main() -> None:
    spec = TuneSpec(
        model="Qwen/Qwen2-1.5B",
        slos=(parse_slo("ttft:p95=200ms"), parse_slo("tpot:p99=60ms")),
        workload=WorkloadSpec(num_prompts=300, request_rate=16.0, random_input_len=1024, random_output_len=128),
        objective="latency",
        budget=15,
        engine="sim",
        gpu="A100-40GB",
        seed=0,
    )
    result = tune(spec, progress=make_progress())
    if result.winner is None:
        print("no configuration met every SLO")
        return
    write_atomic("tuned.toml", to_toml(result))
    print(serve_command(spec.model, result.winner.argv))


if __name__ == "__main__":
    main()
