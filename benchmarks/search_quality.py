"""Search quality of every searcher on three simulated scenarios: normalized regret against the optimum.

A quick version of the multi-seed study (`vllm-tune compare`, `benchmarks/run_study.sh`) with the same
parts: the scenario files of `benchmarks/scenarios/`, the oracle (exhaustive simulation of a discretized
space, cached), and one run per searcher and seed. As in the study, every search trial replays the
oracle's workload sample and the runs skip confirmation (this measures the search alone); each run's
best config is re-measured on the oracle's seed and

    regret = (winner − optimum) / optimum     (no winner counts as regret 1.0)

Also printed: launched crashes, guarded trials, seeds without a winner, and wall time per run.

Usage: python benchmarks/search_quality.py [--seeds 10] [--budget 15] [--jobs 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from vllm_slo_guard.paths import cache_dir
from vllm_slo_guard.search.registry import SEARCHER_NAMES
from vllm_slo_guard.study.compare import run_study, summarize_runs
from vllm_slo_guard.study.oracle import find_optimum
from vllm_slo_guard.study.scenario import load_scenario

SCENARIOS = ("paper-qwen2-1.5b-a100", "memory-tight-llama8b-l4", "chat-llama8b-h100")
SEARCHERS = SEARCHER_NAMES
HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budget", type=int, default=15)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--out", default="benchmarks/results/search_quality.json")
    args = parser.parse_args()
    report: dict[str, Any] = {"seeds": args.seeds, "budget": args.budget, "scenarios": {}}
    started = time.perf_counter()
    for name in args.scenarios.split(","):
        scenario = load_scenario(HERE / "scenarios" / f"{name}.toml")
        t0 = time.perf_counter()
        oracle = find_optimum(scenario, cache_dir=cache_dir() / "oracle", jobs=args.jobs)
        oracle_s = time.perf_counter() - t0
        runs = run_study(
            scenario, oracle, searchers=SEARCHERS, seeds=args.seeds, budget=args.budget, jobs=args.jobs,
            confirm_top_k=0,
        )  # fmt: skip
        summary = summarize_runs(runs, SEARCHERS, args.budget)
        report["scenarios"][name] = {"oracle": oracle.to_dict(), "oracle_s": oracle_s, "searchers": summary}
        print(f"\n{name}: optimum {oracle.value * 1000:.1f} ms over {oracle.grid_points} grid points "
              f"({oracle.feasible_points} feasible), oracle {oracle_s:.0f} s")  # fmt: skip
        header = ("searcher", "mean regret", "median", "no winner", "crashes", "guarded", "wall s")
        print("  {:10} {:>12} {:>8} {:>9} {:>8} {:>8} {:>7}".format(*header))
        for searcher, row in summary.items():
            print(
                f"  {searcher:10} {row['regret_mean']:>11.1%} {row['regret_median']:>8.1%} {row['no_winner']:>9} "
                f"{row['launched_crashes_mean']:>8.1f} {row['guarded_mean']:>8.1f} {row['wall_s_mean']:>7.2f}"
            )
    report["total_wall_s"] = time.perf_counter() - started
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {out} ({report['total_wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
