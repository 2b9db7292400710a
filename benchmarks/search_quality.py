"""Search quality of every searcher on simulated scenarios: normalized regret against the optimum.

For each scenario the optimum comes from exhaustive evaluation of a discretized space on the
in-process simulator (the same measurement seed for every point; cached on disk by scenario). Each
searcher then tunes the scenario with budget 15 for 10 seeds (no confirmation runs: this measures the
search); the best feasible config it found is re-measured with the oracle's seed, so it and the
optimum are compared on the same noise, and

    regret = (winner − optimum) / optimum     (latency objectives; no winner counts as regret 1.0)

Also reported: launched crashes, guarded trials, seeds without a feasible winner, and wall time.
A searcher can beat the grid optimum slightly (negative regret): the grid is coarse (powers of two)
and the searchers are continuous.

Usage: python benchmarks/search_quality.py [--seeds 10] [--budget 15] [--jobs 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import math
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from vllm_slo_guard.bench.workload import WorkloadSpec
from vllm_slo_guard.modelinfo import load_model_arch
from vllm_slo_guard.repair import RepairContext, repair
from vllm_slo_guard.search.evaluators import VirtualSimEvaluator
from vllm_slo_guard.search.objective import Objective
from vllm_slo_guard.search.tuner import tune
from vllm_slo_guard.sim.catalog import resolve_gpu
from vllm_slo_guard.space import build_space
from vllm_slo_guard.spec import TuneSpec, parse_slo

SEARCHERS = ("slo-guard", "random", "grid", "tpe")
ORACLE_SEED = 12345
NO_WINNER_REGRET = 1.0


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    model: str
    gpu: str
    workload: WorkloadSpec
    slos: tuple[str, ...]
    pinned: tuple[str, ...] = ()

    def key(self) -> str:
        text = json.dumps([self.model, self.gpu, self.workload.to_dict(), self.slos, self.pinned], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


SCENARIOS = (
    # the SLO-Guard paper's setup: 5 requests of 100 tokens arriving together
    Scenario(
        "paper-qwen2-1.5b-a100", "Qwen/Qwen2-1.5B", "A100-40GB",
        WorkloadSpec(num_prompts=5, random_input_len=300, random_output_len=100), ("e2el:p95=1s",),
        ("--max-model-len", "4096"),
    ),
    # memory-tight: an 8B model on a 24 GB GPU with a long context (a large crash region)
    Scenario(
        "memory-tight-llama8b-l4", "meta-llama/Llama-3.1-8B-Instruct", "L4-24GB",
        WorkloadSpec(num_prompts=80, request_rate=1.5, random_input_len=1024, random_output_len=128),
        ("ttft:p95=2s", "tpot:p95=120ms"), ("--max-model-len", "16384"),
    ),
    # high-load chat on H100 with a TPOT SLO
    Scenario(
        "chat-llama8b-h100", "meta-llama/Llama-3.1-8B-Instruct", "H100-80GB",
        WorkloadSpec(num_prompts=300, request_rate=25, random_input_len=512, random_output_len=256,
                     random_range_ratio=0.5),
        ("ttft:p95=300ms", "tpot:p99=25ms"), ("--max-model-len", "8192"),
    ),
)  # fmt: skip

GRID = {
    "max_num_seqs": (4, 8, 16, 32, 64, 128, 256),
    "max_num_batched_tokens": (512, 1024, 2048, 4096, 8192),
    "gpu_memory_utilization": (0.8, 0.9, 0.95),
    "optimization_level": (0, 1, 2),
    "enable_chunked_prefill": (True, False),
}


def _objective(s: Scenario) -> Objective:
    return Objective("latency", tuple(parse_slo(t) for t in s.slos))


def _evaluator(s: Scenario) -> VirtualSimEvaluator:
    return VirtualSimEvaluator(s.model, s.gpu, s.workload, _objective(s))


def _value(s: Scenario, argv: list[str]) -> float:
    """The objective of ``argv`` at the oracle's seed (inf when it crashes or misses an SLO)."""
    evaluator = _evaluator(s)
    if not evaluator.guard([*s.pinned, *argv]).ok:
        return math.inf
    outcome = evaluator.evaluate([*s.pinned, *argv], seed=ORACLE_SEED)
    return outcome.objective if outcome.status == "ok" and outcome.objective is not None else math.inf


