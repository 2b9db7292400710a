"""Searcher contract (every searcher) and quality checks (SLO-Guard vs the baselines) on a synthetic problem.

The test plays the tuner: ask → repair → evaluate a small deterministic latency model over the real
default A100 space (with a crash region, a guarded region and an SLO-infeasible region) → tell. A
repaired config seen before is not evaluated again: its outcome is told back with ``reused_from``.
"""

from __future__ import annotations

import dataclasses
import math
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
import pytest

from vllm_slo_guard.errors import InputError
from vllm_slo_guard.outcome import CRASH_VIOLATION, MAX_SLO_VIOLATION, Outcome
from vllm_slo_guard.repair import RepairContext, repair
from vllm_slo_guard.search import slo_guard as slo_guard_module
from vllm_slo_guard.search.base import SearchContext, Searcher
from vllm_slo_guard.search.baselines import GridSearcher
from vllm_slo_guard.search.optuna_bridge import replay_params, replay_study, space_distributions, tpe_sampler
from vllm_slo_guard.search.registry import SEARCHERS, make_searcher
from vllm_slo_guard.search.slo_guard import SloGuardSearcher, handoff_bounds
from vllm_slo_guard.search.tba import TbaSearcher, budget_hint
from vllm_slo_guard.space import Config, Space, build_space, config_key, vllm_defaults
from vllm_slo_guard.spec import parse_slo
from vllm_slo_guard.vllm_rules.catalog import resolve_gpu

GPU = resolve_gpu("A100-40GB")
SPACE, _ = build_space(GPU)
REPAIR = RepairContext(gpu=GPU, pinned={}, max_model_len=4096)
SLO_S = 0.08
NAMES = sorted(SEARCHERS)
Problem = Callable[[Config], Outcome]


def synthetic(config: Config, slo_s: float = SLO_S) -> Outcome:
    """Latency (s) with an optimum near 64 seqs × 2048 tokens at -O2; crashes at high memory with
    32-token blocks and at -O1 with large graph captures; guarded when many seqs meet little memory."""
    seqs, tokens = config["max_num_seqs"], config["max_num_batched_tokens"]
    gmu, block, level = config["gpu_memory_utilization"], config["block_size"], config["optimization_level"]
    capture = config.get("max_cudagraph_capture_size")
    if gmu > 0.9 and block == 32:
        return Outcome("crash", dict(config), category="oom", violation=math.inf)
    if level == 1 and capture is not None and capture > 256:
        return Outcome("crash", dict(config), category="engine_error", violation=math.inf)
    if seqs >= 128 and gmu < 0.8:
        return Outcome("guarded", dict(config), category="oom", violation=math.inf)
    latency = 0.05 * (1 + (math.log2(seqs) - 6) ** 2 / 8 + (math.log2(tokens) - 11) ** 2 / 6)
    latency *= {0: 1.6, 1: 1.15, 2: 1.0}[level]
    latency *= 0.9 if config["enable_prefix_caching"] else 1.0
    latency *= 1.0 if config["enable_chunked_prefill"] else 1.1
    latency *= 1 + 0.5 * (0.97 - gmu)
    if capture is not None and capture < seqs:
        latency *= 1.1
    violation = latency / slo_s - 1
    return Outcome("ok" if violation <= 0 else "slo_violation", dict(config), objective=latency, violation=violation)


def tight(config: Config) -> Outcome:
    """The same landscape with an SLO nothing meets (best latency 0.045 s): feasibility phase only."""
    return synthetic(config, slo_s=0.03)


def all_fail(config: Config) -> Outcome:
    status = "crash" if sum(map(ord, config_key(config))) % 2 else "guarded"
    return Outcome(status, dict(config), category="oom", violation=math.inf)


@dataclass
class Played:
    config: Config  # as proposed
    phase: str
    outcome: Outcome  # as told (repaired config)


def canonical(config: Config) -> Config:
    return repair(config, REPAIR).config


def context(seed: int, budget: int, space: Space = SPACE, *, repairs: bool = True) -> SearchContext:
    """What the tuner passes: the space, seed, budget and its repair (so searchers can dedup exactly)."""
    return SearchContext(space=space, seed=seed, budget=budget, canonical=canonical if repairs else None)


