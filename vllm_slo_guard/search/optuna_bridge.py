"""The seam between our searchers and Optuna: spaces as distributions, history as a replayed study.

Why replay instead of one long-lived study: a searcher's state must be a function of the outcomes it was
told (see ``base``), so every TPE ask rebuilds an in-memory study from the whole history and a sampler
seeded by ``rng_for``. That costs O(n) per ask (fine for a few hundred trials) and makes resume exact.

Replayed trials carry the *repaired* config (what actually ran, not what was proposed), the shared
constraint ``{"slo": outcome.constraint}`` (≤ 0 feasible, SLO misses in (0, 10], crashes and guarded
points at 100) and a finite value, because Optuna's TPE sorts values and cannot use −inf.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.study import StudyDirection
from optuna.trial import Trial

from ..outcome import Outcome
from ..space import Config, Knob, Space
from .base import SearchContext

# a failure's stand-in objective when no finite objective has been measured yet (seconds / req/s)
NO_OBJECTIVE_VALUE = {True: 1e6, False: 0.0}
_STUDY_NAME = "replay"


def knob_distribution(knob: Knob) -> BaseDistribution:
    """The Optuna distribution of one knob (bools are the categorical (False, True))."""
    if knob.kind in ("bool", "categorical"):
        return CategoricalDistribution(knob.values)
    assert knob.low is not None and knob.high is not None
    if knob.kind == "int":
        return IntDistribution(math.ceil(knob.low), math.floor(knob.high), log=knob.log)
    return FloatDistribution(float(knob.low), float(knob.high), log=knob.log)


def space_distributions(space: Space) -> dict[str, BaseDistribution]:
    """Every knob's distribution, in declaration order."""
    return {knob.name: knob_distribution(knob) for knob in space.knobs}


def replay_params(
    config: Mapping[str, Any], distributions: Mapping[str, BaseDistribution]
) -> tuple[dict[str, Any], dict[str, BaseDistribution]]:
    """The params (and their distributions) of the knobs present in ``config``.

    A repair may move a value outside the knob's range (e.g. ``max_num_batched_tokens`` raised to
    ``max_model_len`` when chunked prefill is off): numbers are clipped into range, and a categorical
    value outside the choices is left out. The exact values stay in the outcome; Optuna only needs the
    nearest point it can represent.
    """
    params: dict[str, Any] = {}
    dists: dict[str, BaseDistribution] = {}
    for name, value in config.items():
        dist = distributions.get(name)
        if isinstance(dist, CategoricalDistribution):
            if value not in dist.choices:
                continue
            params[name] = value
        elif isinstance(dist, IntDistribution):
            params[name] = min(max(round(value), dist.low), dist.high)
        elif isinstance(dist, FloatDistribution):
            params[name] = min(max(float(value), dist.low), dist.high)
        else:
            continue  # not a tuned knob (or an unknown distribution kind)
        dists[name] = dist
    return params, dists


def failure_value(history: Sequence[tuple[int, Outcome]], minimize: bool) -> float:
    """A finite objective for trials without one: twice as bad as the worst measured value.

    Minimising: ``worst + |worst|`` (2× the worst latency). Maximising: ``worst − |worst|`` (0 for a
    positive capacity). With no measured value at all, a constant (1e6 s, or 0 req/s).
    """
    measured = [o.objective for _, o in history if _finite(o.objective)]
    if not measured:
        return NO_OBJECTIVE_VALUE[minimize]
    worst = max(measured) if minimize else min(measured)  # type: ignore[type-var]
    assert worst is not None
    pad = abs(worst) if worst != 0 else 1.0
    return worst + pad if minimize else worst - pad


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Silence what a throwaway in-memory study prints on every ask (a study-created line, and the
    ExperimentalWarning of ``multivariate``/``group``)."""
    storage_logger = logging.getLogger("optuna.storages._in_memory")
    level = storage_logger.level
    storage_logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        storage_logger.setLevel(level)


def tpe_sampler(seed: int, n_startup_trials: int) -> optuna.samplers.TPESampler:
    """The TPE every searcher uses: multivariate with grouped conditionals, constraints per trial."""
    with quiet_optuna():
        return optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=n_startup_trials,
            multivariate=True,
            group=True,
            constant_liar=False,
        )


def replay_study(
    context: SearchContext, history: Sequence[tuple[int, Outcome]], sampler: optuna.samplers.BaseSampler
) -> optuna.Study:
    """An in-memory study holding every told trial, in trial order, ready for ``ask``."""
    distributions = space_distributions(context.space)
    direction = StudyDirection.MINIMIZE if context.minimize else StudyDirection.MAXIMIZE
    stand_in = failure_value(history, context.minimize)
    with quiet_optuna():
        storage = optuna.storages.InMemoryStorage()
        storage.create_new_study(directions=[direction], study_name=_STUDY_NAME)
        study = optuna.Study(study_name=_STUDY_NAME, storage=storage, sampler=sampler)
        for number, outcome in sorted(history, key=lambda item: item[0]):
            params, dists = replay_params(outcome.config, distributions)
            value = outcome.objective if _finite(outcome.objective) else stand_in
            trial = optuna.trial.create_trial(
                params=params,
                distributions=dists,
                value=value,
                constraints={"slo": outcome.constraint},
                user_attrs={"trial_number": number, "status": outcome.status},
            )
            study.add_trial(trial)
    return study


def ask_config(study: optuna.Study, space: Space, trial: Trial | None = None) -> Config:
    """Suggest the knobs in declaration order, each only when its condition holds on the values so far
    (define-by-run), and return them as a config with the knobs' own rounding."""
    with quiet_optuna():
        trial = trial if trial is not None else study.ask()
        config: Config = {}
        for knob in space.knobs:
            if not knob.active(config):
                continue
            dist = knob_distribution(knob)
            if isinstance(dist, CategoricalDistribution):
                config[knob.name] = trial.suggest_categorical(knob.name, list(dist.choices))
            elif isinstance(dist, IntDistribution):
                config[knob.name] = trial.suggest_int(knob.name, dist.low, dist.high, log=dist.log)
            else:
                assert isinstance(dist, FloatDistribution)
                value = trial.suggest_float(knob.name, dist.low, dist.high, log=dist.log)
                config[knob.name] = knob.clip(value)
    return config
