"""The oracle of a scenario: the best configuration of a discretized space, by exhaustive simulation.

Regret needs a reference optimum. The grid is every combination of
- the batching knobs (``max_num_seqs``, ``max_num_batched_tokens``, and on CPU the KV bytes) at powers of
  two across their range, plus the range's ends and vLLM's default;
- ``gpu_memory_utilization`` at three levels (a third of the way up the range, vLLM's 0.92, the top);
- every value of every categorical knob (optimization level, chunked prefill, prefix caching, KV dtype)
  except ``block_size`` and ``max_cudagraph_capture_size``, which stay at vLLM's defaults;
after the tuner's own repair (so points that repair to the same config are simulated once). Every point
is measured on the same workload seed (``ORACLE_SEED``); a crash or an SLO miss is infeasible.

The grid's best points are then refined coordinate by coordinate at quarter-octave steps (0.01 for the
memory fraction, every block size and capture size) until no single change helps. Searchers sample the
continuous knobs between grid steps, so a found config can still beat the oracle slightly: regret can be
a little negative. Results are cached on disk by scenario hash and simulator source hash.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..engine.lifeline import die_with_parent
from ..outcome import TrialStatus
from ..search.evaluators import VirtualSimEvaluator
from ..search.problem import Problem, build_problem
from ..space import Config, Knob, config_key
from ..vllm_rules.catalog import resolve_gpu
from ..vllm_rules.startup import Device
from .scenario import Scenario

ORACLE_SEED = 12345  # the study's landscape: every grid point and every search trial replay this sample
HELDOUT_SEEDS = (1, 2, 3)  # fresh samples a winner is also judged on: does it hold beyond the landscape?
ORACLE_FORMAT = 1  # bump when the grid or the refinement changes
DEFAULT_ONLY = ("block_size", "max_cudagraph_capture_size")  # held at vLLM's default on the grid
REFINE_STARTS = 2  # grid points the refinement starts from
REFINE_PASSES = 3


@dataclass
class OracleResult:
    """The best point found, what it took, and the key it is cached under."""

    value: float | None  # the objective's value (seconds or req/s); None when nothing is feasible
    config: Config
    argv: list[str]
    unit: str
    grid_points: int
    feasible_points: int
    refined_points: int
    refinement_gain: float  # relative improvement the refinement added over the best grid point
    seconds: float
    seed: int = ORACLE_SEED
    key: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def scenario_problem(scenario: Scenario) -> Problem:
    spec = scenario.tune_spec(searcher="random", seed=0, budget=1, storage="memory:")
    return build_problem(spec, Device(resolve_gpu(scenario.gpu), count=scenario.gpu_count))


def _evaluator(scenario: Scenario, problem: Problem) -> VirtualSimEvaluator:
    return VirtualSimEvaluator(scenario.model, scenario.gpu, scenario.workload, problem.objective, scenario.gpu_count)


def measure(scenario: Scenario, argv: Sequence[str], seed: int = ORACLE_SEED) -> float | None:
    """The objective of a full ``vllm serve`` argv on the oracle's seed; None when it crashes or misses an SLO."""
    problem = scenario_problem(scenario)
    return _measure(_evaluator(scenario, problem), argv, seed)


def _measure(evaluator: VirtualSimEvaluator, argv: Sequence[str], seed: int) -> float | None:
    outcome = evaluator.evaluate(list(argv), seed)
    if outcome.feasible and outcome.objective is not None and math.isfinite(outcome.objective):
        return float(outcome.objective)
    return None


def measure_heldout(scenario: Scenario, argv: Sequence[str]) -> float | None:
    """The objective on fresh workload samples (``HELDOUT_SEEDS``); None when a run crashes or the SLOs fail.

    A latency objective averages every metric over the samples and judges the SLOs on the averages
    (a benchmark's p95 is itself noisy, so one unlucky sample should not fail a config that holds on
    average); a capacity objective averages the capacity and needs it on every sample.
    """
    problem = scenario_problem(scenario)
    evaluator = _evaluator(scenario, problem)
    outcomes = [evaluator.evaluate(list(argv), seed) for seed in HELDOUT_SEEDS]
    if any(o.status == TrialStatus.CRASH or not o.metrics for o in outcomes):
        return None
    objective = problem.objective
    if objective.kind == "capacity":
        values = [o.objective for o in outcomes if o.feasible and o.objective is not None]
        if len(values) < len(outcomes) or not all(math.isfinite(v) for v in values):
            return None
        return statistics.fmean(values)
    numeric = [
        k
        for k, v in outcomes[0].metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and all(k in o.metrics for o in outcomes)
    ]
    mean = {k: statistics.fmean(float(o.metrics[k]) for o in outcomes) for k in numeric}
    if objective.violation(mean) > 0:
        return None
    return objective.latency_value(mean)