def play(searcher: Searcher, budget: int, problem: Problem = synthetic) -> list[Played]:
    """The tuner's loop in miniature: ask, repair, reuse a repeated repaired config, tell."""
    first: dict[str, tuple[int, Outcome]] = {}
    played = []
    for n in range(budget):
        config, phase = searcher.ask(n)
        repaired = repair(config, REPAIR).config
        key = config_key(repaired)
        if key in first:
            number, original = first[key]
            outcome = dataclasses.replace(original, reused_from=number, phase=phase, config=dict(repaired))
        else:
            outcome = problem(repaired)
            outcome.phase = phase
            first[key] = (n, outcome)
        searcher.tell(n, outcome)
        played.append(Played(config, phase, outcome))
    return played


def run(name: str, seed: int, budget: int, problem: Problem = synthetic) -> list[Played]:
    return play(make_searcher(name, context(seed, budget)), budget, problem)


def best_objective(played: list[Played]) -> float:
    return min((p.outcome.objective for p in played if p.outcome.feasible and p.outcome.objective), default=math.inf)


def assert_in_space(space: Space, config: Config) -> None:
    for knob in space.knobs:
        if knob.name in config:
            assert knob.active(config), (knob.name, config)
        else:  # an active knob may be left to vLLM only where vLLM derives its default
            assert not knob.active(config) or knob.default is None, (knob.name, config)
        if knob.name not in config:
            continue
        value = config[knob.name]
        if knob.kind in ("bool", "categorical"):
            assert value in knob.values and type(value) is type(knob.values[0]), (knob.name, value)
        else:
            assert knob.low is not None and knob.high is not None
            assert knob.low <= value <= knob.high, (knob.name, value)
            assert not isinstance(value, bool)
            assert isinstance(value, int) if knob.kind == "int" else isinstance(value, float), (knob.name, value)
    assert set(config) <= set(space.names)


# --- the contract, for every searcher ----------------------------------------------------------------


class TestSearcherContract:
    @pytest.fixture(params=NAMES)
    def name(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)

    def test_has_the_registered_name(self, name: str) -> None:
        assert make_searcher(name, context(0, 10)).name == name

    def test_asks_stay_in_the_space(self, name: str) -> None:
        for played in run(name, seed=1, budget=25):
            assert_in_space(SPACE, played.config)
            assert played.phase

    def test_asks_stay_in_a_narrowed_space(self, name: str) -> None:
        space, _ = build_space(GPU, tune=["max_num_seqs=16:64", "block_size=16"], fix=["enable_prefix_caching=true"])
        searcher = make_searcher(name, context(2, 15, space))
        for n in range(15):
            config, _ = searcher.ask(n)
            assert_in_space(space, config)
            searcher.tell(n, synthetic({**config, "enable_prefix_caching": True, "gpu_memory_utilization": 0.9}))

    def test_same_seed_same_sequence(self, name: str) -> None:
        a = [(p.config, p.phase) for p in run(name, seed=7, budget=20)]
        b = [(p.config, p.phase) for p in run(name, seed=7, budget=20)]
        assert a == b

    def test_different_seed_differs(self, name: str) -> None:
        a = [p.config for p in run(name, seed=7, budget=20)]
        b = [p.config for p in run(name, seed=8, budget=20)]
        assert a != b

    def test_crash_and_guarded_outcomes_are_accepted(self, name: str) -> None:
        played = run(name, seed=3, budget=15, problem=all_fail)
        assert {p.outcome.status for p in played} == {"crash", "guarded"}
        for p in played:
            assert_in_space(SPACE, p.config)

    def test_resume_proposes_what_the_uninterrupted_run_would(self, name: str) -> None:
        budget = 20
        played = run(name, seed=11, budget=budget)
        points = {1, 3, 5, 8, 12, 19}
        if name == "slo-guard":
            first_exploit = next(i for i, p in enumerate(played) if p.phase == "exploit")
            points |= {first_exploit - 1, first_exploit, first_exploit + 1}
        for k in sorted(points):
            fresh = make_searcher(name, context(11, budget))
            for n in range(k):
                fresh.tell(n, played[n].outcome)
            assert fresh.ask(k) == (played[k].config, played[k].phase), k


def test_tba_resumes_exactly() -> None:
    played = play(TbaSearcher(context(4, 20)), 20)
    for k in (1, 2, 3, 4, 9, 15):
        fresh = TbaSearcher(context(4, 20))
        for n in range(k):
            fresh.tell(n, played[n].outcome)
        assert fresh.ask(k) == (played[k].config, played[k].phase), k


