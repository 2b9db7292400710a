"""The tuning loop: dedup, guard, budgets, confirmation, storage and resume, on real evaluators.

Searchers here are tiny scripted ones (the loop's behaviour must not depend on a clever searcher);
evaluators are the real in-process simulator and the simulated server, wrapped only to count calls.
The one stand-in evaluator (``TableEvaluator``) returns fixed figures per config, which is the only
way to make the search and the confirmation disagree on purpose.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from vllm_slo_guard.bench.workload import WorkloadSpec
from vllm_slo_guard.guard import GuardVerdict
from vllm_slo_guard.outcome import CRASH_VIOLATION, Outcome
from vllm_slo_guard.search.base import SearchContext, rng_for
from vllm_slo_guard.search.evaluators import Evaluator, make_evaluator
from vllm_slo_guard.search.loop import MAX_CONSECUTIVE_DUPLICATES, EnvironmentAbort
from vllm_slo_guard.search.problem import build_problem
from vllm_slo_guard.search.result import TrialRecord
from vllm_slo_guard.search.storage import StudyError, load_store, open_study
from vllm_slo_guard.search.tuner import tune
from vllm_slo_guard.spec import TuneSpec, parse_slo

MODEL = "Qwen/Qwen2-1.5B"
GOOD = {
    "max_num_seqs": 64,
    "max_num_batched_tokens": 4096,
    "gpu_memory_utilization": 0.9,
    "block_size": 16,
    "optimization_level": 2,
    "max_cudagraph_capture_size": 256,
    "enable_chunked_prefill": True,
    "enable_prefix_caching": True,
}
CPU_CONFIG = {
    "max_num_seqs": 8,
    "max_num_batched_tokens": 2048,
    "kv_cache_memory_bytes": 2**30,
    "block_size": 128,
    "optimization_level": 0,
    "enable_chunked_prefill": True,
    "enable_prefix_caching": True,
}
NO_MEMORY = {**GOOD, "gpu_memory_utilization": 0.05}  # 2 GiB of 40: the weights alone do not fit


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def make_spec(tmp_path: Path, **changes: Any) -> TuneSpec:
    spec = TuneSpec(
        model=MODEL,
        slos=(parse_slo("200ms"),),
        workload=WorkloadSpec(num_prompts=60, request_rate=8.0, random_input_len=256, random_output_len=32),
        objective="latency",
        budget=4,
        engine="sim",
        gpu="A100-40GB",
        searcher="random",
        confirm_top_k=0,
        storage=f"sqlite:///{tmp_path / 'studies.db'}",
    )
    return replace(spec, **changes)


@dataclass
class Scripted:
    """Proposes ``configs`` in order (then the last one forever)."""

    configs: Sequence[dict[str, Any]]
    name: str = "scripted"
    told: list[int] = field(default_factory=list)

    def ask(self, trial_number: int) -> tuple[dict[str, Any], str]:
        return dict(self.configs[min(trial_number, len(self.configs) - 1)]), "scripted"

    def tell(self, trial_number: int, outcome: Outcome) -> None:
        self.told.append(trial_number)


@dataclass
class Random:
    """Uniform samples drawn from ``rng_for(seed, n)`` only (so it resumes exactly)."""

    context: SearchContext
    name: str = "random"

    def ask(self, trial_number: int) -> tuple[dict[str, Any], str]:
        return self.context.space.sample(rng_for(self.context.seed, trial_number)), "random"

    def tell(self, trial_number: int, outcome: Outcome) -> None:
        pass


def random_searcher(spec: TuneSpec) -> Random:
    problem = build_problem(spec, spec.trial_device())
    return Random(SearchContext(problem.space, spec.seed, spec.budget))


@dataclass
class Counting:
    """A real evaluator, with its calls counted."""

    inner: Evaluator
    guards: int = 0
    evaluations: list[tuple[list[str], bool]] = field(default_factory=list)
    seeds: list[tuple[int, bool]] = field(default_factory=list)

    @property
    def model(self) -> str:
        return self.inner.model

    def guard(self, argv: Sequence[str]) -> GuardVerdict:
        self.guards += 1
        return self.inner.guard(argv)

    def evaluate(self, argv: Sequence[str], seed: int, *, confirm: bool = False) -> Outcome:
        self.evaluations.append((list(argv), confirm))
        self.seeds.append((seed, confirm))
        return self.inner.evaluate(argv, seed, confirm=confirm)


def counting(spec: TuneSpec) -> Counting:
    problem = build_problem(spec, spec.trial_device())
    return Counting(make_evaluator(spec, problem, "test"))


def test_search_trials_share_one_workload_and_confirmations_use_fresh_ones(tmp_path: Path) -> None:
    spec = replace(make_spec(tmp_path, budget=6), confirm_top_k=2)
    evaluator = counting(spec)
    tune(spec, evaluator=evaluator)
    search = {seed for seed, confirm in evaluator.seeds if not confirm}
    confirms = [seed for seed, confirm in evaluator.seeds if confirm]
    assert len([s for s, c in evaluator.seeds if not c]) >= 5 and len(search) == 1  # common random numbers
    assert confirms and search.isdisjoint(confirms) and len(set(confirms)) == len(confirms)
    other = counting(replace(spec, seed=1, study_name="other"))
    tune(replace(spec, seed=1, study_name="other"), evaluator=other)
    assert {s for s, c in other.seeds if not c} != search  # another study seed, another workload sample


def test_a_named_search_workload_seed_is_replayed_by_every_search_trial(tmp_path: Path) -> None:
    spec = replace(make_spec(tmp_path, budget=4), confirm_top_k=1, search_workload_seed=777)
    evaluator = counting(spec)
    tune(spec, evaluator=evaluator)
    assert {seed for seed, confirm in evaluator.seeds if not confirm} == {777}
    assert all(seed != 777 for seed, confirm in evaluator.seeds if confirm)  # confirmations stay fresh
    plain = replace(spec, search_workload_seed=None)
    assert spec.fingerprint() != plain.fingerprint()
    assert "search_workload_seed" not in plain.identity()  # studies made before the field keep their fingerprint
    assert TuneSpec.from_dict(spec.to_dict()) == spec


def test_a_repeated_config_is_evaluated_once_and_not_counted(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, budget=2)
    other = {**GOOD, "max_num_seqs": 32}
    evaluator = counting(spec)
    result = tune(spec, evaluator=evaluator, searcher=Scripted([GOOD, GOOD, other]))
    assert len(evaluator.evaluations) == 2  # GOOD once, other once
    first, second, third = result.trials
    assert second.outcome.reused_from == 0 and not second.counted and second.cost_s == 0
    assert second.outcome.status == first.outcome.status and second.outcome.metrics == first.outcome.metrics
    assert first.counted and third.counted and third.outcome.config["max_num_seqs"] == 32
    assert result.counts.reused == 1 and result.counts.evaluated == 2


def test_endless_duplicates_stop_the_run_with_a_note(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, budget=5)
    evaluator = counting(spec)
    result = tune(spec, evaluator=evaluator, searcher=Scripted([GOOD]))
    assert len(evaluator.evaluations) == 1
    assert len(result.trials) == 1 + MAX_CONSECUTIVE_DUPLICATES
    assert any("exhausted" in note for note in result.notes)
    assert result.winner is not None and result.winner.trial == 0


def test_the_searcher_is_told_the_repaired_config(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, budget=1)
    unrepaired = {**GOOD, "max_num_seqs": 128, "max_num_batched_tokens": 64}
    searcher = Scripted([unrepaired])
    result = tune(spec, searcher=searcher)
    outcome = result.trials[0].outcome
    assert outcome.config["max_num_batched_tokens"] == 128  # ≥ max_num_seqs
    assert outcome.repair_notes and "max_num_batched_tokens 64 → 128" in outcome.repair_notes[0]
    assert "--max-num-batched-tokens" in outcome.argv and "128" in outcome.argv


def test_a_guarded_config_is_counted_costs_nothing_and_never_launches(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, budget=1, sim_mode="server")
    evaluator = counting(spec)
    result = tune(spec, evaluator=evaluator, searcher=Scripted([NO_MEMORY]))
    (record,) = result.trials
    assert record.outcome.status == "guarded" and record.outcome.category == "oom"
    assert record.counted and record.cost_s == 0.0
    assert record.outcome.constraint == CRASH_VIOLATION
    assert "memory" in (record.outcome.root_cause or "").lower()
    assert evaluator.guards == 1 and evaluator.evaluations == []
    logs = Path(tmp_path / "cache" / "vllm-tune" / "logs")
    assert not logs.exists() or not any(logs.rglob("*.log"))  # no server was started
    assert result.winner is None and result.best_miss is not None and result.counts.guarded == 1
    assert result.counts.guarded_by_category == {"oom": 1}


def test_budget_counts_trials_of_the_whole_study(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, budget=3)
    result = tune(spec, searcher=random_searcher(spec))
    assert sum(r.counted for r in result.trials) == 3
    assert [r.number for r in result.trials] == [0, 1, 2]


def test_time_budget_stops_on_summed_trial_cost(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, budget=50, time_budget_s=120.0)
    result = tune(spec, searcher=random_searcher(spec))
    costs = [r.cost_s for r in result.trials if r.counted]
    assert len(costs) < 50
    assert sum(costs) >= 120.0 > sum(costs[:-1])
    assert any("time budget" in note for note in result.notes)


@dataclass
class TableEvaluator:
    """Fixed figures per max_num_seqs: one table for search trials, another for confirmations."""

    search: dict[int, float]  # max_num_seqs → p95 TTFT in ms
    confirm: dict[int, float]
    model: str = MODEL
    calls: list[tuple[int, bool]] = field(default_factory=list)

    def guard(self, argv: Sequence[str]) -> GuardVerdict:
        return GuardVerdict(True)

    def evaluate(self, argv: Sequence[str], seed: int, *, confirm: bool = False) -> Outcome:
        seqs = int(argv[argv.index("--max-num-seqs") + 1])
        self.calls.append((seqs, confirm))
        ms = (self.confirm if confirm else self.search)[seqs]
        violation = ms / 200.0 - 1
        return Outcome(
            "ok" if violation <= 0 else "slo_violation", {}, objective=ms / 1000, violation=violation,
            metrics={"p95_ttft_ms": ms}, startup_s=10.0, measurement_s=5.0,
        )  # fmt: skip


def _seqs(*values: int) -> list[dict[str, Any]]:
    return [{**GOOD, "max_num_seqs": v} for v in values]


def test_confirmation_chooses_on_the_confirmation_figures(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, budget=4, confirm_top_k=2)
    evaluator = TableEvaluator(
        search={8: 100.0, 16: 110.0, 32: 150.0, 64: 400.0}, confirm={8: 190.0, 16: 120.0, 32: 130.0}
    )
    result = tune(spec, evaluator=evaluator, searcher=Scripted(_seqs(8, 16, 32, 64)))
    assert [c for c in evaluator.calls if c[1]] == [(8, True), (16, True)]  # the best two of the search
    assert result.winner is not None and result.winner.confirmed
    assert result.winner.engine_args["max_num_seqs"] == 16  # 120 ms confirmed beats 190 ms confirmed
    assert result.winner.outcome.metrics["p95_ttft_ms"] == 120.0
    assert [c.engine_args["max_num_seqs"] for c in result.runner_ups] == [8, 32]  # confirmed, then by rank
    confirms = [r for r in result.trials if r.is_confirm]
    assert [r.number for r in confirms] == [0, 1] and all(r.confirm_after == 4 for r in confirms)
    assert result.counts.confirmations == 2


def test_a_config_that_fails_confirmation_drops_out(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, budget=3, confirm_top_k=1)
    evaluator = TableEvaluator(search={8: 100.0, 16: 110.0, 32: 400.0}, confirm={8: 260.0, 16: 150.0})
    result = tune(spec, evaluator=evaluator, searcher=Scripted(_seqs(8, 16, 32)))
    # 8 missed on confirmation, so the next best (16) was confirmed too
    assert [c for c in evaluator.calls if c[1]] == [(8, True), (16, True)]
    assert result.winner is not None and result.winner.engine_args["max_num_seqs"] == 16
    assert all(c.engine_args["max_num_seqs"] != 8 for c in result.runner_ups)


def test_no_feasible_config_reports_the_closest_miss(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, budget=2, confirm_top_k=2)
    evaluator = TableEvaluator(search={8: 300.0, 16: 250.0}, confirm={})
    result = tune(spec, evaluator=evaluator, searcher=Scripted(_seqs(8, 16)))
    assert result.winner is None and result.runner_ups == []
    assert result.best_miss is not None and result.best_miss.engine_args["max_num_seqs"] == 16
    assert not any(confirm for _, confirm in evaluator.calls)


def test_outcomes_round_trip_through_the_study(tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    problem = build_problem(spec, spec.trial_device())
    meta = {"fingerprint": "f", "identity": {}, "tune_spec": spec.to_dict()}
    store, existed = open_study(
        url=spec.storage or "", name="round-trip", direction="minimize", space=problem.space, meta=meta
    )
    assert not existed
    crash = Outcome(
        "crash", {**GOOD, "max_num_batched_tokens": 100000}, category="oom", root_cause="CUDA out of memory",
        violation=math.inf, startup_s=30.0, phase="explore", argv=["--max-num-seqs", "64"],
        repair_notes=["a → b: why"],
    )  # fmt: skip
    ok = Outcome(
        "ok", dict(GOOD), objective=0.12, violation=-0.4, metrics={"p95_ttft_ms": 120.0, "completed": 60},
        startup_s=12.5, measurement_s=7.5, phase="exploit", kv_cache_tokens=123456,
    )  # fmt: skip
    reused = replace(ok, reused_from=1, startup_s=0.0, measurement_s=0.0)
    written = [
        TrialRecord(0, crash, counted=True, cost_s=30.0, wall_s=0.1),
        TrialRecord(1, ok, counted=True, cost_s=20.0, wall_s=0.2),
        TrialRecord(2, reused, counted=False, cost_s=0.0),
        TrialRecord(1, replace(ok, phase="confirm"), counted=False, cost_s=40.0, confirm_after=3),
    ]
    for record in written:
        store.add(record)
    read = load_store(spec.storage, "round-trip").records()
    assert read == written
    frozen = store.study.get_trials()
    assert frozen[0].params["max_num_batched_tokens"] == 8192  # clipped into the knob's range
    assert frozen[0].constraints == {"slo": CRASH_VIOLATION}
    assert frozen[1].value == 0.12 and frozen[1].constraints == {"slo": -0.4}
    assert frozen[0].value == 1e6  # a finite stand-in for a crash


def test_rerun_resumes_and_a_larger_budget_extends_the_study(tmp_path: Path) -> None:
    full_spec = make_spec(tmp_path, budget=6, confirm_top_k=1, study_name="full")
    full = tune(full_spec, searcher=random_searcher(full_spec))

    spec = make_spec(tmp_path, budget=3, confirm_top_k=1, study_name="grown")
    first = tune(spec, searcher=random_searcher(spec))
    again = counting(spec)
    same = tune(spec, evaluator=again, searcher=random_searcher(spec))
    assert again.evaluations == []  # everything, confirmation included, was already stored
    assert [r.outcome for r in same.trials] == [r.outcome for r in first.trials]

    bigger = replace(spec, budget=6)
    extended = counting(bigger)
    grown = tune(bigger, evaluator=extended, searcher=random_searcher(bigger))
    search = [r for r in grown.trials if not r.is_confirm]
    new = search[len([r for r in first.trials if not r.is_confirm]) :]
    assert sum(r.counted for r in new) == 3
    ran = [r for r in new if r.outcome.status != "guarded" and r.outcome.reused_from is None]
    assert [argv for argv, confirm in extended.evaluations if not confirm] == [r.outcome.argv for r in ran]
    assert [r.outcome.config for r in search] == [r.outcome.config for r in full.trials if not r.is_confirm]
    assert grown.winner is not None and full.winner is not None
    assert grown.winner.engine_args == full.winner.engine_args
    assert grown.winner.outcome.metrics == full.winner.outcome.metrics


def test_a_changed_spec_under_the_same_study_name_is_refused(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, budget=1, study_name="mine")
    tune(spec, searcher=Scripted([GOOD]))
    changed = replace(spec, slos=(parse_slo("ttft:p99=300ms"),))
    with pytest.raises(StudyError, match=r"study 'mine' was made by a different tuning spec \(differs in: slos\)"):
        tune(changed, searcher=Scripted([GOOD]))


def test_default_study_name_is_stable_and_specific(tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    assert spec.default_study_name() == make_spec(tmp_path, budget=99).default_study_name()
    assert spec.default_study_name().startswith("qwen2-1.5b-")
    assert spec.fingerprint() != replace(spec, seed=1).fingerprint()
    assert spec.fingerprint() != replace(spec, pinned_args=("--max-model-len", "4096")).fingerprint()
    assert spec.fingerprint() != replace(spec, gpu="H100-80GB").fingerprint()
    assert TuneSpec.from_dict(spec.to_dict()) == spec


def test_an_environment_failure_aborts_and_keeps_what_was_measured(tmp_path: Path) -> None:
    broken = f'{sys.executable} -c "raise SystemExit(\\"ModuleNotFoundError: No module named \'vllm\'\\")"'
    spec = make_spec(tmp_path, budget=3, engine="vllm", device="cpu", vllm_cmd=broken, study_name="env")
    with pytest.raises(EnvironmentAbort, match=r"trial 0 failed for a reason no configuration can fix: .*vllm"):
        tune(spec, searcher=Scripted([CPU_CONFIG]))
    assert load_store(spec.storage, "env").records() == []  # the failed trial is not the config's fault
