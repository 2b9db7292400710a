"""The study is the record of a tuning run: one Optuna study, one Optuna trial per evaluation.

Why Optuna's storage: it already handles SQLite (the default, ``<cache>/studies.db``) and every
database URL a team may share (``postgresql://…``), and a study stays readable by Optuna's own tools.
Every trial — measured, crashed, guarded, reused or a confirmation — is added whole with
``create_trial`` + ``Study.add_trial``:

- ``params``: the repaired values of the active knobs (clipped into the knob's range, because a repair
  may step outside it; the exact values are in the outcome),
- ``value``: the objective, or a finite stand-in for a failure (``FAILED_VALUE``),
- ``constraints``: ``{"slo": outcome.constraint}`` (the one normalized encoding),
- ``user_attrs``: ``outcome`` (``Outcome.to_attrs()``), ``trial_number``, ``phase``, ``counted``,
  ``cost_s``, ``wall_s`` and, for confirmations, ``confirm_after``.

The study's user attrs hold the :class:`TuneSpec` (``tune_spec``), what defines the study
(``identity`` and its hash ``fingerprint``), the ``hardware``, the ``vllm_version`` and the
``fixed`` (``--fix``) values, so a study can be resumed, reported and exported without the process
that ran it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from ..errors import SloGuardError
from ..outcome import Outcome
from ..paths import cache_dir
from ..space import Space
from .optuna_bridge import quiet_optuna, replay_params, space_distributions
from .result import TrialRecord

STUDY_FORMAT = 1
FAILED_VALUE = {"minimize": 1e6, "maximize": 0.0}  # a crash's stand-in objective (seconds / req/s)


class StudyError(SloGuardError):
    """The study cannot be opened, is missing, or belongs to a different tuning spec."""


def default_storage_url() -> str:
    """SQLite in the cache folder (created on first use)."""
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'studies.db'}"


@dataclass
class StudyStore:
    """A study opened for reading and appending trial records."""

    study: optuna.Study
    url: str
    distributions: dict[str, BaseDistribution] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.study.study_name

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self.study.user_attrs)

    def add(self, record: TrialRecord) -> None:
        """Store one record; it is on disk when this returns."""
        outcome = record.outcome
        params, dists = replay_params(outcome.config, self.distributions)
        direction = "minimize" if self.study.direction == optuna.study.StudyDirection.MINIMIZE else "maximize"
        value = outcome.objective
        if value is None or not math.isfinite(value):
            value = FAILED_VALUE[direction]
        attrs: dict[str, Any] = {
            "outcome": outcome.to_attrs(),
            "trial_number": record.number,
            "phase": outcome.phase,
            "counted": record.counted,
            "cost_s": record.cost_s,
            "wall_s": record.wall_s,
        }
        if record.confirm_after is not None:
            attrs["confirm_after"] = record.confirm_after
        trial = optuna.trial.create_trial(
            params=params, distributions=dists, value=value, constraints={"slo": outcome.constraint}, user_attrs=attrs
        )
        self.study.add_trial(trial)

    def records(self) -> list[TrialRecord]:
        """Every stored record, in the order they were stored."""
        out = []
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            attrs = trial.user_attrs
            if "outcome" not in attrs or "trial_number" not in attrs:
                continue  # not ours (someone added a trial by hand)
            outcome = Outcome.from_attrs(attrs["outcome"])
            out.append(
                TrialRecord(
                    number=int(attrs["trial_number"]),
                    outcome=outcome,
                    counted=bool(attrs.get("counted", True)),
                    cost_s=float(attrs.get("cost_s", outcome.cost_s)),
                    wall_s=float(attrs.get("wall_s", 0.0)),
                    confirm_after=attrs.get("confirm_after"),
                )
            )
        return out


MEMORY_URL = "memory:"  # an in-process study that is gone with the process (multi-seed studies, tests)


def _storage(url: str) -> optuna.storages.BaseStorage:
    if url == MEMORY_URL:
        return optuna.storages.InMemoryStorage()
    try:
        return optuna.storages.get_storage(url)
    except Exception as exc:  # SQLAlchemy and driver errors: translated at the boundary
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StudyError(f"cannot open the study storage {url}: {first}") from None


def _existing(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study | None:
    if name not in {s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}:
        return None
    return optuna.load_study(study_name=name, storage=storage)


def open_study(
    *,
    url: str,
    name: str,
    direction: str,
    space: Space,
    meta: Mapping[str, Any],
) -> tuple[StudyStore, bool]:
    """Create the study, or load it when it exists and was made by the same spec.

    ``meta`` holds the study attrs (``tune_spec``, ``identity``, ``fingerprint``, ``hardware``,
    ``vllm_version``, ``fixed``). Returns the store and whether the study already existed. A study
    of the same name made by a different spec is an error that names what differs.
    """
    storage = _storage(url)
    study = _existing(storage, name)
    dists = space_distributions(space)
    if study is None:
        with quiet_optuna():  # no "A new study created" log line in a library call
            study = optuna.create_study(storage=storage, study_name=name, direction=direction)  # type: ignore[arg-type]
        for key, value in {"format": STUDY_FORMAT, **meta}.items():
            study.set_user_attr(key, value)
        return StudyStore(study, url, dists), False
    stored = study.user_attrs
    if stored.get("fingerprint") != meta.get("fingerprint"):
        raise StudyError(_mismatch(name, stored.get("identity") or {}, meta.get("identity") or {}))
    study.set_user_attr("tune_spec", meta.get("tune_spec"))  # the latest budgets, for reports
    return StudyStore(study, url, dists), True


def _mismatch(name: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    differs = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k)) or ["the study format"]
    return (
        f"study {name!r} was made by a different tuning spec (differs in: {', '.join(differs)}); "
        "use the original settings to resume it, or another --study-name"
    )


def load_store(url: str | None, name: str) -> StudyStore:
    """Open an existing study for reading (export, reports)."""
    url = url or default_storage_url()
    storage = _storage(url)
    study = _existing(storage, name)
    if study is None:
        names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False))
        known = f"; studies there: {', '.join(names)}" if names else "; it holds no studies"
        raise StudyError(f"no study named {name!r} in {url}{known}")
    if "tune_spec" not in study.user_attrs:
        raise StudyError(f"study {name!r} in {url} was not made by vllm-tune (no tune_spec attribute)")
    return StudyStore(study, url)
