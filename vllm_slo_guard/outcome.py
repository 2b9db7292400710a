"""The outcome of one tuning trial, and the one encoding every searcher shares.

``status`` is ``ok`` (every SLO met), ``slo_violation`` (measured, missed an SLO), ``crash`` (vLLM
failed, or more than 1% of its requests did: see ``category``) or ``guarded`` (predicted to fail at
startup: never launched). A measurement with failed requests is never a near-miss.

The constraint value on one normalized scale (≤ 0 feasible): an SLO miss is
``max_i(measured_i / threshold_i) − 1`` capped at ``MAX_SLO_VIOLATION``; a crash or a guarded point is
``CRASH_VIOLATION``, above every capped miss. So every crash ranks below every measured SLO miss, which
ranks below every feasible trial — the reference implementation had crashes at 100 while SLO misses
were in raw milliseconds, so a 150 ms miss ranked below a crash.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from .space import Config

MAX_SLO_VIOLATION = 10.0  # an 11× miss; larger misses are no more informative
CRASH_VIOLATION = 100.0

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover - exercised on Python 3.10 only

    class StrEnum(str, Enum):
        """``enum.StrEnum`` of Python 3.11: members are their values, also in f-strings."""

        def __str__(self) -> str:
            return str(self.value)


class TrialStatus(StrEnum):
    """What became of one trial (equal to its plain string, which is what the study stores)."""

    OK = "ok"
    SLO_VIOLATION = "slo_violation"
    CRASH = "crash"
    GUARDED = "guarded"


class TrialPhase(StrEnum):
    """Which part of our searchers proposed a trial (``UNSET`` until the loop assigns it)."""

    UNSET = ""
    EXPLORE = "explore"  # SLO-Guard's feasible-first annealing
    EXPLOIT = "exploit"  # SLO-Guard's warm-started TPE and local moves
    RANDOM = "random"
    GRID = "grid"
    TPE = "tpe"
    CONFIRM = "confirm"  # a re-measurement of a top config


STATUSES = tuple(TrialStatus)


def phase_label(label: str) -> str:
    """``label`` as a :class:`TrialPhase` when it is one of ours; a custom searcher may name its own."""
    try:
        return TrialPhase(label)
    except ValueError:
        return label


@dataclass
class Outcome:
    """Everything one trial produced; stored whole in the study so a study needs no process to read it."""

    status: TrialStatus
    config: Config  # the repaired config that ran (or would have run)
    objective: float | None = None  # the objective's natural value (seconds for latency, req/s for capacity)
    violation: float = 0.0  # max_i(measured_i / threshold_i) − 1, raw (may exceed the cap)
    category: str | None = None
    root_cause: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    repair_notes: list[str] = field(default_factory=list)
    startup_s: float = 0.0
    measurement_s: float = 0.0
    phase: str = TrialPhase.UNSET  # a TrialPhase, or a custom searcher's own label
    kv_cache_tokens: int | None = None
    reused_from: int | None = None  # trial number whose outcome was reused (same repaired config)
    argv: list[str] = field(default_factory=list)
    crash_rule: str | None = None  # the crash classifier's rule that decided (a crash of a launched server)
    refused_flags: list[str] = field(default_factory=list)  # the flags an argparse refusal named

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown outcome status {self.status!r}")
        self.status = TrialStatus(self.status)
        self.phase = phase_label(self.phase)

    @property
    def feasible(self) -> bool:
        return self.status == TrialStatus.OK

    @property
    def failed(self) -> bool:
        """A crash or a predicted crash: no figures to learn the objective from."""
        return self.status in (TrialStatus.CRASH, TrialStatus.GUARDED)

    @property
    def cost_s(self) -> float:
        return self.startup_s + self.measurement_s

    @property
    def constraint(self) -> float:
        """The shared normalized violation (≤ 0 feasible; crashes above every SLO miss)."""
        if self.failed:
            return CRASH_VIOLATION
        if self.status == TrialStatus.OK:
            return min(self.violation, 0.0)
        if math.isnan(self.violation):
            return MAX_SLO_VIOLATION
        return min(max(self.violation, 1e-9), MAX_SLO_VIOLATION)

    def to_attrs(self) -> dict[str, Any]:
        """JSON-ready dict for Optuna user attrs."""
        data = asdict(self)
        data["status"], data["phase"] = str(self.status), str(self.phase)
        data["objective"] = _finite_or_none(self.objective)
        data["violation"] = _finite_or_none(self.violation)
        return data

    @classmethod
    def from_attrs(cls, data: dict[str, Any]) -> Outcome:
        data = dict(data)
        if data.get("violation") is None:
            data["violation"] = math.inf
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def _finite_or_none(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def rank_key(outcome: Outcome, minimize: bool = True) -> tuple[float, float]:
    """Sort key, best first: feasible by objective, then SLO misses by violation, then failures."""
    if outcome.feasible and outcome.objective is not None:
        return (-1.0, outcome.objective if minimize else -outcome.objective)
    return (outcome.constraint, 0.0)
