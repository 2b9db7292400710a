"""Every searcher on every seed of one scenario, paired by seed, measured against the oracle.

Each run is a full ``vllm-tune tune`` on the in-process simulator (an in-memory study), in a worker
process. Every search trial replays the oracle's workload sample (``ORACLE_SEED``): the searchers
optimise the very landscape the oracle measured, so regret measures the search and nothing else.
With a fresh sample per run (as ``tune`` draws it), one benchmark's p95 moved by more than the
configs differ (long-context: vLLM's defaults 728–1064 ms over five samples, the oracle's config
beating them by 12% on one sample and by 4% on average; rag: the oracle's config missed the TPOT SLO
on two of five), and regret mostly measured how alike a run's sample was to the oracle's.

    regret = (winner − optimum) / optimum        (capacity: (optimum − winner) / optimum)

A run without a winner, or whose winner misses an SLO on the landscape, counts regret 1.0. Whether a
winner also holds beyond the landscape is the held-out regret: the winner and the oracle's config
measured on fresh samples (``measure_heldout``), the same formula, 1.0 when the winner misses there.
Per trial, "within 10% of the optimum" (the paper's fast regime) gives the first such trial, how many,
and the share of them after the first hit (the paper's post-hit consistency) and in the exploit phase
(post-handoff consistency). Confirmation (``confirm_top_k``) is off by default: on the landscape a
re-run repeats the trial; with it on, the top configs are re-measured on fresh, longer samples as in
``tune`` and the winner is chosen on those figures.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..engine.lifeline import die_with_parent
from ..errors import InputError, SloGuardError
from ..outcome import TrialStatus
from ..search.registry import SEARCHERS
from ..search.result import TrialRecord
from ..search.storage import MEMORY_URL
from .oracle import HELDOUT_SEEDS, ORACLE_SEED, OracleResult, measure, measure_heldout, regret
from .scenario import Scenario
from .stats import compare_searchers, summarize

WITHIN = 0.10  # "within 10% of the optimum": the fast regime
CLOSE = 0.05  # a seed "within 5%" of the optimum
TESTED = (
    "regret", "heldout_regret", "launched_crashes", "trials_within_10pct", "first_within_10pct", "post_hit_consistency",
)  # fmt: skip
SPREAD = ("best",)


@dataclass(frozen=True)
class RunJob:
    scenario: Scenario
    searcher: str
    seed: int
    budget: int
    optimum: float
    confirm_top_k: int
    heldout_optimum: float | None = None


def _init_worker(parent: int) -> None:
    """Workers leave Ctrl-C to the parent, which cancels what is queued and reports once, and end with it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent)


def _within(value: float | None, optimum: float, minimize: bool, share: float) -> bool:
    return value is not None and regret(value, optimum, minimize=minimize) <= share


def run_one(job: RunJob) -> dict[str, Any]:
    """One searcher on one seed: the tuner's result reduced to the study's per-seed figures."""
    from ..search.tuner import tune

    started = time.perf_counter()
    scenario, minimize = job.scenario, job.scenario.minimize
    spec = scenario.tune_spec(
        searcher=job.searcher, seed=job.seed, budget=job.budget, storage=MEMORY_URL, confirm_top_k=job.confirm_top_k,
        search_workload_seed=ORACLE_SEED,
    )  # fmt: skip
    result = tune(spec)
    counted = sorted((r for r in result.trials if r.counted and not r.is_confirm), key=lambda r: r.number)
    trials = [_trial(r, job.optimum, minimize) for r in counted]
    best = measure(scenario, result.winner.argv) if result.winner is not None else None
    heldout = None
    if result.winner is not None and job.heldout_optimum is not None:
        heldout = measure_heldout(scenario, result.winner.argv)
    hits = [i for i, t in enumerate(trials) if _close(t)]
    feasible = [i for i, t in enumerate(trials) if _ok(t)]
    best_so_far: list[float | None] = []
    for t in trials:
        previous = best_so_far[-1] if best_so_far else None
        current = t["regret"]
        best_so_far.append(current if previous is None or (current is not None and current < previous) else previous)
    return {
        "searcher": job.searcher,
        "seed": job.seed,
        "best": best,
        "regret": regret(best, job.optimum, minimize=minimize),
        "heldout_best": heldout,
        "heldout_regret": (
            regret(heldout, job.heldout_optimum, minimize=minimize) if job.heldout_optimum is not None else None
        ),
        "winner_missed_slo": result.winner is not None and best is None,
        "winner_config": result.winner.engine_args if result.winner is not None else None,
        "winner_argv": result.winner.argv if result.winner is not None else None,
        "first_within_10pct": hits[0] + 1 if hits else None,
        "trials_within_10pct": len(hits),
        "post_hit_consistency": _share(trials[hits[0] + 1 :] if hits else [], _close),
        "post_handoff_consistency": _share([t for t in trials if t["phase"] == "exploit"], _close),
        "feasible_trials": len(feasible),  # the paper's "fast" trials: under every SLO
        "first_feasible": feasible[0] + 1 if feasible else None,
        "post_feasible_consistency": _share(trials[feasible[0] + 1 :] if feasible else [], _ok),
        "handoff_trial": next((i + 1 for i, t in enumerate(trials) if t["phase"] == "exploit"), None),
        "launched_crashes": sum(1 for r in result.trials if r.outcome.status == TrialStatus.CRASH and r.counted),
        "guarded": result.counts.guarded,
        "sim_cost_s": result.total_cost_s,
        "wall_s": time.perf_counter() - started,
        "best_so_far_regret": best_so_far,
        "trials": trials,
    }


