"""The contract every searcher keeps: ``ask`` a config for trial n, be ``tell``-ed its outcome.

Determinism and resume: a searcher's state must be a function of the outcomes it was told, in trial
order, and of ``rng_for(seed, n, purpose)`` draws only. Re-running a stored study therefore rebuilds the
exact state by replaying ``tell`` for the finished trials, and the next ``ask`` proposes what an
uninterrupted run would have proposed (the reference implementation lost its RNG state on resume and
proposed trials 1..k again).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..outcome import Outcome
from ..space import Config, Space, config_key
from ..spec import Slo


def rng_for(seed: int, trial_number: int, purpose: str = "ask") -> random.Random:
    """An RNG that depends only on (seed, trial number, purpose): reproducible across resumes."""
    digest = hashlib.sha256(f"{seed}:{trial_number}:{purpose}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


@dataclass(frozen=True)
class SearchContext:
    """What a searcher knows about the problem."""

    space: Space
    seed: int
    budget: int  # total trials of the study
    minimize: bool = True  # latency: minimize; capacity: maximize
    # The tuner's repair (proposal → the config that would run). Searchers that avoid re-proposing an
    # evaluated config compare repaired keys when it is given; without it they can only compare the
    # unrepaired proposal, and two proposals that repair alike slip through (the tuner then reuses).
    canonical: Callable[[Config], Config] | None = field(default=None, compare=False)
    # The memory guard without its safety margin: True when the config is predicted not to start. The
    # tuner only skips failures the guard is sure of (they persist with 5% more memory); a searcher
    # may also steer away from the borderline ones, which are the launched crashes.
    startup_risk: Callable[[Config], bool] | None = field(default=None, compare=False)
    # The SLOs (the first is the latency objective's metric): a searcher may read from a miss's metrics
    # which SLO it missed, and which way a knob should move.
    slos: tuple[Slo, ...] = ()


def predicted_to_fail(context: SearchContext, config: Config) -> bool:
    """Whether the context's guard predicts ``config`` not to start (False when it has no guard)."""
    return context.startup_risk is not None and context.startup_risk(config)


def repaired_key(context: SearchContext, config: Config) -> str:
    """The key the tuner will deduplicate ``config`` by (its repaired form when the context can repair)."""
    return config_key(context.canonical(config) if context.canonical is not None else config)


class Searcher(Protocol):
    """Proposes configs and learns from outcomes (see the module docstring for the determinism rule)."""

    name: str

    def ask(self, trial_number: int) -> tuple[Config, str]:
        """A config to evaluate as trial ``trial_number`` (0-based) and the phase label it belongs to."""
        ...

    def tell(self, trial_number: int, outcome: Outcome) -> None:
        """The outcome of trial ``trial_number`` (its config is the *repaired* one that ran)."""
        ...
