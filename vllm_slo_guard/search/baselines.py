"""The searchers SLO-Guard is compared against: random search, vLLM's auto_tune grid, and cold TPE.

Each keeps the same determinism rule as SLO-Guard (``base``): random draws come from
``rng_for(seed, n, purpose)`` only, so a resumed study proposes what an uninterrupted one would.
"""

from __future__ import annotations

from typing import Any

from ..outcome import Outcome, TrialPhase
from ..space import Config, Space, vllm_defaults
from .base import SearchContext, rng_for
from .optuna_bridge import ask_config, replay_study, tpe_sampler

GRID_SEQS_FLOOR = 8  # vLLM's auto_tune never tries fewer than a handful of sequences
GRID_TOKENS_FLOOR = 512


class RandomSearcher:
    """Independent uniform sampling of every knob on its own (log or linear) scale."""

    name = "random"

    def __init__(self, context: SearchContext) -> None:
        self.context = context

    def ask(self, trial_number: int) -> tuple[Config, str]:
        return self.context.space.sample(rng_for(self.context.seed, trial_number)), TrialPhase.RANDOM

    def tell(self, trial_number: int, outcome: Outcome) -> None:
        """Random search learns nothing."""


def powers_of_two(low: float, high: float, floor: float) -> list[int]:
    """Powers of two in [low, high], dropping those below ``floor`` unless fewer than two would remain."""
    all_powers = [2**e for e in range(0, 31) if low <= 2**e <= high]
    kept = [p for p in all_powers if p >= floor]
    return kept if len(kept) >= 2 else all_powers


def default_config(space: Space, overrides: dict[str, Any]) -> Config:
    """vLLM's defaults (``space.vllm_defaults``) except ``overrides``; conditionals resolved in order."""
    base = {**vllm_defaults(space), **overrides}
    config: Config = {}
    for knob in space.knobs:
        if knob.active(config) and knob.name in base:
            config[knob.name] = base[knob.name]
    return config


def thin(points: list[Any], budget: int) -> list[Any]:
    """``budget`` points spread evenly over ``points`` (all of them when the budget allows)."""
    if budget >= len(points):
        return list(points)
    return [points[(i * len(points)) // budget] for i in range(budget)]


class GridSearcher:
    """vLLM's ``auto_tune`` recipe: a grid over max_num_seqs × max_num_batched_tokens, rest at defaults.

    The grid is the powers of two inside each knob's range (seqs ≥ 8, tokens ≥ 512 when the range
    allows), thinned evenly to the budget and visited in an order shuffled by the seed. When the grid
    is exhausted before the budget, the remaining trials are random samples (phase ``random``).
    """

    name = "grid"

    def __init__(self, context: SearchContext) -> None:
        self.context = context
        self.points = self._grid()

    def _grid(self) -> list[Config]:
        space = self.context.space
        axes: dict[str, list[int]] = {}
        for name, floor in (("max_num_seqs", GRID_SEQS_FLOOR), ("max_num_batched_tokens", GRID_TOKENS_FLOOR)):
            if name in space.names:
                knob = space.knob(name)
                assert knob.low is not None and knob.high is not None
                axes[name] = powers_of_two(knob.low, knob.high, floor) or [knob.default]
        seqs = axes.get("max_num_seqs", [None])
        tokens = axes.get("max_num_batched_tokens", [None])
        cells = [(s, t) for s in seqs for t in tokens]
        chosen = thin(cells, max(1, self.context.budget))
        rng_for(self.context.seed, 0, "grid").shuffle(chosen)
        points = []
        for s, t in chosen:
            overrides = {k: v for k, v in (("max_num_seqs", s), ("max_num_batched_tokens", t)) if v is not None}
            points.append(default_config(space, overrides))
        return points

    def ask(self, trial_number: int) -> tuple[Config, str]:
        if trial_number < len(self.points):
            return dict(self.points[trial_number]), TrialPhase.GRID
        return self.context.space.sample(rng_for(self.context.seed, trial_number)), TrialPhase.RANDOM

    def tell(self, trial_number: int, outcome: Outcome) -> None:
        """A grid learns nothing."""


class TpeSearcher:
    """Cold constrained TPE (no annealing warm-up): Optuna's startup randoms, then multivariate TPE.

    Every ask replays the whole history into a fresh study with a sampler seeded for this trial, so the
    proposal depends only on what was told (exact resume) at O(n) cost per ask.
    """

    name = "tpe"

    def __init__(self, context: SearchContext) -> None:
        self.context = context
        self.n_startup_trials = max(3, context.budget // 5)
        self.history: list[tuple[int, Outcome]] = []

    def ask(self, trial_number: int) -> tuple[Config, str]:
        seed = rng_for(self.context.seed, trial_number, "tpe").getrandbits(32)
        study = replay_study(self.context, self.history, tpe_sampler(seed, self.n_startup_trials))
        return ask_config(study, self.context.space), TrialPhase.TPE

    def tell(self, trial_number: int, outcome: Outcome) -> None:
        if outcome.reused_from is None:  # a repeated config is replayed once
            self.history.append((trial_number, outcome))
