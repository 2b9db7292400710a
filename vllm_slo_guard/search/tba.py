"""Thermal Budget Annealing (TBA): feasible-first simulated annealing, SLO-Guard's exploration phase.

Why annealing first: with a handful of points a model of the landscape is guesswork, while a local
walk from the best point found so far mostly stays where vLLM starts and meets the SLO. The walk is
*feasible-first* (lexicographic): until a feasible point is seen it minimises the shared normalized
violation (``Outcome.constraint``: crashes and guarded points at 100, SLO misses in (0, 10]); from the
first feasible point on it optimises the objective among feasible points only, and infeasible results
just cool or reheat the temperature.

Fixes to the reference (SLO-Guard's own implementation, github.com/Chrislysen/SLO-Guard,
``optimizer/tba_tpe_hybrid.py``), which judged moves by SLO violations in raw milliseconds, stepped every
number on a linear scale (even log knobs; half of its integer steps were ±1), re-ran configs it had already
evaluated, could lower the temperature when reheating, banned a value for a fixed cooldown after three
failures, and did not restore its random state on resume:
- acceptance ``exp(−Δ/(T·scale))`` on the normalized violation (scale 0.25: at T = 1 a move half a
  2× miss worse was accepted 60% of the time with scale 1, and the walk wandered off), not raw milliseconds
  (whose scale ≈ 1020 made every move acceptable), and for objectives on the observed feasible range;
- neighbour steps on each knob's own scale (log knobs move in log space; no ±1 integer steps);
- an already evaluated (repaired) config is never proposed again (single-choice categoricals,
  elite restarts and plain collisions re-ran configs in the reference): proposals are compared with
  the told configs by their repaired key when the context carries the tuner's repair
  (``SearchContext.canonical``), else unrepaired (and the tuner reuses the outcome of a repeat);
- one knob moves per step and every knob gets one turn per cycle (knob rotation; the first cycle in
  ``FIRST_CYCLE`` order, later ones seeded): near vLLM's defaults the large gains are single-knob
  changes (fp8 KV cache, a smaller token budget, chunked prefill off), and a random pick can leave a
  knob unvisited for a whole run;
- a quarter of the numeric moves jump 1–3 octaves (a third of the range or more on linear knobs): the
  best values often sit at a range end (e.g. the smallest token budget for a TPOT SLO), beyond the
  reach of a temperature-scaled Gaussian step;
- a reheat never cools (the reference's ``min(2.5·T, 0.8)`` lowered T when T > 0.8);
- a numeric move that improved on its parent is repeated from the new point with a doubled step after
  each success, and one that made things worse is tried the other way once (:class:`Pattern`, the
  pattern and reflection moves of compass search), until a repeat stops helping: a walk toward a
  range end (e.g. a smaller token budget to meet a TPOT SLO) otherwise waits a whole knob rotation
  for its next step;
- the first probe from a point that misses an SLO moves the token budget the way vLLM's tuning guide
  says helps the missed metric (:func:`budget_hint`: smaller for TPOT/ITL, larger for TTFT), and so
  does the first probe from the first feasible point of a TPOT/ITL objective; the compass then repeats
  it as above. Without the hint the walk learns the budget's direction only by trial, and a tight TPOT
  SLO that only a much smaller budget meets can stay missed for the whole run (the study's figures:
  ``docs/study.md``);
- the crash blacklist is soft (see :class:`CrashMemory`);
- all randomness comes from ``rng_for(seed, n, purpose)``, and the state is a function of the told
  outcomes only, so a resumed run continues exactly.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from ..outcome import Outcome, TrialPhase, rank_key
from ..space import Config, Knob, Space, config_key, vllm_defaults
from .base import SearchContext, predicted_to_fail, repaired_key, rng_for

T_INIT = 1.0
T_MIN = 0.001
T_SWITCH = 0.7  # × T_INIT when the first feasible point arrives: the walk restarts from it, a bit cooler
COOL = 0.92  # × T on an improvement over the current point
REHEAT = 2.5  # × T after PATIENCE non-improvements ...
REHEAT_CAP = 0.8  # ... but at most this × T_INIT (and never below the current T)
PATIENCE = 4
VIOLATION_SCALE = 0.25  # at T = 1 a move a quarter of a 2× miss worse is accepted with p = 1/e
NEIGHBOUR_RETRIES = 20
RANDOM_RETRIES = 50
NUMERIC_RISK_DRAWS = 3  # a numeric step into a crash-prone half is redrawn up to this many times
BOLD_SHARE = 0.25  # share of numeric moves that jump 1–3 octaves instead of a temperature-scaled step
MIN_MOVE_WEIGHT = 0.02  # a structural value is never excluded outright
# The first rotation visits the knobs in the order vLLM's optimization guide and our study found them to
# matter (KV cache precision and batching first; block size and the graph capture size rarely move
# latency), so a 15-trial budget reaches the big levers before the small ones; later rotations are seeded.
FIRST_CYCLE = (
    "kv_cache_dtype", "max_num_seqs", "optimization_level", "enable_chunked_prefill", "max_num_batched_tokens",
    "kv_cache_memory_bytes", "gpu_memory_utilization", "enable_prefix_caching", "max_cudagraph_capture_size",
    "block_size",
)  # fmt: skip
TOKEN_BUDGET = "max_num_batched_tokens"
# vLLM's optimization guide on chunked prefill: a smaller token budget gives better inter-token latency
# (fewer prefill tokens slow each decode step), a larger one better time to first token
BUDGET_HINTS = {"tpot": 0.5, "itl": 0.5, "ttft": 2.0}


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


@dataclass(frozen=True)
class Pattern:
    """A numeric move to repeat: the next neighbour of ``anchor`` moves ``knob`` by ``step`` again.

    Set after a one-knob move improved on its parent (anchor: the new point, same step, doubled when
    the move was itself a repeat) or made it worse (anchor: the parent, the opposite step); a repeat
    that lands on a plateau (exactly as good) goes on with a doubled step. When a
    doubled repeat does not help, half of the step it actually took (after clipping) is tried once
    from the same point (8192 → 4096 → 1024 → 256 overshoots, then 512); any other repeat that does
    not help ends the pattern.

    ``step`` is a factor on a log knob and a difference on a linear one. It is learnt in ``tell`` from
    the outcomes alone (parent: the walk's current point, else the best told point, that differs from
    the new config in this one knob), so a resumed run rebuilds it.
    """

    anchor: str  # config key of the point the repeat starts from
    knob: str
    step: float
    expanded: bool = False  # the step was doubled after a success: a failure halves it once

    def apply(self, space: Space, config: Config) -> Config | None:
        """``config`` with the move repeated, or None when the knob already sits at its range end."""
        knob = space.knob(self.knob)
        value = config.get(self.knob)
        if value is None:
            return None
        moved = knob.clip(value * self.step if knob.log else value + self.step)
        if moved == value:
            return None
        return {**config, self.knob: moved}


def _scaled(knob: Knob, step: float, times: float) -> float:
    """``step`` made ``times`` as long: a factor is raised to that power, a difference multiplied."""
    return step**times if knob.log else step * times


def differing(space: Space, a: Config, b: Config) -> set[str]:
    """The tuned knobs whose values (or presence) differ between two configs."""
    return {name for name in space.names if a.get(name) != b.get(name)}


def single_numeric_move(space: Space, parent: Config, child: Config) -> tuple[Knob, Any, Any] | None:
    """(knob, old, new) when ``child`` differs from ``parent`` in exactly one numeric knob, else None."""
    changed = differing(space, parent, child)
    if len(changed) != 1:
        return None
    knob = space.knob(changed.pop())
    old, new = parent.get(knob.name), child.get(knob.name)
    if not _numeric(knob) or old is None or new is None or (knob.log and old <= 0):
        return None
    return knob, old, new


def budget_hint(context: SearchContext, outcome: Outcome) -> float | None:
    """The factor on the token budget that should help ``outcome``: for an SLO miss the worst-missed
    metric's direction, for a feasible point a TPOT/ITL objective's; None when there is no hint."""
    if TOKEN_BUDGET not in outcome.config or not context.slos or not outcome.metrics:
        return None
    if outcome.feasible:  # only TPOT/ITL: past the longest prompt a larger budget can slow TTFT again
        metric = context.slos[0].metric if context.minimize and context.slos[0].metric in ("tpot", "itl") else None
    elif outcome.status == "slo_violation":
        metric = max(context.slos, key=lambda slo: slo.violation(outcome.metrics)).metric
    else:
        metric = None
    return BUDGET_HINTS.get(metric) if metric is not None else None


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
        phase: TrialPhase = TrialPhase.EXPLORE,
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
        self.points: list[Outcome] = []  # the evaluated, non-failed outcomes (parents of patterns)
        self.pattern: Pattern | None = None
        self.hinted: set[str] = set()  # points whose first probe was a budget hint
        self.cycle = 0  # knob rotation: the cycle, and the knobs that had their turn in it
        self.visited: set[str] = set()
        self.objective_hinted = False

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
        """A neighbour of ``config`` not evaluated yet, preferring one the guard predicts to start: the
        pattern move when ``config`` is its anchor, else up to 20 tries, then the first unseen but risky
        one, then a random unseen config."""
        repeat = self._pattern_move(config)
        if repeat is not None:
            return repeat
        fallback: Config | None = None
        for attempt in range(NEIGHBOUR_RETRIES):
            candidate = self.neighbour(config, trial_number, rng, offset=attempt)
            if repaired_key(self.context, candidate) in self.seen:
                continue
            if not predicted_to_fail(self.context, candidate):
                return candidate
            fallback = fallback or candidate
        return fallback if fallback is not None else self.random_unseen(rng)

    def _pattern_move(self, config: Config) -> Config | None:
        if self.pattern is None or self.pattern.anchor != config_key(config):
            return None
        moved = self.pattern.apply(self.space, config)
        if moved is None:
            return None
        # one numeric knob changed, so no condition changed with it; only the tuned knobs are proposed
        candidate = inside(self.space, {k: v for k, v in moved.items() if k in self.space.names})
        if repaired_key(self.context, candidate) in self.seen or predicted_to_fail(self.context, candidate):
            return None
        return candidate

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
        knobs = [k for k in self.space.knobs if k.active(config)]  # also the ones left to vLLM (absent)
        structural = [k for k in knobs if not _numeric(k) and len(k.values) > 1]
        numeric = [k for k in knobs if _numeric(k)]
        new = dict(config)
        movable = structural + numeric
        for turn in range(len(movable)):
            knob = self._rotation_knob(movable, offset + turn)
            if knob.name not in config:
                value = knob.sample(rng)  # a vLLM-derived value becomes an explicit one
            else:
                move = self._numeric_move if _numeric(knob) else self._structural_move
                value = move(knob, config[knob.name], rng)
            # a move into a crash-prone value passes its turn to the next knob with that probability
            if turn == len(movable) - 1 or rng.random() >= self.crashes.risk(knob, value):
                new[knob.name] = value
                break
        return inside(self.space, self.space.resolve(new, rng, before=config))

    def _rotation_knob(self, knobs: list[Knob], skip: int) -> Knob:
        """Knob rotation: the next knob of this cycle's order that has not moved yet in this cycle (``skip``
        passes over that many more, for retries). The first cycle follows ``FIRST_CYCLE``; later cycles
        take a seeded order each. Which knobs moved is learnt in ``tell`` (:meth:`_mark_visited`), so
        hints and pattern moves count as turns and a resumed run continues the same cycle."""
        names = [k.name for k in knobs]
        remaining = [n for n in self._cycle_order(self.cycle, names) if n not in self.visited]
        order = remaining + [n for n in self._cycle_order(self.cycle + 1, names) if n not in remaining]
        name = order[skip % len(order)]
        return next(k for k in knobs if k.name == name)

    def _cycle_order(self, cycle: int, names: list[str]) -> list[str]:
        ordered = sorted(names)
        if cycle == 0:
            ordered.sort(key=lambda n: FIRST_CYCLE.index(n) if n in FIRST_CYCLE else len(FIRST_CYCLE))
        else:
            rng_for(self.context.seed, cycle, "rotation").shuffle(ordered)
        return ordered

    def _mark_visited(self, config: Config) -> None:
        """Count a told config that is a one-knob move (or a two-knob one, where a repair moved the second)
        from the walk's point or the best point as that knob's turn; a cycle ends when every movable knob
        had one."""
        starts = [o.config for o in (self.current, self.best) if o is not None]
        if not starts:
            return
        changed = min((differing(self.space, start, config) for start in starts), key=len)
        if not 1 <= len(changed) <= 2:
            return
        # a repair moves a number after a choice (chunked prefill off raises the token budget, -O0 drops the
        # capture size): the choice was the move, and the number keeps its turn
        choices = {name for name in changed if not _numeric(self.space.knob(name))}
        self.visited |= choices or changed
        movable = {k.name for k in self.space.knobs if k.active(config) and (_numeric(k) or len(k.values) > 1)}
        if movable <= self.visited:
            self.cycle += 1
            self.visited = set()

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
            self._mark_visited(outcome.config)
            self._learn_pattern(outcome)
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
        self._hint()

    def _hint(self) -> None:
        """Make the walk's next probe from a new current point the token-budget hint (at most once per
        point, and for the objective only once per run)."""
        point = self.current
        if point is None:
            return
        anchor = config_key(point.config)
        if anchor in self.hinted or (self.pattern is not None and self.pattern.anchor == anchor):
            return
        if point.feasible and self.objective_hinted:
            return
        factor = budget_hint(self.context, point)
        if factor is None:
            return
        self.hinted.add(anchor)
        self.objective_hinted = self.objective_hinted or point.feasible
        self.pattern = Pattern(anchor, TOKEN_BUDGET, factor)

    def _learn_pattern(self, outcome: Outcome) -> None:
        """Learn the :class:`Pattern` from a one-knob numeric move away from a told point."""
        parent = self._parent(outcome.config)
        if not outcome.failed:
            self.points.append(outcome)
        move = single_numeric_move(self.space, parent.config, outcome.config) if parent is not None else None
        if parent is None or move is None:
            return
        knob, old, new = move
        start = config_key(parent.config)
        step = new / old if knob.log else new - old
        pending = self.pattern
        repeated = pending is not None and (pending.anchor, pending.knob) == (start, knob.name)
        if not outcome.failed and self._better(outcome, parent):
            if repeated:  # a repeat that helped again: double the step
                self.pattern = Pattern(config_key(outcome.config), knob.name, _scaled(knob, step, 2.0), True)
            else:
                self.pattern = Pattern(config_key(outcome.config), knob.name, step)
        elif repeated and not outcome.failed and not self._better(parent, outcome):
            # a plateau (as good as its parent): keep going, with a doubled step
            self.pattern = Pattern(config_key(outcome.config), knob.name, _scaled(knob, step, 2.0), True)
        elif repeated:
            # a doubled step overshot: half of it once more from the same point; otherwise back to
            # ordinary moves (a plain repeat or a reflection that did not help)
            overshot = pending is not None and pending.expanded
            self.pattern = Pattern(start, knob.name, _scaled(knob, step, 0.5)) if overshot else None
        elif outcome.failed or self._better(parent, outcome):
            # worse (or failed): try the other direction from the parent once
            self.pattern = Pattern(start, knob.name, 1 / step if knob.log else -step)

    def _parent(self, config: Config) -> Outcome | None:
        """The told point ``config`` is one numeric move away from: the walk's current point if it is
        one, else the best such point."""
        near = [o for o in self.points if single_numeric_move(self.space, o.config, config) is not None]
        if self.current is not None and any(o is self.current for o in near):
            return self.current
        return min(near, key=lambda o: rank_key(o, self.context.minimize), default=None)

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
