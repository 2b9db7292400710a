"""The tuning loop: ask, repair, deduplicate, guard, evaluate, tell, store — then confirm the best.

Per trial ``n``: the searcher proposes a config, ``repair`` makes it one vLLM accepts, and the
*repaired* config is what the searcher is told and what is stored. A repaired config evaluated before
is not run again: its outcome is reused (``reused_from``) and the trial does not count against the
budget; 50 duplicates in a row mean the searcher has nothing new to propose, and the run stops. The
memory guard rejects configs that cannot start (``guarded``: no launch, no cost, but counted, so a
searcher that keeps proposing impossible configs still ends). A trial whose failure no config can fix
(vLLM missing, model missing, port in use: category ``environment``) aborts the run with one line.

Budgets: ``spec.budget`` counted trials for the whole study, and optionally ``spec.time_budget_s`` of
summed trial cost (startup + measurement; simulated seconds in virtual mode, wall seconds otherwise).

Every record is stored as it happens (``storage``), so an interrupted run loses nothing. Re-running
the same spec resumes: the stored search trials are replayed into a fresh searcher with ``tell`` in
trial order (the searcher contract makes its state a function of that history, see ``base.py``),
and the loop continues at the next trial number, up to the (possibly larger) budget.

Confirmation: the best ``confirm_top_k`` feasible configs are measured again, longer and with another
seed; the winner is chosen on those figures, and a config that misses an SLO on confirmation drops
out (if all do, up to ``confirm_top_k`` more are tried). Confirmations are stored too (phase
``confirm``, ``confirm_after`` = the number of search trials they follow), so a resumed run that
already confirmed the same trials does not measure them again.

Test hook: ``SLO_GUARD_TEST_KILL_AFTER=k`` makes the process SIGKILL itself right after the k-th
search trial has been stored. It exists only for the resume acceptance test; never set it otherwise.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..engine.engines import flag_value
from ..errors import SloGuardError
from ..guard import Device
from ..modelinfo import load_model_arch
from ..outcome import Outcome, rank_key
from ..paths import log_dir
from ..progress import NullProgress, Progress, TuneStatus
from ..repair import RepairContext, repair
from ..sim.args import ArgparseExit, parse_serve_args
from ..space import Config, Knob, Space, build_space, config_key, pinned_knob_names
from ..spec import TuneSpec, identity_hash
from .base import SearchContext, Searcher, rng_for
from .objective import Objective
from .storage import StudyStore, TrialRecord, default_storage_url, open_study

if TYPE_CHECKING:  # evaluators pull in the load generator (openai): not needed to read or export a study
    from .evaluators import Evaluator

MAX_CONSECUTIVE_DUPLICATES = 50
KILL_AFTER_ENV = "SLO_GUARD_TEST_KILL_AFTER"


class EnvironmentAbort(SloGuardError):
    """A trial failed for a reason no configuration can fix; the run stops (stored trials are kept)."""


@dataclass(frozen=True)
class Problem:
    """What the loop needs besides the searcher and the evaluator."""

    space: Space
    fixed: Config  # --fix values, forwarded like pinned flags
    repair_ctx: RepairContext
    objective: Objective
    device: Device
    model: str

    def argv(self, config: Mapping[str, Any]) -> list[str]:
        """Pinned flags, the tuned knobs, then the ``--fix`` values."""
        return self.space.argv(config) + fixed_argv(self.fixed)

    def repaired(self, config: Config) -> Config:
        """The config that would run (searchers use it to avoid proposing what the tuner would reuse)."""
        return repair(config, self.repair_ctx).config

    def startup_risk(self, config: Config) -> bool:
        """The memory guard at zero margin on the repaired config: True when it predicts no start."""
        from ..guard import predict

        return not predict(self.model, self.argv(self.repaired(config)), self.device, margin=0.0).ok


def fixed_argv(fixed: Mapping[str, Any]) -> list[str]:
    args: list[str] = []
    for name, value in fixed.items():
        args += Knob(name, "bool" if isinstance(value, bool) else "categorical").argv(value)
    return args


def _pinned_values(pinned_args: Sequence[str], fixed: Mapping[str, Any]) -> tuple[dict[str, Any], int | None]:
    """EngineArgs values the user set (for repair), and the pinned max_model_len if any."""
    values: dict[str, Any] = {}
    max_model_len = None
    if pinned_args:
        try:
            ns = parse_serve_args(["_model_", *pinned_args])
        except ArgparseExit as exc:  # pinned_knob_names reported it already; keep the message anyway
            raise SloGuardError(exc.text.strip().splitlines()[-1]) from None
        for name in pinned_knob_names(pinned_args):
            if hasattr(ns, name):
                values[name] = getattr(ns, name)
        if ns.enforce_eager:
            values["optimization_level"] = 0
        if ns.max_model_len and ns.max_model_len > 0:
            max_model_len = int(ns.max_model_len)
    values.update(fixed)
    if isinstance(fixed.get("max_model_len"), int):
        max_model_len = fixed["max_model_len"]
    return values, max_model_len


def build_problem(spec: TuneSpec, device: Device) -> Problem:
    """The space (minus pinned flags, with --tune/--fix), the repair context and the objective."""
    arch = load_model_arch(spec.model)
    _, pinned_len = _pinned_values(spec.pinned_args, {})
    max_model_len = pinned_len or arch.max_position_embeddings
    space, fixed = build_space(device.spec, spec.pinned_args, tune=spec.tune, fix=spec.fix, max_model_len=max_model_len)
    pinned, fixed_len = _pinned_values(spec.pinned_args, fixed)
    ctx = RepairContext(gpu=device.spec, pinned=pinned, max_model_len=fixed_len or max_model_len)
    return Problem(space, fixed, ctx, Objective(spec.objective, tuple(spec.slos)), device, spec.model)


def make_evaluator(spec: TuneSpec, problem: Problem, study_name: str) -> Evaluator:
    """The in-process simulator (sim + virtual), else a real server per trial (sim server or vLLM)."""
    from ..engine.engines import Engine, SimEngine, VllmEngine
    from .evaluators import ServerEvaluator, VirtualSimEvaluator

    if spec.engine == "sim" and spec.sim_mode == "virtual":
        return VirtualSimEvaluator(
            spec.model, problem.device.spec.name, spec.workload, problem.objective, gpu_count=spec.gpu_count
        )
    engine: Engine
    if spec.engine == "sim":
        engine = SimEngine(gpu=problem.device.spec.name, gpu_count=spec.gpu_count, seed=spec.seed)
    else:
        engine = VllmEngine(vllm_cmd=spec.vllm_cmd, cpu=problem.device.spec.is_cpu)
        engine.argv(spec.model, [], "127.0.0.1", 0)  # resolve the command now: a missing vLLM is one line
    return ServerEvaluator(
        spec.model, engine, spec.workload, problem.objective, problem.device, log_dir=log_dir() / study_name,
        timeouts=spec.timeouts, endpoint=spec.endpoint,  # type: ignore[arg-type]
        served_model_name=flag_value(spec.pinned_args, "--served-model-name"),
        api_key=flag_value(spec.pinned_args, "--api-key") or "EMPTY",
    )  # fmt: skip


def search_seed(spec: TuneSpec) -> int:
    """The workload seed of every search trial: one request sequence per study (common random numbers).

    Like `vllm bench serve --seed`, every trial replays the same prompts and arrival times, so two
    trials differ by their configs, not by their workload samples (on a 150-request p95 the sample
    alone moved the simulated TTFT by ±15%, which hid 5–10% differences between configs). The
    winner is still not tuned to one sample: confirmations re-measure it on fresh seeds. A spec with
    ``search_workload_seed`` names the sample itself (the study's fixed landscape).
    """
    if spec.search_workload_seed is not None:
        return spec.search_workload_seed
    return trial_seed(spec.seed, 0, "evaluate")


def trial_seed(seed: int, trial_number: int, purpose: str) -> int:
    """The workload/noise seed of one evaluation: reproducible, different per trial and purpose."""
    return rng_for(seed, trial_number, purpose).randrange(2**31)


# --- the result ---------------------------------------------------------------------------------------


@dataclass
class Candidate:
    """A config worth serving: its engine arguments, the argv, and the figures it was chosen on."""

    trial: int
    engine_args: Config  # tuned values and --fix values (pinned flags are in argv and the spec)
    argv: list[str]
    outcome: Outcome  # the confirmation's outcome when confirmed, else the search trial's
    confirmed: bool  # its figures come from a confirmation run (for a winner: it passed it)


@dataclass
class TrialCounts:
    evaluated: int = 0  # counted trials that ran (crashed or measured)
    guarded: int = 0
    reused: int = 0
    feasible: int = 0  # distinct configs that met every SLO in the search
    confirmations: int = 0
    crashes: dict[str, int] = field(default_factory=dict)  # category → count (search and confirmation)
    guarded_by_category: dict[str, int] = field(default_factory=dict)

    @property
    def crashed(self) -> int:
        return sum(self.crashes.values())


@dataclass
class TuneResult:
    """The winner (``None`` when no config met every SLO), runner-ups, every trial, and the counts."""

    spec: TuneSpec
    study_name: str
    storage: str
    hardware: dict[str, Any]
    vllm_version: str
    fixed: Config
    winner: Candidate | None
    runner_ups: list[Candidate]
    best_miss: Candidate | None  # the closest SLO miss, when there is no winner
    trials: list[TrialRecord]
    counts: TrialCounts
    total_cost_s: float
    notes: list[str] = field(default_factory=list)

    @property
    def objective(self) -> Objective:
        return Objective(self.spec.objective, tuple(self.spec.slos))


def _candidate(record: TrialRecord, fixed: Mapping[str, Any], confirmed: bool) -> Candidate:
    outcome = record.outcome
    return Candidate(record.number, {**outcome.config, **fixed}, list(outcome.argv), outcome, confirmed)


def miss_key(outcome: Outcome, minimize: bool) -> tuple[float, float, float]:
    """``rank_key``, with capped SLO misses told apart by their raw violation (closest first)."""
    raw = outcome.violation if outcome.violation is not None and math.isfinite(outcome.violation) else math.inf
    return (*rank_key(outcome, minimize), raw)


def _evaluated_crash(record: TrialRecord) -> bool:
    return record.outcome.status == "crash" and (record.counted or record.is_confirm)


def build_result(
    spec: TuneSpec,
    records: Sequence[TrialRecord],
    *,
    study_name: str,
    storage: str,
    hardware: Mapping[str, Any],
    vllm_version: str,
    fixed: Mapping[str, Any],
    notes: Iterable[str] = (),
) -> TuneResult:
    """Choose the winner from stored records alone (the tuner and ``export`` share this)."""
    minimize = spec.minimize
    notes = list(notes)
    search = sorted((r for r in records if not r.is_confirm), key=lambda r: r.number)
    originals = [r for r in search if r.outcome.reused_from is None]
    feasible = sorted((r for r in originals if r.outcome.feasible), key=lambda r: rank_key(r.outcome, minimize))
    confirms: dict[int, TrialRecord] = {}
    for r in records:
        if r.confirm_after == len(search):
            confirms[r.number] = r
    winner: Candidate | None = None
    runner_ups: list[Candidate] = []
    if confirms:
        passed = sorted(
            (c for c in confirms.values() if c.outcome.feasible), key=lambda r: rank_key(r.outcome, minimize)
        )
        confirmed = [_candidate(c, fixed, True) for c in passed]
        rest = [_candidate(r, fixed, False) for r in feasible if r.number not in confirms]
        if confirmed:
            winner, runner_ups = confirmed[0], confirmed[1:] + rest
        else:
            runner_ups = rest
            notes.append("every re-measured config missed an SLO on confirmation")
    elif feasible:
        ranked = [_candidate(r, fixed, False) for r in feasible]
        winner, runner_ups = ranked[0], ranked[1:]
        if spec.confirm_top_k > 0:
            notes.append("the winner was not re-measured (no confirmation stored for these trials)")
    best_miss = None
    # a config that missed on confirmation is judged on those figures, not on its lucky search trial
    misses = [(r, False) for r in originals if not r.outcome.feasible]
    misses += [(c, True) for c in confirms.values() if not c.outcome.feasible]
    if winner is None and misses:
        record, remeasured = min(misses, key=lambda pair: miss_key(pair[0].outcome, minimize))
        best_miss = _candidate(record, fixed, remeasured)
    counts = TrialCounts(
        evaluated=sum(1 for r in search if r.counted and r.outcome.status != "guarded"),
        guarded=sum(1 for r in search if r.counted and r.outcome.status == "guarded"),
        reused=sum(1 for r in search if r.outcome.reused_from is not None),
        feasible=len(feasible),
        confirmations=len(confirms),
        crashes=dict(Counter(str(r.outcome.category) for r in records if _evaluated_crash(r))),
        guarded_by_category=dict(Counter(str(r.outcome.category) for r in originals if r.outcome.status == "guarded")),
    )  # fmt: skip
    return TuneResult(
        spec=spec, study_name=study_name, storage=storage, hardware=dict(hardware), vllm_version=vllm_version,
        fixed=dict(fixed), winner=winner, runner_ups=runner_ups, best_miss=best_miss, trials=list(records),
        counts=counts, total_cost_s=sum(r.cost_s for r in records), notes=notes,
    )  # fmt: skip


# --- the loop ----------------------------------------------------------------------------------------


@dataclass
class _Loop:
    spec: TuneSpec
    problem: Problem
    store: StudyStore
    evaluator: Evaluator
    searcher: Searcher
    progress: Progress
    virtual: bool
    records: list[TrialRecord] = field(default_factory=list)
    search: list[TrialRecord] = field(default_factory=list)
    first_by_key: dict[str, TrialRecord] = field(default_factory=dict)
    duplicate_streak: int = 0
    notes: list[str] = field(default_factory=list)
    status: TuneStatus = field(init=False)

    def __post_init__(self) -> None:
        self.status = TuneStatus(budget=self.spec.budget, objective=self.problem.objective)

    # state ------------------------------------------------------------------------------------------

    def _remember(self, record: TrialRecord) -> None:
        self.records.append(record)
        status = self.status
        if record.is_confirm:
            status.confirmations += 1
        else:
            self.search.append(record)
            status.next_trial = record.number + 1
            if record.outcome.reused_from is None:
                self.first_by_key.setdefault(config_key(record.outcome.config), record)
                self.duplicate_streak = 0
            else:
                self.duplicate_streak += 1
                status.reused += 1
            if record.counted:
                status.counted += 1
                status.wall_s += record.wall_s
                status.search_cost_s += record.cost_s
            if record.counted and record.outcome.status == "guarded":
                status.guarded += 1
            best = status.best
            minimize = self.spec.minimize
            if best is None or miss_key(record.outcome, minimize) < miss_key(best.outcome, minimize):
                status.best = record
        if record.outcome.status == "crash":
            status.crashes[str(record.outcome.category)] += 1
        status.cost_s += record.cost_s
        status.phase = record.phase

    def replay(self) -> int:
        """Load the stored records and tell the search trials to the searcher, in trial order."""
        stored = self.store.records()
        search = sorted((r for r in stored if not r.is_confirm), key=lambda r: r.number)
        for record in search:
            self.searcher.tell(record.number, record.outcome)
        for record in [*search, *(r for r in stored if r.is_confirm)]:
            self._remember(record)
        return len(search)

    def _environment(self, n: int, outcome: Outcome) -> EnvironmentAbort:
        return EnvironmentAbort(
            f"trial {n} failed for a reason no configuration can fix: {outcome.root_cause} "
            f"({len(self.search)} trials kept in study {self.store.name!r}; fix it, then re-run the same "
            "command to resume)"
        )

    def _cost(self, outcome: Outcome, wall_s: float) -> float:
        return outcome.cost_s if self.virtual else wall_s

    # search -----------------------------------------------------------------------------------------

    def run_search(self) -> None:
        spec = self.spec
        while self.status.counted < spec.budget:
            if spec.time_budget_s is not None and self.status.search_cost_s >= spec.time_budget_s:
                self._note(f"time budget reached after {self.status.counted} trials")
                break
            if self.duplicate_streak >= MAX_CONSECUTIVE_DUPLICATES:
                self._note(
                    f"stopped early: the last {self.duplicate_streak} proposals were all configs already "
                    "evaluated (the space looks exhausted)"
                )
                break
            self._trial(self.status.next_trial)

    def _trial(self, n: int) -> None:
        config, phase = self.searcher.ask(n)
        self.status.phase = phase
        repaired = repair(config, self.problem.repair_ctx)
        key = config_key(repaired.config)
        original = self.first_by_key.get(key)
        if original is not None:
            outcome = dataclasses.replace(
                original.outcome, phase=phase, reused_from=original.number, startup_s=0.0, measurement_s=0.0,
                config=dict(repaired.config), repair_notes=list(repaired.notes), metrics=dict(original.outcome.metrics),
            )  # fmt: skip
            record = TrialRecord(n, outcome, counted=False, cost_s=0.0)
        else:
            started = time.monotonic()
            argv = self.problem.argv(repaired.config)
            verdict = self.evaluator.guard(argv)
            if not verdict.ok:
                outcome = Outcome(
                    "guarded", {}, category=verdict.category, root_cause=verdict.message, violation=math.inf
                )
            else:
                outcome = self.evaluator.evaluate(argv, seed=search_seed(self.spec))
                if outcome.category == "environment":
                    raise self._environment(n, outcome)
            outcome.config = dict(repaired.config)
            outcome.repair_notes = list(repaired.notes)
            outcome.phase = phase
            outcome.argv = list(argv)
            wall = time.monotonic() - started
            cost = 0.0 if outcome.status == "guarded" else self._cost(outcome, wall)
            record = TrialRecord(n, outcome, counted=True, cost_s=cost, wall_s=wall)
        self.searcher.tell(n, record.outcome)
        self.store.add(record)
        self._remember(record)
        self._kill_hook()
        self.progress.update(record, self.status)

    def _kill_hook(self) -> None:
        kill_after = os.environ.get(KILL_AFTER_ENV)
        if kill_after and len(self.search) == int(kill_after):
            os.kill(os.getpid(), signal.SIGKILL)

    def _note(self, text: str) -> None:
        self.notes.append(text)
        self.progress.note(text)

    # confirmation -----------------------------------------------------------------------------------

    def run_confirmation(self) -> None:
        """Re-measure the best feasible configs (reusing confirmations already stored for these trials)."""
        k = self.spec.confirm_top_k
        if k == 0:
            return
        after = len(self.search)
        done = {r.number: r for r in self.records if r.confirm_after == after}
        ranked = sorted(
            (r for r in self.search if r.outcome.reused_from is None and r.outcome.feasible),
            key=lambda r: rank_key(r.outcome, self.spec.minimize),
        )
        passed = 0
        for tried, candidate in enumerate(ranked):
            if tried >= k and (passed > 0 or tried >= 2 * k):
                break
            record = done.get(candidate.number) or self._confirm(candidate, after)
            passed += int(record.outcome.feasible)

    def _confirm(self, candidate: TrialRecord, after: int) -> TrialRecord:
        self.status.phase = "confirm"
        started = time.monotonic()
        source = candidate.outcome
        seed = trial_seed(self.spec.seed, candidate.number, "confirm")
        outcome = self.evaluator.evaluate(source.argv, seed=seed, confirm=True)
        if outcome.category == "environment":
            raise self._environment(candidate.number, outcome)
        outcome.config = dict(source.config)
        outcome.repair_notes = list(source.repair_notes)
        outcome.phase = "confirm"
        outcome.argv = list(source.argv)
        wall = time.monotonic() - started
        record = TrialRecord(
            candidate.number, outcome, counted=False, cost_s=self._cost(outcome, wall), wall_s=wall,
            confirm_after=after,
        )  # fmt: skip
        self.store.add(record)
        self._remember(record)
        self.progress.update(record, self.status)
        return record


def tune(
    spec: TuneSpec,
    *,
    evaluator: Evaluator | None = None,
    progress: Progress | None = None,
    searcher: Searcher | None = None,
) -> TuneResult:
    """Tune ``spec`` (resuming its study when one exists) and return the result.

    ``evaluator`` and ``searcher`` replace the ones ``spec`` names (tests, custom harnesses);
    ``progress`` receives every record as it is stored.

    Example::

        spec = TuneSpec("Qwen/Qwen2-1.5B", (parse_slo("200ms"),), WorkloadSpec(request_rate=8),
                        engine="sim", gpu="A100-40GB", budget=15)
        result = tune(spec)
        print(result.winner.argv if result.winner else result.best_miss)
    """
    spec.validate()
    device = spec.trial_device()
    hardware = spec.hardware(device)
    problem = build_problem(spec, device)
    identity = spec.identity(hardware)
    fingerprint = identity_hash(identity)
    name = spec.study_name or spec.default_study_name(fingerprint=fingerprint)
    url = spec.storage or default_storage_url()
    vllm_version = identity["vllm_version"]
    meta = {
        "tune_spec": {**spec.to_dict(), "storage": None},  # a database URL may hold a password
        "identity": identity,
        "fingerprint": fingerprint,
        "hardware": hardware,
        "vllm_version": vllm_version,
        "fixed": problem.fixed,
    }
    if evaluator is None:  # before the study: a missing vLLM must not leave an empty study behind
        evaluator = make_evaluator(spec, problem, name)
    store, _ = open_study(
        url=url, name=name, direction="minimize" if spec.minimize else "maximize", space=problem.space, meta=meta
    )
    if searcher is None:
        from .registry import make_searcher

        context = SearchContext(
            problem.space, spec.seed, spec.budget, minimize=spec.minimize, canonical=problem.repaired,
            startup_risk=problem.startup_risk, slos=spec.slos,
        )  # fmt: skip
        searcher = make_searcher(spec.searcher, context)
    progress = progress or NullProgress()
    from .evaluators import VirtualSimEvaluator

    virtual = isinstance(evaluator, VirtualSimEvaluator)
    loop = _Loop(spec, problem, store, evaluator, searcher, progress, virtual=virtual)
    try:
        resumed = loop.replay()
        progress.start(loop.status, study_name=name, storage=url, resumed=resumed)
        loop.run_search()
        loop.run_confirmation()
        result = build_result(
            spec, loop.records, study_name=name, storage=url, hardware=hardware, vllm_version=vllm_version,
            fixed=problem.fixed, notes=loop.notes,
        )  # fmt: skip
        progress.finish(result)
    finally:
        progress.close()
    return result
