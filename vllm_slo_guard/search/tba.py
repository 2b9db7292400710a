"""Thermal Budget Annealing (TBA): feasible-first simulated annealing, SLO-Guard's exploration phase.

Why annealing first: with a handful of points a model of the landscape is guesswork, while a local
walk from the best point found so far mostly stays where vLLM starts and meets the SLO. The walk is
*feasible-first* (lexicographic): until a feasible point is seen it minimises the shared normalized
violation (``Outcome.constraint``: crashes and guarded points at 100, SLO misses in (0, 10]); from the
first feasible point on it optimises the objective among feasible points only, and infeasible results
just cool or reheat the temperature.

Fixes to the reference (slo-guard-reference.md §1, §9):
- acceptance ``exp(−Δ/(T·scale))`` on the normalized violation (scale 1), not raw milliseconds
  (whose scale ≈ 1020 made every move acceptable), and for objectives on the observed feasible range;
- neighbour steps on each knob's own scale (log knobs move in log space; no ±1 integer steps);
- an already evaluated (repaired) config is never proposed again (single-choice categoricals,
  elite restarts and plain collisions re-ran configs in the reference): proposals are compared with
  the told configs by their repaired key when the context carries the tuner's repair
  (``SearchContext.canonical``), else unrepaired (and the tuner reuses the outcome of a repeat);
- one knob moves per step and the knobs take turns in a seeded order (knob rotation): near vLLM's
  defaults single-knob changes (fp8 KV cache, a smaller token budget, chunked prefill off) decide
  most scenarios of the study, and a random pick left some knobs unvisited for a whole run;
- a quarter of the numeric moves jump 1–3 octaves (a third of the range or more on linear knobs): the
  best values often sit at a range end (e.g. the smallest token budget for a TPOT SLO), beyond the
  reach of a temperature-scaled Gaussian step;
- a reheat never cools (the reference's ``min(2.5·T, 0.8)`` lowered T when T > 0.8);
- the crash blacklist is soft (see :class:`CrashMemory`);
- all randomness comes from ``rng_for(seed, n, purpose)``, and the state is a function of the told
  outcomes only, so a resumed run continues exactly.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from ..outcome import Outcome, rank_key
from ..space import Config, Knob, Space, config_key, vllm_defaults
from .base import SearchContext, predicted_to_fail, repaired_key, rng_for

T_INIT = 1.0
T_MIN = 0.001
T_SWITCH = 0.7  # × T_INIT when the first feasible point arrives: the walk restarts from it, a bit cooler
COOL = 0.92  # × T on an improvement over the current point
REHEAT = 2.5  # × T after PATIENCE non-improvements ...
REHEAT_CAP = 0.8  # ... but at most this × T_INIT (and never below the current T)
PATIENCE = 4
VIOLATION_SCALE = 1.0  # the normalized violation is already "1 = a 2× miss"
NEIGHBOUR_RETRIES = 20
RANDOM_RETRIES = 50
NUMERIC_RISK_DRAWS = 3  # a numeric step into a crash-prone half is redrawn up to this many times
BOLD_SHARE = 0.25  # share of numeric moves that jump 1–3 octaves instead of a temperature-scaled step
MIN_MOVE_WEIGHT = 0.02  # a structural value is never excluded outright


def default_initial_random(budget: int) -> int:
    """Three random starts, fewer (at least one) when the budget is tiny."""
    return max(1, min(3, budget // 4))


def _bold_step(knob: Knob, value: Any, rng: random.Random) -> Any:
    """A scale-free jump: 1 to 3 octaves on a log knob (a third to all of the range on a linear one)."""
    assert knob.low is not None and knob.high is not None
    direction = rng.choice((-1.0, 1.0))
    if knob.log:
        return knob.clip(max(value, knob.low) * 2.0 ** (direction * rng.randint(1, 3)))
    return knob.clip(value + direction * rng.uniform(1 / 3, 1.0) * (knob.high - knob.low))


def _numeric(knob: Knob) -> bool:
    return knob.kind in ("int", "float")


@dataclass
class CrashMemory:
    """Where crashes (and guarded points) happened: a soft version of the reference's blacklist.

    Counts ``[failures, trials]`` per (knob, value) for categoricals and bools, and per (knob, half of
    the range on the knob's own scale) for numbers. ``risk`` is ``failures / (trials + 2)``, a shrunk
    failure rate (0 for unseen values, 0.6 after three crashes in three). Moves are biased away from
    risky values in proportion, rather than banned for a fixed cooldown as in the reference, because a
    value rarely crashes on its own: vLLM's failures come from combinations (high memory utilization
    *and* a large block size), so a hard ban also removes the good half of the combinations.
    """

    counts: dict[tuple[str, Any], list[int]] = field(default_factory=dict)

    @staticmethod
    def region(knob: Knob, value: Any) -> Any:
        if not _numeric(knob):
            return value
        assert knob.low is not None and knob.high is not None
        mid = math.sqrt(knob.low * knob.high) if knob.log else (knob.low + knob.high) / 2
        return "low" if value < mid else "high"

    def record(self, space: Space, config: Config, failed: bool) -> None:
        for knob in space.knobs:
            if knob.name in config:
                entry = self.counts.setdefault((knob.name, self.region(knob, config[knob.name])), [0, 0])
                entry[0] += int(failed)
                entry[1] += 1

    def risk(self, knob: Knob, value: Any) -> float:
        failures, trials = self.counts.get((knob.name, self.region(knob, value)), (0, 0))
        return failures / (trials + 2)

    def config_risk(self, space: Space, config: Config) -> float:
        return max((self.risk(k, config[k.name]) for k in space.knobs if k.name in config), default=0.0)


def inside(space: Space, config: Config) -> Config:
    """The config with every value inside its knob's range or choices (a repaired config may step out)."""
    out: Config = {}
    for name, value in config.items():
        knob = space.knob(name)
        if _numeric(knob):
            out[name] = knob.clip(value)
        elif value in knob.values:
            out[name] = value
        else:
            out[name] = knob.default if knob.default in knob.values else knob.values[0]
    return out


