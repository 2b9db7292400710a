"""What a report holds: the study read back as a ``TuneResult``, the facts drawn from it, its JSON form.

Why plain functions apart from the drawing: the handoff, the best-so-far line and each trial's point
in the space are what the figures show and what ``--json`` prints, so they are computed once, here,
and tested without matplotlib. The JSON keeps every trial exactly as the study stores it, so it
round-trips with Optuna's own view of the study.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..engine.engines import flag_value
from ..export import result_document, result_from_study
from ..outcome import Outcome
from ..search.result import Candidate, TrialRecord, TuneResult
from ..search.storage import StudyError, default_storage_url

HANDOFF_PHASE = "exploit"  # SLO-Guard's TPE phase: its first trial is the handoff

# --- reading --------------------------------------------------------------------------------------------


def load_result(storage: str | None, study: str) -> TuneResult:
    """The study's result from storage alone; a missing SQLite file is an error, never a new empty database."""
    url = storage or default_storage_url()
    path = _sqlite_path(url)
    if path is not None and not path.exists():
        raise StudyError(
            f"no study named {study!r}: {path} does not exist (run `vllm-tune tune` first or pass --storage)"
        )
    return result_from_study(url, study)


def _sqlite_path(url: str) -> Path | None:
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///") :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def public_url(url: str) -> str:
    """The storage URL without its password: reports get shared, database passwords must not."""
    return re.sub(r"(://[^/:@]+):[^/@]*@", r"\1:***@", url)


def default_out_dir(study: str) -> Path:
    return Path(f"vllm-tune-report-{study}")


# --- facts of the study (plain functions, tested without matplotlib) -------------------------------------


def handoff_trial(records: Iterable[TrialRecord]) -> int | None:
    """The first TPE (``exploit``) trial of an SLO-Guard search; None for other searchers or before it."""
    return min((r.number for r in records if not r.is_confirm and r.phase == HANDOFF_PHASE), default=None)


def best_so_far(records: Iterable[TrialRecord], minimize: bool) -> list[tuple[int, float | None]]:
    """Per search trial, in order: the best feasible objective up to it (None before the first feasible)."""
    best: float | None = None
    out: list[tuple[int, float | None]] = []
    for record in sorted((r for r in records if not r.is_confirm), key=lambda r: r.number):
        value = objective_value(record.outcome)
        better = value is not None and (best is None or (value < best if minimize else value > best))
        if record.outcome.feasible and better:
            best = value
        out.append((record.number, best))
    return out


def objective_value(outcome: Outcome) -> float | None:
    """The objective of a trial that measured one (a failed trial or a NaN has none)."""
    value = outcome.objective
    return value if value is not None and math.isfinite(value) and not outcome.failed else None


def space_point(record: TrialRecord, fixed: Mapping[str, Any]) -> tuple[float, float] | None:
    """(max_num_seqs, max_num_batched_tokens) of a trial: tuned, ``--fix``-ed or pinned on the command line."""
    values = []
    for name in ("max_num_seqs", "max_num_batched_tokens"):
        value = record.outcome.config.get(name, fixed.get(name))
        if value is None:
            value = flag_value(record.outcome.argv, "--" + name.replace("_", "-"))
        try:
            number = float(value) if value is not None else math.nan
        except ValueError:
            number = math.nan
        if not number > 0:
            return None
        values.append(number)
    return values[0], values[1]


def is_winner(record: TrialRecord, winner: Candidate | None) -> bool:
    return winner is not None and record.number == winner.trial and record.is_confirm == winner.confirmed


def slo_misses(records: Iterable[TrialRecord]) -> int:
    """Distinct search configs that ran and missed an SLO (TrialCounts has no such count)."""
    return sum(
        1 for r in records if not r.is_confirm and r.outcome.reused_from is None and r.outcome.status == "slo_violation"
    )


def hardware_text(hardware: Mapping[str, Any]) -> str:
    """``1 × A100-40GB (39.4 GiB, sim)`` from the study's hardware record (other keys as key=value)."""
    hw = dict(hardware)
    if "gpu" not in hw:
        return ", ".join(f"{k}={v}" for k, v in hw.items()) or "unknown"
    text = f"{hw.pop('count', 1)} × {hw.pop('gpu')}"
    details = []
    memory = hw.pop("memory_bytes", None)
    if isinstance(memory, (int, float)):
        details.append(f"{memory / 2**30:.1f} GiB")
    details += [str(v) if k == "kind" else f"{k}={v}" for k, v in hw.items()]
    return f"{text} ({', '.join(details)})" if details else text


# --- JSON -----------------------------------------------------------------------------------------------


def trial_json(record: TrialRecord) -> dict[str, Any]:
    """One trial exactly as the study stores it (its user attrs), so ``--json`` round-trips with Optuna's."""
    data: dict[str, Any] = {
        "outcome": record.outcome.to_attrs(),
        "trial_number": record.number,
        "phase": record.phase,
        "counted": record.counted,
        "cost_s": record.cost_s,
        "wall_s": record.wall_s,
    }
    if record.confirm_after is not None:
        data["confirm_after"] = record.confirm_after
    return data


def report_json(result: TuneResult) -> dict[str, Any]:
    """The study, its spec, the winner (as ``export`` writes it), every trial and the counts."""
    doc = result_document(result)
    data = {
        "study": result.study_name,
        "storage": public_url(result.storage),
        "spec": result.spec.to_dict(),
        "vllm_version": result.vllm_version,
        "hardware": result.hardware,
        "fixed": result.fixed,
        "winner": doc.get("winner"),
        "runner_ups": doc.get("runner_up", []),
        "best_miss": doc.get("best_miss"),
        "handoff_trial": handoff_trial(result.trials),
        "counts": {**asdict(result.counts), "slo_misses": slo_misses(result.trials)},
        "total_cost_s": result.total_cost_s,
        "notes": list(result.notes),
        "trials": [trial_json(r) for r in result.trials],
    }
    return _json_safe(data)


def _json_safe(value: Any) -> Any:
    """Strict JSON: NaN and infinities become null (a stored metric may be NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def json_text(result: TuneResult) -> str:
    return json.dumps(report_json(result), indent=2, allow_nan=False)