def oracle(s: Scenario, cache_dir: Path) -> dict[str, Any]:
    """Best point of the grid (cached by scenario hash)."""
    cache = cache_dir / f"oracle-{s.name}-{s.key()}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    gpu = resolve_gpu(s.gpu)
    space, _ = build_space(gpu, s.pinned)
    arch = load_model_arch(s.model)
    max_len = (
        int(s.pinned[s.pinned.index("--max-model-len") + 1])
        if "--max-model-len" in s.pinned
        else arch.max_position_embeddings
    )
    ctx = RepairContext(gpu, {"max_model_len": max_len}, max_len)
    best: dict[str, Any] = {"value": math.inf, "config": None}
    seen = set()
    feasible = 0
    for values in itertools.product(*GRID.values()):
        config = repair(dict(zip(GRID, values, strict=True)), ctx).config
        key = json.dumps(config, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        value = _value(s, space.argv(config)[len(s.pinned) :])
        feasible += math.isfinite(value)
        if value < best["value"]:
            best = {"value": value, "config": config}
    result = {"optimum": best["value"], "config": best["config"], "points": len(seen), "feasible": feasible}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(result, indent=2))
    return result


def run_one(args: tuple[Scenario, str, int, int]) -> dict[str, Any]:
    s, searcher, seed, budget = args
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        spec = TuneSpec(
            s.model, tuple(parse_slo(t) for t in s.slos), s.workload, objective="latency", budget=budget,
            engine="sim", gpu=s.gpu, pinned_args=s.pinned, seed=seed, searcher=searcher, confirm_top_k=0,
            storage=f"sqlite:///{tmp}/study.db", study_name="bench",
        )  # fmt: skip
        result = tune(spec, evaluator=_evaluator(s))
    wall = time.perf_counter() - started
    feasible = [t.outcome for t in result.trials if t.outcome.feasible and t.outcome.objective is not None]
    best = min(feasible, key=lambda o: o.objective or math.inf) if feasible else None
    winner_value = _value(s, best.argv[len(s.pinned) :]) if best else math.inf
    launched = sum(1 for t in result.trials if t.outcome.status == "crash" and t.outcome.reused_from is None)
    guarded = sum(1 for t in result.trials if t.outcome.status == "guarded")
    return {"searcher": searcher, "seed": seed, "winner_value": winner_value, "launched_crashes": launched,
            "guarded": guarded, "wall_s": wall}  # fmt: skip


def summarize(rows: list[dict[str, Any]], optimum: float) -> dict[str, Any]:
    out = {}
    for name in SEARCHERS:
        mine = [r for r in rows if r["searcher"] == name]
        regrets = [
            (r["winner_value"] - optimum) / optimum if math.isfinite(r["winner_value"]) else NO_WINNER_REGRET
            for r in mine
        ]
        out[name] = {
            "regret_mean": statistics.mean(regrets),
            "regret_median": statistics.median(regrets),
            "no_winner": sum(1 for r in mine if not math.isfinite(r["winner_value"])),
            "launched_crashes_mean": statistics.mean(r["launched_crashes"] for r in mine),
            "guarded_mean": statistics.mean(r["guarded"] for r in mine),
            "wall_s_mean": statistics.mean(r["wall_s"] for r in mine),
            "regrets": regrets,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budget", type=int, default=15)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--scenarios", default=",".join(s.name for s in SCENARIOS))
    parser.add_argument("--out", default="benchmarks/results/search_quality.json")
    parser.add_argument("--cache", default="benchmarks/results/oracle-cache")
    args = parser.parse_args()
    wanted = set(args.scenarios.split(","))
    report: dict[str, Any] = {"seeds": args.seeds, "budget": args.budget, "scenarios": {}}
    started = time.perf_counter()
    for s in SCENARIOS:
        if s.name not in wanted:
            continue
        t0 = time.perf_counter()
        best = oracle(s, Path(args.cache))
        oracle_s = time.perf_counter() - t0
        jobs = [(s, name, seed, args.budget) for name in SEARCHERS for seed in range(args.seeds)]
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            rows = list(pool.map(run_one, jobs))
        summary = summarize(rows, best["optimum"])
        report["scenarios"][s.name] = {"oracle": best, "oracle_s": oracle_s, "searchers": summary}
        print(f"\n{s.name}: optimum {best['optimum'] * 1000:.1f} ms over {best['points']} grid points "
              f"({best['feasible']} feasible), oracle {oracle_s:.0f} s")  # fmt: skip
        header = ("searcher", "mean regret", "median", "no winner", "crashes", "guarded", "wall s")
        print("  {:10} {:>12} {:>8} {:>9} {:>8} {:>8} {:>7}".format(*header))
        for name, row in summary.items():
            figures = (row["regret_mean"], row["regret_median"], row["no_winner"])
            costs = (row["launched_crashes_mean"], row["guarded_mean"], row["wall_s_mean"])
            print(
                "  {:10} {:>11.1%} {:>8.1%} {:>9} ".format(name, *figures) + "{:>8.1f} {:>8.1f} {:>7.2f}".format(*costs)
            )
    report["total_wall_s"] = time.perf_counter() - started
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {out} ({report['total_wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
