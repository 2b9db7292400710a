"""The outcome of one tuning trial, and the one encoding every searcher shares.

``status`` is ``ok`` (every SLO met), ``slo_violation`` (measured, missed an SLO), ``crash`` (vLLM
failed: see ``category``) or ``guarded`` (predicted to fail at startup: never launched).

The constraint value on one normalized scale (≤ 0 feasible): an SLO miss is
``max_i(measured_i / threshold_i) − 1`` capped at ``MAX_SLO_VIOLATION``; a crash or a guarded point is
``CRASH_VIOLATION``, above every capped miss. So every crash ranks below every measured SLO miss, which
ranks below every feasible trial — the reference implementation had crashes at 100 while SLO misses
were in raw milliseconds, so a 150 ms miss ranked below a crash.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from .space import Config

MAX_SLO_VIOLATION = 10.0  # an 11× miss; larger misses are no more informative
CRASH_VIOLATION = 100.0
STATUSES = ("ok", "slo_violation", "crash", "guarded")


@dataclass
class Outcome:
    """Everything one trial produced; stored whole in the study so a study needs no process to read it."""

    status: str
    config: Config  # the repaired config that ran (or would have run)
    objective: float | None = None  # the objective's natural value (seconds for latency, req/s for capacity)
    violation: float = 0.0  # max_i(measured_i / threshold_i) − 1, raw (may exceed the cap)
    category: str | None = None
    root_cause: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    repair_notes: list[str] = field(default_factory=list)
    startup_s: float = 0.0
    measurement_s: float = 0.0
    phase: str = ""  # explore | exploit | random | grid | confirm
    kv_cache_tokens: int | None = None
    reused_from: int | None = None  # trial number whose outcome was reused (same repaired config)
    argv: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown outcome status {self.status!r}")

    @property
    def feasible(self) -> bool:
        return self.status == "ok"

    @property
    def failed(self) -> bool:
        """A crash or a predicted crash: no figures to learn the objective from."""
        return self.status in ("crash", "guarded")

    @property
    def cost_s(self) -> float:
        return self.startup_s + self.measurement_s

    @property
    def constraint(self) -> float:
        """The shared normalized violation (≤ 0 feasible; crashes above every SLO miss)."""
        if self.failed:
            return CRASH_VIOLATION
        if self.status == "ok":
            return min(self.violation, 0.0)
        if math.isnan(self.violation):
            return MAX_SLO_VIOLATION
        return min(max(self.violation, 1e-9), MAX_SLO_VIOLATION)

    def to_attrs(self) -> dict[str, Any]:
        """JSON-ready dict for Optuna user attrs."""
        data = asdict(self)
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