class TbaSearcher:
    """Feasible-first simulated annealing with random starts, crash memory and no repeated configs.

    Args:
        context: the space, seed and budget.
        n_initial_random: random starts before annealing (default: 3, fewer for tiny budgets).
        phase: the phase label of its proposals.
        start_from_defaults: trial 0 is vLLM's own default config — the operator's status quo, often
            already feasible, so the walk starts from a known point and the result is never
            worse than not tuning.
    """

    name = "tba"

    def __init__(
        self,
        context: SearchContext,
        *,
        n_initial_random: int | None = None,
        phase: str = "explore",
        start_from_defaults: bool = True,
    ) -> None:
        self.context = context
        self.start_from_defaults = start_from_defaults
        self.n_initial_random = (
            default_initial_random(context.budget) if n_initial_random is None else max(1, n_initial_random)
        )
        self.phase = phase
        self.temperature = T_INIT
        self.no_improve = 0
        self.current: Outcome | None = None  # the walk's position: never a failure
        self.best: Outcome | None = None  # the best non-failed outcome (rank_key)
        self.found_feasible = False
        self.crashes = CrashMemory()
        self.seen: set[str] = set()  # keys of the evaluated (repaired) configs
        self.feasible_objectives: list[float] = []

    @property
    def space(self) -> Space:
        return self.context.space

    # --- ask ----------------------------------------------------------------------------------------

    def ask(self, trial_number: int) -> tuple[Config, str]:
        rng = rng_for(self.context.seed, trial_number, "tba")
        if trial_number == 0 and self.start_from_defaults:
            return vllm_defaults(self.space), self.phase
        if trial_number < self.n_initial_random or self.current is None:
            return self.random_unseen(rng), self.phase
        return self.neighbour_unseen(self.current.config, trial_number, rng), self.phase

    def neighbour_unseen(self, config: Config, trial_number: int, rng: random.Random) -> Config:
        """A neighbour of ``config`` not evaluated yet, preferring one the guard predicts to start: up to
        20 tries, then the first unseen but risky one, then a random unseen config."""
        fallback: Config | None = None
        for attempt in range(NEIGHBOUR_RETRIES):
            candidate = self.neighbour(config, trial_number, rng, offset=attempt)
            if repaired_key(self.context, candidate) in self.seen:
                continue
            if not predicted_to_fail(self.context, candidate):
                return candidate
            fallback = fallback or candidate
        return fallback if fallback is not None else self.random_unseen(rng)

    def random_unseen(self, rng: random.Random) -> Config:
        """A random config not evaluated yet, preferring ones the guard predicts to start and ones outside
        crash-prone regions."""
        fallback: Config | None = None
        for _ in range(RANDOM_RETRIES):
            candidate = self.space.sample(rng)
            if repaired_key(self.context, candidate) in self.seen:
                continue
            if fallback is None:
                fallback = candidate
            if predicted_to_fail(self.context, candidate):
                continue
            if rng.random() >= self.crashes.config_risk(self.space, candidate):
                return candidate
        return fallback if fallback is not None else self.space.sample(rng)

    def neighbour(self, config: Config, trial_number: int, rng: random.Random, offset: int = 0) -> Config:
        """One move of one knob, the knobs taking turns (``_rotation_knob``): another choice for a
        categorical/bool, a step on its own scale for a number."""
        knobs = [self.space.knob(name) for name in config if name in self.space.names]
        structural = [k for k in knobs if not _numeric(k) and len(k.values) > 1]
        numeric = [k for k in knobs if _numeric(k)]
        new = dict(config)
        movable = structural + numeric
        for turn in range(len(movable)):
            knob = self._rotation_knob(movable, trial_number + offset + turn)
            move = self._numeric_move if _numeric(knob) else self._structural_move
            value = move(knob, config[knob.name], rng)
            # a move into a crash-prone value passes its turn to the next knob with that probability
            if turn == len(movable) - 1 or rng.random() >= self.crashes.risk(knob, value):
                new[knob.name] = value
                break
        return inside(self.space, self.space.resolve(new, rng))

    def _rotation_knob(self, knobs: list[Knob], step: int) -> Knob:
        """Knob rotation: every knob moves once per cycle, in a seeded order per cycle."""
        names = sorted(k.name for k in knobs)
        cycle, position = divmod(step, len(names))
        rng_for(self.context.seed, cycle, "rotation").shuffle(names)
        return next(k for k in knobs if k.name == names[position])

    def _structural_move(self, knob: Knob, value: Any, rng: random.Random) -> Any:
        """Another choice of ``knob``; crash-prone choices weigh less."""
        others = [v for v in knob.values if v != value]
        weights = [max(MIN_MOVE_WEIGHT, (1.0 - self.crashes.risk(knob, v)) ** 2) / len(others) for v in others]
        return rng.choices(others, weights=weights)[0]

    def _numeric_move(self, knob: Knob, value: Any, rng: random.Random) -> Any:
        if rng.random() < BOLD_SHARE:
            return _bold_step(knob, value, rng)
        candidate = knob.neighbour(value, self.temperature, rng)
        for _ in range(NUMERIC_RISK_DRAWS - 1):
            if rng.random() >= self.crashes.risk(knob, candidate):
                break
            candidate = knob.neighbour(value, self.temperature, rng)
        return candidate

    # --- tell ---------------------------------------------------------------------------------------

    def tell(self, trial_number: int, outcome: Outcome) -> None:
        self.seen.add(config_key(outcome.config))
        objective = _objective(outcome)
        if outcome.reused_from is None:  # a reused outcome (repeated repaired config) is no new evidence
            self.crashes.record(self.space, outcome.config, outcome.failed)
            if outcome.feasible and objective is not None:
                self.feasible_objectives.append(objective)
        if not outcome.failed and (self.best is None or self._better(outcome, self.best)):
            self.best = outcome
        if trial_number < self.n_initial_random:
            self._greedy(outcome)
        elif not self.found_feasible:
            self._feasibility_step(trial_number, outcome)
        else:
            self._optimization_step(trial_number, outcome)

    def _better(self, a: Outcome, b: Outcome) -> bool:
        return rank_key(a, self.context.minimize) < rank_key(b, self.context.minimize)

    def _greedy(self, outcome: Outcome) -> None:
        """Random starts: keep the lexicographically best as the starting point, leave T alone."""
        if outcome.failed:
            return
        if outcome.feasible and _objective(outcome) is not None and not self.found_feasible:
            self._switch(outcome)
        elif self.current is None or self._better(outcome, self.current):
            self.current = outcome

    def _switch(self, outcome: Outcome) -> None:
        self.found_feasible = True
        self.current = outcome
        self.temperature = T_SWITCH * T_INIT
        self.no_improve = 0

    def _feasibility_step(self, trial_number: int, outcome: Outcome) -> None:
        if outcome.feasible and _objective(outcome) is not None:
            self._switch(outcome)
            return
        if outcome.failed:
            self._update_temperature(improved=False)
            return
        if self.current is None:
            self.current = outcome
            self._update_temperature(improved=True)
            return
        delta = outcome.constraint - self.current.constraint
        self._anneal(trial_number, outcome, delta, VIOLATION_SCALE)

    def _optimization_step(self, trial_number: int, outcome: Outcome) -> None:
        objective = _objective(outcome)
        if not outcome.feasible or objective is None or self.current is None:
            self._update_temperature(improved=False)
            return
        current = _objective(self.current)
        assert current is not None
        delta = objective - current if self.context.minimize else current - objective
        self._anneal(trial_number, outcome, delta, self.objective_scale(current))

    def objective_scale(self, current: float) -> float:
        """The observed feasible range, or 10% of the current objective with fewer than two feasible points."""
        objs = self.feasible_objectives
        spread = max(objs) - min(objs) if len(objs) >= 2 else 0.0
        if spread <= 0:
            spread = 0.1 * abs(current)
        return max(spread, 1e-9)

    def _anneal(self, trial_number: int, outcome: Outcome, delta: float, scale: float) -> None:
        """Metropolis: accept an improvement, a worse point with probability exp(−Δ/(T·scale))."""
        if delta < 0:
            self.current = outcome
            self._update_temperature(improved=True)
            return
        draw = rng_for(self.context.seed, trial_number, "accept").random()
        if draw < math.exp(-delta / (self.temperature * scale)):
            self.current = outcome
        self._update_temperature(improved=False)

    def _update_temperature(self, *, improved: bool) -> None:
        if improved:
            self.temperature = max(self.temperature * COOL, T_MIN)
            self.no_improve = 0
            return
        self.no_improve += 1
        if self.no_improve >= PATIENCE:
            self.temperature = max(self.temperature, min(REHEAT * self.temperature, REHEAT_CAP * T_INIT))
            self.no_improve = 0


def _objective(outcome: Outcome) -> float | None:
    value = outcome.objective
    return value if value is not None and math.isfinite(value) else None