@pytest.mark.parametrize("factory", [SloGuardSearcher, TbaSearcher], ids=["slo-guard", "tba"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_no_repeated_repaired_configs(factory: Callable[[SearchContext], Searcher], seed: int) -> None:
    played = play(factory(context(seed, 30)), 30)
    assert [p for p in played if p.outcome.reused_from is not None] == []


@pytest.mark.parametrize("factory", [SloGuardSearcher, TbaSearcher], ids=["slo-guard", "tba"])
def test_without_the_repair_hook_no_told_config_is_proposed_again(factory: Callable[[SearchContext], Searcher]) -> None:
    for seed in range(3):
        played = play(factory(context(seed, 30, repairs=False)), 30)
        told: set[str] = set()
        for p in played:
            assert config_key(p.config) not in told
            told.add(config_key(p.outcome.config))


def test_unknown_searcher_lists_the_names() -> None:
    with pytest.raises(InputError, match="slo-guard, random, grid, tpe"):
        make_searcher("bayes", context(0, 10))


# --- pieces --------------------------------------------------------------------------------------------


def test_grid_is_powers_of_two_at_defaults_thinned_to_the_budget() -> None:
    grid = GridSearcher(context(0, 12))
    assert len(grid.points) == 12
    for point in grid.points:
        assert point["max_num_seqs"] in (8, 16, 32, 64, 128, 256)
        assert point["max_num_batched_tokens"] in (512, 1024, 2048, 4096, 8192)
        assert point["gpu_memory_utilization"] == 0.92 and point["optimization_level"] == 2
        assert point["block_size"] == 16 and point["enable_chunked_prefill"] and point["enable_prefix_caching"]
        assert "max_cudagraph_capture_size" not in point  # left to vLLM, which derives it from max_num_seqs
    seqs = {p["max_num_seqs"] for p in grid.points}
    assert len(seqs) == 6  # thinned evenly, not the first 12 cells
    assert len(GridSearcher(context(0, 100)).points) == 30


def test_slo_guard_starts_from_vllms_defaults() -> None:
    searcher = make_searcher("slo-guard", context(3, 15))
    config, phase = searcher.ask(0)
    assert phase == "explore"
    assert config == vllm_defaults(context(3, 15).space)
    assert config["max_num_seqs"] == 256 and config["gpu_memory_utilization"] == 0.92


def test_replay_clips_repaired_values_into_range() -> None:
    repaired = {"max_num_batched_tokens": 32768, "block_size": 48, "gpu_memory_utilization": 0.5}
    params, dists = replay_params(repaired, space_distributions(SPACE))
    assert params == {"max_num_batched_tokens": 8192, "gpu_memory_utilization": 0.7}
    assert set(dists) == set(params)


def test_replay_gives_failures_a_finite_value_worse_than_any_measured() -> None:
    history = [
        (0, Outcome("ok", {"max_num_seqs": 8}, objective=0.05)),
        (1, Outcome("slo_violation", {"max_num_seqs": 9}, objective=0.2, violation=1.5)),
        (2, Outcome("crash", {"max_num_seqs": 10}, violation=math.inf)),
    ]
    study = replay_study(context(0, 10), history, tpe_sampler(0, 0))
    trials = study.get_trials()
    assert [t.value for t in trials] == [0.05, 0.2, 0.4]
    assert [t.constraints["slo"] for t in trials] == [0.0, 1.5, CRASH_VIOLATION]


def test_tba_anneals_on_the_normalized_violation() -> None:
    tba = TbaSearcher(context(0, 20), n_initial_random=1)
    base = {"max_num_seqs": 8}
    tba.tell(0, Outcome("slo_violation", base, objective=0.2, violation=2.0))
    assert tba.current is not None and tba.current.violation == 2.0
    tba.tell(1, Outcome("slo_violation", {"max_num_seqs": 9}, objective=0.15, violation=1.0))
    assert tba.current.violation == 1.0 and tba.temperature == pytest.approx(0.92)
    tba.tell(2, Outcome("crash", {"max_num_seqs": 10}, violation=math.inf))
    assert tba.current.violation == 1.0  # a crash is never the walk's position
    tba.tell(3, Outcome("ok", {"max_num_seqs": 11}, objective=0.07, violation=-0.1))
    assert tba.found_feasible and tba.current.objective == 0.07 and tba.temperature == pytest.approx(0.7)
    tba.tell(4, Outcome("slo_violation", {"max_num_seqs": 12}, objective=0.01, violation=0.5))
    assert tba.current.objective == 0.07  # after the first feasible point, infeasible ones only cool/reheat


def test_tba_repeats_an_improving_numeric_move_until_it_stops_helping() -> None:
    """Compass search in the walk: repeat what helped, reflect what hurt, stop when a repeat does not help."""
    tba = TbaSearcher(context(0, 20), n_initial_random=1)
    base = canonical({**vllm_defaults(SPACE), "max_num_batched_tokens": 4096})
    tba.tell(0, Outcome("slo_violation", base, objective=0.2, violation=1.0))
    smaller = {**base, "max_num_batched_tokens": 2048}
    tba.tell(1, Outcome("slo_violation", smaller, objective=0.15, violation=0.5))  # one knob, less violation
    repeat = tba.neighbour_unseen(smaller, 2, random.Random(0))
    assert repeat == {**smaller, "max_num_batched_tokens": 1024}  # the same factor again, nothing else
    other = tba.neighbour_unseen(base, 2, random.Random(0))
    assert other != {**base, "max_num_batched_tokens": 2048}  # only the improved point is the anchor
    tba.tell(2, Outcome("slo_violation", repeat, objective=0.15, violation=0.7))  # the repeat did not help
    assert tba.pattern is None
    resumed = TbaSearcher(context(0, 20), n_initial_random=1)
    resumed.tell(0, tba.points[0])
    resumed.tell(1, tba.points[1])
    assert resumed.pattern is not None and resumed.pattern.step == pytest.approx(0.5)  # rebuilt from outcomes alone
    at_end = {**smaller, "max_num_batched_tokens": int(SPACE.knob("max_num_batched_tokens").low)}
    resumed.tell(2, Outcome("slo_violation", at_end, objective=0.1, violation=0.2))
    assert resumed.pattern is not None and resumed.pattern.apply(SPACE, at_end) is None  # at the range end: no repeat
    larger = {**smaller, "max_num_seqs": 2 * smaller["max_num_seqs"]}
    tba.tell(3, Outcome("slo_violation", larger, objective=0.15, violation=0.9))  # worse than its parent
    reflected = tba.neighbour_unseen(smaller, 4, random.Random(0))
    assert reflected == {**smaller, "max_num_seqs": smaller["max_num_seqs"] // 2}  # the other way, once


def test_a_repeat_that_helps_doubles_the_step_and_an_overshoot_is_halved_once() -> None:
    tba = TbaSearcher(context(0, 20), n_initial_random=1)
    base = canonical({**vllm_defaults(SPACE), "max_num_batched_tokens": 8192})
    budgets = {}
    for n, (tokens, violation) in enumerate([(8192, 1.0), (4096, 0.5), (2048, 0.3)]):
        budgets[tokens] = {**base, "max_num_batched_tokens": tokens}
        tba.tell(n, Outcome("slo_violation", budgets[tokens], objective=0.2, violation=violation))
    overshoot = tba.neighbour_unseen(budgets[2048], 3, random.Random(0))
    assert overshoot == {**base, "max_num_batched_tokens": 512}  # 4096 → 2048 helped again: a 4× step
    tba.tell(3, Outcome("slo_violation", overshoot, objective=0.2, violation=0.6))
    halved = tba.neighbour_unseen(budgets[2048], 4, random.Random(0))
    assert halved == {**base, "max_num_batched_tokens": 1024}
    tba.tell(4, Outcome("slo_violation", halved, objective=0.2, violation=0.4))
    assert tba.pattern is None  # a plain repeat that did not help ends the pattern


def test_the_first_probe_from_an_slo_miss_moves_the_token_budget_the_missed_metrics_way() -> None:
    slos = (parse_slo("ttft:p95=500ms"), parse_slo("tpot:p99=30ms"))
    base = canonical({**vllm_defaults(SPACE), "max_num_batched_tokens": 4096})
    slow_decode = {"p95_ttft_ms": 200.0, "p99_tpot_ms": 45.0}  # TPOT missed by 50%, TTFT met
    tba = TbaSearcher(dataclasses.replace(context(0, 20), slos=slos), n_initial_random=1)
    tba.tell(0, Outcome("slo_violation", base, objective=0.2, violation=0.5, metrics=slow_decode))
    assert tba.neighbour_unseen(base, 1, random.Random(0)) == {**base, "max_num_batched_tokens": 2048}
    slow_start = {"p95_ttft_ms": 900.0, "p99_tpot_ms": 20.0}  # TTFT missed: a larger budget
    tba = TbaSearcher(dataclasses.replace(context(0, 20), slos=slos), n_initial_random=1)
    tba.tell(0, Outcome("slo_violation", base, objective=0.9, violation=0.8, metrics=slow_start))
    assert tba.neighbour_unseen(base, 1, random.Random(0)) == {**base, "max_num_batched_tokens": 8192}
    met = {"p95_ttft_ms": 200.0, "p99_tpot_ms": 20.0}
    feasible = Outcome("ok", base, 0.2, -0.3, metrics=met)
    # a met point: a TPOT objective wants a smaller budget; a TTFT objective has no safe direction
    assert budget_hint(dataclasses.replace(context(0, 20), slos=slos[::-1]), feasible) == 0.5
    assert budget_hint(dataclasses.replace(context(0, 20), slos=slos), feasible) is None
    assert budget_hint(context(0, 20), Outcome("slo_violation", base, 0.2, 0.5, metrics=slow_decode)) is None  # no SLOs


def test_tba_reheats_after_patience_and_never_cools_by_reheating() -> None:
    tba = TbaSearcher(context(0, 20), n_initial_random=1)
    tba.tell(0, Outcome("ok", {"max_num_seqs": 8}, objective=0.05, violation=-0.5))
    temperatures = []
    for n in range(1, 9):
        tba.tell(n, Outcome("crash", {"max_num_seqs": 8 + n}, violation=math.inf))
        temperatures.append(tba.temperature)
    assert temperatures[:3] == [pytest.approx(0.7)] * 3
    assert temperatures[3] == pytest.approx(0.8)  # min(2.5·0.7, 0.8)
    assert temperatures[7] == pytest.approx(0.8)  # reheating at 0.8 leaves it at 0.8, never lower


def test_crash_memory_steers_structural_moves_away() -> None:
    tba = TbaSearcher(context(0, 40), n_initial_random=1)
    start = {**dict(SPACE.sample(random.Random(1))), "block_size": 16}
    for n in range(6):
        crashed = {**start, "block_size": 32, "max_num_seqs": 100 + n}
        tba.tell(n, Outcome("crash", crashed, category="oom", violation=math.inf))
    assert tba.crashes.risk(SPACE.knob("block_size"), 32) == pytest.approx(0.75)
    fresh = TbaSearcher(context(0, 40), n_initial_random=1)
    for searcher in (tba, fresh):  # block_size's turn comes next
        searcher.visited = {k.name for k in SPACE.knobs if k.name != "block_size"}
    to_32 = sum(tba.neighbour(start, n, random.Random(n))["block_size"] == 32 for n in range(400))
    fresh_to_32 = sum(fresh.neighbour(start, n, random.Random(n))["block_size"] == 32 for n in range(400))
    assert fresh_to_32 == 400  # no crash seen: the turn is taken
    assert to_32 < 0.5 * fresh_to_32  # a move into the crash-prone value passes its turn with that risk


def test_proposals_steer_away_from_configs_the_guard_predicts_to_fail() -> None:
    risky = dataclasses.replace(context(0, 40), startup_risk=lambda config: config["block_size"] == 32)
    tba = TbaSearcher(risky, n_initial_random=1)
    plain = TbaSearcher(context(0, 40), n_initial_random=1)
    start = {**dict(SPACE.sample(random.Random(3))), "block_size": 16}
    for searcher in (tba, plain):  # block_size's turn comes next
        searcher.visited = {k.name for k in SPACE.knobs if k.name != "block_size"}
    draws = [tba.random_unseen(random.Random(i)) for i in range(200)]
    moves = [tba.neighbour_unseen(start, n, random.Random(n)) for n in range(200)]
    plain_moves = [plain.neighbour_unseen(start, n, random.Random(n)) for n in range(200)]
    assert not any(d["block_size"] == 32 for d in draws + moves)
    assert sum(m["block_size"] == 32 for m in plain_moves) > 10  # without the guard, block 32 gets its turns


def test_knob_rotation_moves_every_knob_once_per_cycle() -> None:
    tba = TbaSearcher(context(0, 40), n_initial_random=1)
    start = dict(SPACE.sample(random.Random(2)))
    tba.tell(0, Outcome("ok", start, objective=1.0, violation=-0.5))
    knobs = [k for k in SPACE.knobs if k.active(start) and (k.kind in ("int", "float") or len(k.values) > 1)]
    n = 1
    for cycle in range(3):
        moved: list[str] = []
        while tba.cycle == cycle and n < 100:
            move = tba.neighbour(start, n, random.Random(n))
            moved += [k.name for k in knobs if k.name in move and move[k.name] != start.get(k.name)]
            tba.tell(n, Outcome("slo_violation", move, objective=2.0, violation=5.0))  # the walk stays at start
            n += 1
        # each knob once per cycle (turning CUDA graphs off drops the capture size, which keeps its turn)
        assert sorted(moved) == sorted(k.name for k in knobs), cycle
    first = TbaSearcher(context(0, 40), n_initial_random=1)
    first.tell(0, Outcome("ok", start, objective=1.0, violation=-0.5))
    first_move = first.neighbour(start, 1, random.Random(1))
    # the big levers first (an A100 has no fp8 KV cache, so the batch size comes first)
    assert [k for k in start if first_move[k] != start[k]] == ["max_num_seqs"]


# --- quality (these can fail: they are claims about the algorithm) ----------------------------------


SEEDS = range(10)


def test_slo_guard_beats_random_and_crashes_less() -> None:
    runs = {name: [run(name, seed, 20) for seed in SEEDS] for name in ("slo-guard", "random")}
    best = {name: statistics.median(best_objective(r) for r in rs) for name, rs in runs.items()}
    crashes = {
        name: statistics.mean(sum(p.outcome.status == "crash" for p in r) for r in rs) for name, rs in runs.items()
    }
    assert best["slo-guard"] <= best["random"]
    assert crashes["slo-guard"] < crashes["random"]


def test_tba_moves_toward_lower_violation_before_anything_is_feasible() -> None:
    beat_starts = downhill = 0
    for seed in SEEDS:
        tba = TbaSearcher(context(seed, 20))
        played = play(tba, 20, tight)
        assert not tba.found_feasible
        starts = min(p.outcome.constraint for p in played[:3])
        walk = min(p.outcome.constraint for p in played[3:])
        beat_starts += walk < starts
        measured = [p.outcome.constraint for p in played if not p.outcome.failed]
        downhill += statistics.mean(measured[-5:]) < statistics.mean(measured[:5])
    assert beat_starts >= 8
    assert downhill >= 8


@pytest.mark.parametrize("budget", [5, 10, 20, 30, 50])
def test_handoff_happens_between_min_and_max_explore(budget: int) -> None:
    low, high, _ = handoff_bounds(budget)
    for seed in range(4):
        played = run("slo-guard", seed, budget)
        first = next((i for i, p in enumerate(played) if p.phase == "exploit"), None)
        if first is None:  # tiny budgets: exploration may use it all (max_explore = max(5, …))
            assert high >= budget
            continue
        distinct = sum(1 for p in played[:first] if p.outcome.reused_from is None)
        assert low <= distinct <= high, (budget, seed, distinct)
        assert all(p.phase == "explore" for p in played[:first])
        assert all(p.phase == "exploit" for p in played[first:])


def test_tpe_phase_replays_constraints_on_the_shared_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    studies: list[Any] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        study = replay_study(*args, **kwargs)
        studies.append(study)
        return study

    monkeypatch.setattr(slo_guard_module, "replay_study", spy)
    played = run("slo-guard", seed=5, budget=25)
    assert studies, "no TPE ask"
    seen = {"crash": 0, "guarded": 0, "slo_violation": 0, "ok": 0}
    for study in studies:
        for trial in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
            constraint, status = trial.constraints["slo"], trial.user_attrs["status"]
            seen[status] += 1
            if status in ("crash", "guarded"):
                assert constraint == CRASH_VIOLATION
            elif status == "slo_violation":
                assert 0 < constraint <= MAX_SLO_VIOLATION
            else:
                assert constraint <= 0
    assert seen["crash"] + seen["guarded"] > 0 and seen["slo_violation"] > 0 and seen["ok"] > 0
    # the last TPE ask (odd exploit trials; even ones move a knob of the best point) replayed all history
    last_tpe = max(i for i, p in enumerate(played) if p.phase == "exploit" and i % slo_guard_module.LOCAL_EVERY)
    assert len(studies[-1].get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == len(
        [p for p in played[:last_tpe] if p.outcome.reused_from is None]
    )
