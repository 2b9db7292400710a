"""SLO-Guard: Thermal Budget Annealing to explore, then warm-started constrained TPE to exploit.

Exploration starts at vLLM's defaults (trial 0) and walks from there at once, without the random
starts of the plain TBA: a random config of the space often misses the SLO by far and teaches the walk
little, while one-knob moves from vLLM's defaults tend to keep meeting it and reach the large gains (fp8
KV cache, the token budget, chunked prefill), so random starts spend scarce trials far from them (the
study's figures: ``docs/study.md``).

Handoff rule (checked at every ask on the number ``n`` of outcomes told so far; with budget ``B``):

- never before ``min_explore = max(3, B // 5)``: TPE without startup trials needs a few diverse points
  before its densities mean anything, and the random starts plus a few annealing moves provide them;
- always at ``max_explore = max(5, int(0.4·B))``: exploration must leave most of the budget to the
  exploiter, and past this point annealing's local moves buy little that TPE would not;
- in between, as soon as there are ≥ ``max(2, B // 6)`` feasible outcomes **and** ≥ 1 infeasible,
  crashed or guarded one. Constrained TPE learns from contrast: its "good" density needs several
  feasible points, and only a failure tells it where not to go. Once both kinds of evidence exist,
  more annealing is slower than letting TPE use them.

Counts are of distinct evaluated configs: an outcome the tuner reused for a repeated repaired config
(``reused_from``) is no new evidence, so it neither advances the handoff nor is replayed twice. The
counts only grow, so once handed off a run stays handed off (also after a resume).

After the handoff the exploit phase alternates two proposals. Every other trial (even numbers) moves
one knob of the best point so far (the annealing's rotation, step and pattern rules, an unseen config): with
15 trials a 9-knob TPE model is still coarse, and the last few percent tend to come from single-knob
refinements of the incumbent, which TPE samples too rarely on its own (the study's figures:
``docs/study.md``). The other trials ask TPE, which replays *all* history (crashes and guarded points at
``CRASH_VIOLATION``, SLO misses at their normalized violation, the repaired params) into a multivariate
TPE with ``n_startup_trials=0``, seeded per trial by ``rng_for``. Repair happens in the tuner: a proposal is
compared with the keys of the configs told by its repaired key when ``SearchContext.canonical`` is
given, else by its unrepaired key; a repeat is re-asked with another seed up to ``max_reasks`` times,
then replaced by an unseen annealing neighbour of the best point.
"""

from __future__ import annotations

from ..outcome import Outcome, TrialPhase
from ..space import Config
from .base import SearchContext, predicted_to_fail, repaired_key, rng_for
from .optuna_bridge import ask_config, replay_study, tpe_sampler
from .tba import TbaSearcher

MAX_REASKS = 10
INITIAL_RANDOM = 1  # trial 0 (vLLM's defaults) is the only start: the walk begins at once from it
LOCAL_EVERY = 2  # exploit trials with an even number move one knob of the best point; the others ask TPE


def handoff_bounds(budget: int) -> tuple[int, int, int]:
    """(min_explore, max_explore, min_feasible) for a budget."""
    min_explore = max(3, budget // 5)
    max_explore = max(5, int(0.4 * budget), min_explore)
    return min_explore, max_explore, max(2, budget // 6)


class SloGuardSearcher:
    """TBA exploration (phase ``explore``), adaptive handoff, warm-started TPE (phase ``exploit``).

    Args:
        context: the space, seed, budget and direction.
        max_reasks: TPE re-asks with fresh seeds when a proposal repeats an evaluated config.
    """

    name = "slo-guard"

    def __init__(self, context: SearchContext, *, max_reasks: int = MAX_REASKS) -> None:
        self.context = context
        self.min_explore, self.max_explore, self.min_feasible = handoff_bounds(context.budget)
        self.max_reasks = max_reasks
        self.tba = TbaSearcher(context, phase=TrialPhase.EXPLORE, n_initial_random=INITIAL_RANDOM)
        self.history: list[tuple[int, Outcome]] = []

    @property
    def handed_off(self) -> bool:
        """Whether the next ask belongs to the TPE phase (see the module docstring)."""
        evaluated = len(self.history)
        if evaluated < self.min_explore:
            return False
        if evaluated >= self.max_explore:
            return True
        feasible = sum(1 for _, o in self.history if o.feasible)
        return feasible >= self.min_feasible and feasible < evaluated

    def ask(self, trial_number: int) -> tuple[Config, str]:
        if not self.handed_off:
            config, _ = self.tba.ask(trial_number)
            return config, TrialPhase.EXPLORE
        if trial_number % LOCAL_EVERY == 0 and self.tba.best is not None:
            rng = rng_for(self.context.seed, trial_number, "local")
            return self.tba.neighbour_unseen(self.tba.best.config, trial_number, rng), TrialPhase.EXPLOIT
        return self._exploit(trial_number), TrialPhase.EXPLOIT

    def tell(self, trial_number: int, outcome: Outcome) -> None:
        if outcome.reused_from is None:  # a repeat (same repaired config) is no new evidence
            self.history.append((trial_number, outcome))
        self.tba.tell(trial_number, outcome)  # keeps the evaluated keys, the best point and crash memory

    def _exploit(self, trial_number: int) -> Config:
        seed = self.context.seed
        study = None
        for attempt in range(self.max_reasks + 1):
            purpose = "tpe" if attempt == 0 else f"tpe-reask-{attempt}"
            sampler = tpe_sampler(rng_for(seed, trial_number, purpose).getrandbits(32), n_startup_trials=0)
            if study is None:
                study = replay_study(self.context, self.history, sampler)
            else:
                study.sampler = sampler  # same replayed trials; the abandoned asks stay RUNNING and are ignored
            config = ask_config(study, self.context.space)
            if repaired_key(self.context, config) in self.tba.seen:
                continue
            if not predicted_to_fail(self.context, config) or attempt == self.max_reasks:
                return config
        rng = rng_for(seed, trial_number, "fallback")
        if self.tba.best is None:
            return self.tba.random_unseen(rng)
        return self.tba.neighbour_unseen(self.tba.best.config, trial_number, rng)