def _better(a: float | None, b: float | None, minimize: bool) -> bool:
    if a is None:
        return False
    if b is None:
        return True
    return a < b if minimize else a > b


# --- the grid -----------------------------------------------------------------------------------------


def _powers_of_two(knob: Knob, extra: Iterable[Any], per_octave: int = 1) -> list[int]:
    assert knob.low is not None and knob.high is not None
    low, high = knob.low, knob.high
    start, stop = math.floor(math.log2(max(low, 1)) * per_octave), math.ceil(math.log2(high) * per_octave)
    values = {round(2 ** (k / per_octave)) for k in range(start, stop + 1)}
    values |= {int(low), int(high)} | {int(v) for v in extra if v is not None}
    return sorted(v for v in values if low <= v <= high)


def grid_levels(knob: Knob) -> list[Any]:
    """The values ``knob`` takes on the oracle's grid."""
    if knob.name in DEFAULT_ONLY:
        return [None]  # vLLM's default: the flag is not passed
    if knob.kind in ("bool", "categorical"):
        return list(knob.values)
    assert knob.low is not None and knob.high is not None
    if knob.kind == "float":
        third = knob.low + (knob.high - knob.low) / 3
        levels = {round(third, 2), knob.high} | ({knob.default} if knob.default is not None else set())
        return sorted(v for v in levels if knob.low <= v <= knob.high)
    return _powers_of_two(knob, [knob.default])


def refine_levels(knob: Knob) -> list[Any]:
    """The finer values the refinement tries for ``knob``."""
    if knob.kind in ("bool", "categorical"):
        return list(knob.values)
    assert knob.low is not None and knob.high is not None
    if knob.kind == "float":
        steps = round((knob.high - knob.low) / 0.01)
        return [round(knob.low + 0.01 * i, 2) for i in range(steps + 1)]
    values: list[Any] = _powers_of_two(knob, [knob.default], per_octave=4)
    return [None, *values] if knob.name in DEFAULT_ONLY else values


def _canonical(problem: Problem, config: Mapping[str, Any]) -> Config:
    """Drop unset knobs and knobs that are inactive, then repair as the tuner would."""
    out: Config = {}
    for knob in problem.space.knobs:
        value = config.get(knob.name)
        if value is not None and knob.active(out):
            out[knob.name] = value
    return problem.repaired(out)


def grid_configs(problem: Problem) -> list[Config]:
    """Every distinct repaired config of the grid."""
    knobs = problem.space.knobs
    seen: dict[str, Config] = {}
    for values in itertools.product(*(grid_levels(k) for k in knobs)):
        config = _canonical(problem, dict(zip((k.name for k in knobs), values, strict=True)))
        seen.setdefault(config_key(config), config)
    return list(seen.values())


# --- evaluation in worker processes -----------------------------------------------------------------

_WORKER: dict[str, tuple[Problem, VirtualSimEvaluator]] = {}


def _evaluate_chunk(job: tuple[Scenario, list[Config]]) -> list[float | None]:
    scenario, configs = job
    if scenario.key() not in _WORKER:
        problem = scenario_problem(scenario)
        _WORKER[scenario.key()] = (problem, _evaluator(scenario, problem))
    problem, evaluator = _WORKER[scenario.key()]
    return [_measure(evaluator, problem.argv(c), ORACLE_SEED) for c in configs]


