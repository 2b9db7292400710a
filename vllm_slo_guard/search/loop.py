"""The tuning loop: ask, repair, deduplicate, guard, evaluate, tell, store — then confirm the best.

Per trial ``n``: the searcher proposes a config, ``repair`` makes it one vLLM accepts, and the
*repaired* config is what the searcher is told and what is stored. A repaired config evaluated before
is not run again: its outcome is reused (``reused_from``) and the trial does not count against the
budget; 50 duplicates in a row mean the searcher has nothing new to propose, and the run stops. The
memory guard rejects configs that cannot start (``guarded``: no launch, no cost, but counted, so a
searcher that keeps proposing impossible configs still ends). A trial whose failure no config can fix
aborts the run with one line: the machine's (vLLM missing, model missing, port in use: category
``environment``) or the workload's (the server refused the requests themselves with a 4xx, e.g. a
prompt longer than ``max_model_len`` or a token id outside the vocabulary: ``request_error``, with the
server's message). The aborting trial is shown (one progress line) but not stored: it says nothing
about its config. One exception: a context-length refusal while ``max_model_len`` is tuned and this
trial's value is below the knob's highest is that config's fault, and is stored as its crash.

Budgets: ``spec.budget`` counted trials for the whole study, and optionally ``spec.time_budget_s`` of
summed trial cost (startup + measurement; simulated seconds in virtual mode, wall seconds otherwise).

Every record is stored as it happens (``storage``), so an interrupted run loses nothing; ``replay``
tells a fresh searcher the stored search trials in trial order (the searcher contract makes its state
a function of that history, see ``base.py``), and the loop continues at the next trial number.

Confirmation: the best ``confirm_top_k`` feasible configs are measured again, longer and with another
seed; a config that misses an SLO on confirmation drops out (if all do, up to ``confirm_top_k`` more
are tried). Confirmations are stored too (phase ``confirm``, ``confirm_after`` = the number of search
trials they follow), so a resumed run that already confirmed the same trials does not measure them again.

Test hook: ``SLO_GUARD_TEST_KILL_AFTER=k`` makes the process SIGKILL itself right after the k-th
search trial has been stored. It exists only for the resume acceptance test; never set it otherwise.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from ..engine.crash import Category, aborts_run
from ..errors import SloGuardError
from ..outcome import Outcome, TrialPhase, TrialStatus, rank_key
from ..progress import Progress, TuneStatus
from ..repair import repair
from ..space import config_key
from ..spec import TuneSpec
from .base import Searcher, rng_for
from .evaluators import Evaluator
from .problem import Problem
from .result import TrialRecord, miss_key
from .storage import StudyStore

MAX_CONSECUTIVE_DUPLICATES = 50
KILL_AFTER_ENV = "SLO_GUARD_TEST_KILL_AFTER"
# vLLM's refusals of a request that does not fit max_model_len (``vllm/renderers/params.py``,
# ``vllm/sampling_params.py``: a prompt of exactly max_model_len leaves max_tokens 0)
_CONTEXT_LENGTH_REFUSALS = (
    "maximum context length",
    "cannot be greater than max_model_len",
    "max_tokens must be at least 1",
)


class EnvironmentAbort(SloGuardError):
    """A trial failed for a reason no configuration can fix; the run stops (stored trials are kept)."""


def search_seed(spec: TuneSpec) -> int:
    """The workload seed of every search trial: one request sequence per study (common random numbers).

    Like `vllm bench serve --seed`, every trial replays the same prompts and arrival times, so two
    trials differ by their configs, not by their workload samples (a p95 over a few hundred requests
    moves with the sample by more than good configs differ; see `docs/study.md`). The winner is still
    not tuned to one sample: confirmations re-measure it on fresh seeds. A spec with
    ``search_workload_seed`` names the sample itself (the study's fixed landscape).
    """
    if spec.search_workload_seed is not None:
        return spec.search_workload_seed
    return trial_seed(spec.seed, 0, "evaluate")


def trial_seed(seed: int, trial_number: int, purpose: str) -> int:
    """The workload/noise seed of one evaluation: reproducible, different per trial and purpose."""
    return rng_for(seed, trial_number, purpose).randrange(2**31)


@dataclass
class TuningLoop:
    """One run's state between stored records: the searcher's history, the budget and the best so far."""

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
            if record.counted and record.outcome.status == TrialStatus.GUARDED:
                status.guarded += 1
            best = status.best
            minimize = self.spec.minimize
            if best is None or miss_key(record.outcome, minimize) < miss_key(best.outcome, minimize):
                status.best = record
        if record.outcome.status == TrialStatus.CRASH:
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
        kept = f"{len(self.search)} trials kept in study {self.store.name!r}"
        if outcome.category == Category.REQUEST_ERROR:
            return EnvironmentAbort(
                f"trial {n}: the server refused the workload, which no configuration can fix: {outcome.root_cause} "
                f"({kept}; make the workload fit the model and run again)"
            )
        return EnvironmentAbort(
            f"trial {n} failed for a reason no configuration can fix: {outcome.root_cause} "
            f"({kept}; fix it, then re-run the same command to resume)"
        )

    def _aborts(self, outcome: Outcome, config: dict[str, Any]) -> bool:
        """No configuration can fix this outcome (see the module docstring for the max_model_len exception)."""
        if not aborts_run(outcome.category):
            return False
        if outcome.category != Category.REQUEST_ERROR or "max_model_len" not in self.problem.space.names:
            return True
        cause = (outcome.root_cause or "").lower()
        highest = self.problem.space.knob("max_model_len").high
        short = highest is not None and config.get("max_model_len", highest) < highest
        return not (short and any(text in cause for text in _CONTEXT_LENGTH_REFUSALS))

    def _abort(self, n: int, outcome: Outcome, phase: str, confirm_after: int | None = None) -> EnvironmentAbort:
        """Show the aborting trial's line (not stored: it says nothing about its config), then the abort."""
        outcome.phase = phase
        record = TrialRecord(n, outcome, counted=False, cost_s=0.0, confirm_after=confirm_after)
        self.progress.update(record, self.status)
        return self._environment(n, outcome)

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
                    TrialStatus.GUARDED, {}, category=verdict.category, root_cause=verdict.message, violation=math.inf
                )
            else:
                outcome = self.evaluator.evaluate(argv, seed=search_seed(self.spec))
                if self._aborts(outcome, repaired.config):
                    outcome.config, outcome.argv = dict(repaired.config), list(argv)
                    raise self._abort(n, outcome, phase)
            outcome.config = dict(repaired.config)
            outcome.repair_notes = list(repaired.notes)
            outcome.phase = phase
            outcome.argv = list(argv)
            wall = time.monotonic() - started
            cost = 0.0 if outcome.status == TrialStatus.GUARDED else self._cost(outcome, wall)
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
        self.status.phase = TrialPhase.CONFIRM
        started = time.monotonic()
        source = candidate.outcome
        seed = trial_seed(self.spec.seed, candidate.number, "confirm")
        outcome = self.evaluator.evaluate(source.argv, seed=seed, confirm=True)
        if self._aborts(outcome, source.config):
            outcome.config, outcome.argv = dict(source.config), list(source.argv)
            raise self._abort(candidate.number, outcome, TrialPhase.CONFIRM, confirm_after=after)
        outcome.config = dict(source.config)
        outcome.repair_notes = list(source.repair_notes)
        outcome.phase = TrialPhase.CONFIRM
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