def _trial(record: TrialRecord, optimum: float, minimize: bool) -> dict[str, Any]:
    outcome = record.outcome
    value = outcome.objective if outcome.feasible else None
    return {
        "number": record.number,
        "phase": outcome.phase,
        "status": outcome.status,
        "value": value,
        "regret": regret(value, optimum, minimize=minimize) if value is not None else None,
        "within_10pct": _within(value, optimum, minimize, WITHIN),
    }


def _close(trial: dict[str, Any]) -> bool:
    return bool(trial["within_10pct"])


def _ok(trial: dict[str, Any]) -> bool:
    return bool(trial["status"] == "ok")


def _share(trials: Sequence[dict[str, Any]], hit: Callable[[dict[str, Any]], bool]) -> float | None:
    """The share of ``trials`` that ``hit`` (None for no trials)."""
    return sum(hit(t) for t in trials) / len(trials) if trials else None


def worker_count(jobs: int | None) -> int:
    """``jobs``, or one worker per CPU."""
    return max(1, jobs if jobs else (os.cpu_count() or 1))


def run_study(
    scenario: Scenario,
    oracle: OracleResult,
    *,
    searchers: Sequence[str],
    seeds: int,
    budget: int,
    jobs: int | None = None,
    confirm_top_k: int = 0,
    heldout_optimum: float | None = None,
    on_run: Callable[[dict[str, Any], int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Every (searcher, seed) run, in searcher-then-seed order; ``on_run(run, done, total)`` as they finish.
    With ``heldout_optimum`` (the oracle's config on fresh samples, ``measure_heldout``) the runs also
    carry their held-out regret."""
    if oracle.value is None:
        raise SloGuardError(
            f"scenario {scenario.name}: no configuration on the oracle's grid meets every SLO; loosen the SLOs"
        )
    unknown = [s for s in searchers if s not in SEARCHERS]
    if unknown:
        raise InputError(f"unknown searcher {unknown[0]!r}; known: {', '.join(SEARCHERS)}")
    work = [
        RunJob(scenario, s, seed, budget, oracle.value, confirm_top_k, heldout_optimum)
        for seed in range(seeds)
        for s in searchers
    ]
    runs: list[dict[str, Any]] = []
    workers = worker_count(jobs)
    if workers == 1:
        for job in work:
            runs.append(run_one(job))
            if on_run:
                on_run(runs[-1], len(runs), len(work))
    else:
        pool = ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(os.getpid(),))
        try:
            for run in pool.map(run_one, work):
                runs.append(run)
                if on_run:
                    on_run(run, len(runs), len(work))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    order = {name: i for i, name in enumerate(searchers)}
    return sorted(runs, key=lambda r: (order[r["searcher"]], r["seed"]))


def _metric(run: dict[str, Any], name: str, budget: int) -> float:
    """A run's value of a tested metric; "never within 10%" counts as budget + 1, missing as nan."""
    value = run.get(name)  # reports from before a metric existed lack it
    if name == "first_within_10pct" and value is None:
        return float(budget + 1)
    return math.nan if value is None else float(value)


def summarize_runs(runs: Sequence[dict[str, Any]], searchers: Sequence[str], budget: int) -> dict[str, Any]:
    """Per searcher: the study's figures over seeds."""
    out: dict[str, Any] = {}
    for name in searchers:
        mine = [r for r in runs if r["searcher"] == name]
        regrets = summarize([r["regret"] for r in mine])
        heldout = summarize([_metric(r, "heldout_regret", budget) for r in mine])
        best = summarize([r["best"] if r["best"] is not None else math.nan for r in mine])
        first = [r["first_within_10pct"] for r in mine]
        out[name] = {
            "seeds": len(mine),
            "regret_mean": regrets["mean"],
            "regret_median": regrets["median"],
            "regret_std": regrets["std"],
            "within_5pct_share": _mean([r["regret"] <= CLOSE for r in mine]),
            "heldout_regret_mean": heldout["mean"],
            "heldout_regret_median": heldout["median"],
            "no_winner": sum(1 for r in mine if r["best"] is None),
            "best_mean": best["mean"],
            "best_median": best["median"],
            "best_std": best["std"],
            "first_within_10pct_median": summarize([_metric(r, "first_within_10pct", budget) for r in mine])["median"],
            "reached_10pct_share": _mean([f is not None for f in first]),
            "trials_within_10pct_mean": _mean([r["trials_within_10pct"] for r in mine]),
            "post_hit_consistency_mean": _mean([r["post_hit_consistency"] for r in mine]),
            "post_handoff_consistency_mean": _mean([r["post_handoff_consistency"] for r in mine]),
            "launched_crashes_mean": _mean([r["launched_crashes"] for r in mine]),
            "guarded_mean": _mean([r["guarded"] for r in mine]),
            "sim_cost_s_mean": _mean([r["sim_cost_s"] for r in mine]),
            "wall_s_mean": _mean([r["wall_s"] for r in mine]),
        }
    return out


def _mean(values: Sequence[Any]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return sum(present) / len(present) if present else None


def statistical_tests(
    runs: Sequence[dict[str, Any]], searchers: Sequence[str], candidate: str, budget: int
) -> list[dict[str, Any]]:
    """The candidate against each baseline on every tested metric (see ``stats``), as JSON-ready dicts."""
    if candidate not in searchers or len(searchers) < 2:
        return []
    per_seed = {
        name: {
            metric: [_metric(r, metric, budget) for r in runs if r["searcher"] == name] for metric in TESTED + SPREAD
        }
        for name in searchers
    }
    return [t.to_dict() for t in compare_searchers(per_seed, candidate, TESTED, spread_metrics=SPREAD)]


def compare(
    scenario: Scenario,
    oracle: OracleResult,
    *,
    searchers: Sequence[str],
    seeds: int,
    budget: int,
    candidate: str = "slo-guard",
    jobs: int | None = None,
    confirm_top_k: int = 0,
    on_run: Callable[[dict[str, Any], int, int], None] | None = None,
) -> dict[str, Any]:
    """The whole study of one scenario as one JSON-ready report."""
    started = time.perf_counter()
    heldout_optimum = measure_heldout(scenario, oracle.argv) if oracle.value is not None else None
    runs = run_study(
        scenario, oracle, searchers=searchers, seeds=seeds, budget=budget, jobs=jobs, confirm_top_k=confirm_top_k,
        heldout_optimum=heldout_optimum, on_run=on_run,
    )  # fmt: skip
    return {
        "scenario": scenario.to_dict(),
        "optimum": {**oracle.to_dict(), "heldout_value": heldout_optimum},
        "settings": {
            "searchers": list(searchers),
            "seeds": seeds,
            "budget": budget,
            "candidate": candidate,
            "confirm_top_k": confirm_top_k,
            "oracle_seed": ORACLE_SEED,
            "heldout_seeds": list(HELDOUT_SEEDS),
            "jobs": worker_count(jobs),
            "python": sys.version.split()[0],
        },
        "searchers": summarize_runs(runs, searchers, budget),
        "tests": statistical_tests(runs, searchers, candidate, budget),
        "wall_s": time.perf_counter() - started,
        "runs": runs,
    }


def _strict(value: Any) -> Any:
    """Strict JSON has no nan or inf: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def report_json(report: dict[str, Any]) -> str:
    return json.dumps(_strict(report), indent=1)