def _evaluate_all(scenario: Scenario, configs: list[Config], jobs: int) -> list[float | None]:
    if jobs <= 1 or len(configs) < 32:
        return _evaluate_chunk((scenario, configs))
    size = max(8, len(configs) // (jobs * 8))
    chunks = [configs[i : i + size] for i in range(0, len(configs), size)]
    with ProcessPoolExecutor(max_workers=jobs, initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
        return [v for part in pool.map(_evaluate_chunk, [(scenario, c) for c in chunks]) for v in part]


# --- the oracle ----------------------------------------------------------------------------------------


def simulator_fingerprint() -> str:
    """A hash of the source the oracle's landscape is computed from: a changed model invalidates cached optima.

    The simulator, vLLM's rules it starts with, the workload and metrics it measures, and the space,
    repair and guard that decide which configs exist.
    """
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256(str(ORACLE_FORMAT).encode())
    folders = [*sorted((root / "sim").rglob("*.py")), *sorted((root / "vllm_rules").rglob("*.py"))]
    files = ("workload.py", "datasets.py", "tokenizers.py", "metrics.py", "sim_tokenizer.py")
    measured = [root / "bench" / name for name in files]
    for path in [*folders, *measured, root / "repair.py", root / "space.py", root / "guard.py"]:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def cache_path(scenario: Scenario, cache_dir: Path) -> Path:
    return cache_dir / f"oracle-{scenario.name}-{scenario.key()}-{simulator_fingerprint()}.json"


def find_optimum(scenario: Scenario, *, cache_dir: Path | None = None, jobs: int = 1) -> OracleResult:
    """The scenario's optimum (read from ``cache_dir`` when computed before)."""
    path = cache_path(scenario, cache_dir) if cache_dir is not None else None
    if path is not None and path.exists():
        try:
            data = json.loads(path.read_text())
            return OracleResult(**{k: v for k, v in data.items() if k in OracleResult.__dataclass_fields__})
        except (ValueError, TypeError):
            pass  # a damaged cache file is recomputed
    started = time.perf_counter()
    problem = scenario_problem(scenario)
    minimize = scenario.minimize
    configs = grid_configs(problem)
    values = dict(zip((config_key(c) for c in configs), _evaluate_all(scenario, configs, jobs), strict=True))
    grid_points, feasible = len(configs), sum(v is not None for v in values.values())
    sign = 1.0 if minimize else -1.0
    order = sorted(
        (c for c in configs if values[config_key(c)] is not None), key=lambda c: sign * (values[config_key(c)] or 0.0)
    )
    grid_best = values[config_key(order[0])] if order else None
    best_config, best_value = (order[0], grid_best) if order else ({}, None)
    for start in order[:REFINE_STARTS]:
        config, value = _refine(scenario, problem, start, values, jobs)
        if _better(value, best_value, minimize):
            best_config, best_value = config, value
    gain = abs(regret(best_value, grid_best, minimize=minimize, no_winner=0.0))  # refinement only improves
    result = OracleResult(
        value=best_value, config=best_config, argv=problem.argv(best_config) if order else [],
        unit="s" if minimize else "req/s", grid_points=grid_points, feasible_points=feasible,
        refined_points=len(values) - grid_points, refinement_gain=gain, seconds=time.perf_counter() - started,
        key=scenario.key(),
    )  # fmt: skip
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result.to_dict(), indent=2))
        tmp.replace(path)
    return result


def _refine(
    scenario: Scenario, problem: Problem, start: Config, values: dict[str, float | None], jobs: int
) -> tuple[Config, float | None]:
    """Coordinate descent: try every finer level of one knob at a time, move to the best, repeat."""
    minimize = scenario.minimize
    best, best_value = start, values[config_key(start)]
    for _ in range(REFINE_PASSES):
        moved = False
        for knob in problem.space.knobs:
            tried = [_canonical(problem, {**best, knob.name: level}) for level in refine_levels(knob)]
            fresh = list({config_key(c): c for c in tried if config_key(c) not in values}.values())
            for config, value in zip(fresh, _evaluate_all(scenario, fresh, jobs), strict=True):
                values[config_key(config)] = value
            for config in tried:
                if _better(values[config_key(config)], best_value, minimize):
                    best, best_value, moved = config, values[config_key(config)], True
        if not moved:
            break
    return best, best_value


def regret(value: float | None, optimum: float | None, *, minimize: bool, no_winner: float = 1.0) -> float:
    """How much worse than the optimum, as a fraction of it (``no_winner`` when nothing feasible was found)."""
    if value is None or optimum is None or optimum == 0:
        return no_winner
    return (value - optimum) / optimum if minimize else (optimum - value) / optimum
