"""What a tuning run produced, as plain data: trial records, the winner, runner-ups and counts.

A leaf module: the loop writes these, storage reads and writes ``TrialRecord``, and the export,
the progress display, the report and ``serve`` read them, without importing the loop (or Optuna).
``build_result`` chooses the winner from stored records alone, so a study rebuilt from its storage
gives the same result as the run that made it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..outcome import Outcome, TrialStatus, rank_key
from ..space import Config
from ..spec import TuneSpec
from .objective import Objective


@dataclass
class TrialRecord:
    """One stored evaluation. ``number`` is the searcher's trial number (for a confirmation: the
    number of the trial it re-measures); ``counted`` says whether it used up budget."""

    number: int
    outcome: Outcome
    counted: bool
    cost_s: float
    wall_s: float = 0.0
    confirm_after: int | None = None  # confirmations: how many search trials the study had then

    @property
    def phase(self) -> str:
        return self.outcome.phase

    @property
    def is_confirm(self) -> bool:
        return self.confirm_after is not None


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


def _guarded(record: TrialRecord) -> bool:
    return record.outcome.status == TrialStatus.GUARDED


def _evaluated_crash(record: TrialRecord) -> bool:
    return record.outcome.status == TrialStatus.CRASH and (record.counted or record.is_confirm)


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
        evaluated=sum(1 for r in search if r.counted and not _guarded(r)),
        guarded=sum(1 for r in search if r.counted and _guarded(r)),
        reused=sum(1 for r in search if r.outcome.reused_from is not None),
        feasible=len(feasible),
        confirmations=len(confirms),
        crashes=dict(Counter(str(r.outcome.category) for r in records if _evaluated_crash(r))),
        guarded_by_category=dict(Counter(str(r.outcome.category) for r in originals if _guarded(r))),
    )  # fmt: skip
    return TuneResult(
        spec=spec, study_name=study_name, storage=storage, hardware=dict(hardware), vllm_version=vllm_version,
        fixed=dict(fixed), winner=winner, runner_ups=runner_ups, best_miss=best_miss, trials=list(records),
        counts=counts, total_cost_s=sum(r.cost_s for r in records), notes=notes,
    )  # fmt: skip
