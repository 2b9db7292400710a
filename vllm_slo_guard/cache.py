"""Tuned results kept for the next ``vllm-tune serve``: one TOML file per tuning fingerprint.

A restarted server must come up at once, not after another tuning run; so a result that has a winner
is stored under the fingerprint of what defines it (``TuneSpec.identity()``: the model and its
architecture facts, the vLLM version, the GPU model and count, SLOs, workload, objective, pinned
flags, searcher and seed), as ``$XDG_CACHE_HOME/vllm-tune/results/<fingerprint>.toml``.

The file is the document ``vllm-tune tune -o`` writes, plus a ``[cache]`` table (the fingerprint, the
trial budget it was tuned with, when it was written, and the identity as JSON, to see why two runs
did not share a result). So ``serve --config`` reads a ``tune -o`` file and a cache file alike.

This module reads TOML without importing the tuner (and so Optuna): a cache hit must start fast.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError
from .files import read_toml, write_atomic
from .paths import cache_dir
from .spec import Slo, parse_slo


def results_dir() -> Path:
    return cache_dir() / "results"


def result_path(fingerprint: str) -> Path:
    return results_dir() / f"{fingerprint}.toml"


@dataclass(frozen=True)
class ServeCandidate:
    """One configuration ``serve`` may start: its ``vllm serve`` flags and the figures it was chosen on."""

    label: str  # "winner (trial 7)", "runner-up 1 (trial 3)", "vLLM's defaults"
    argv: tuple[str, ...]
    metrics: Mapping[str, Any] = field(default_factory=dict)
    objective: Mapping[str, float] = field(default_factory=dict)  # latency_s or capacity_req_per_s
    confirmed: bool = False


@dataclass(frozen=True)
class TunedResult:
    """A tuned result read back from TOML: the candidates in the order ``serve`` tries them."""

    model: str
    slos: tuple[Slo, ...]
    candidates: tuple[ServeCandidate, ...]  # the winner, then runner-ups; or the closest miss alone
    has_winner: bool  # False: no config met every SLO, ``candidates`` holds the closest miss
    pinned_args: tuple[str, ...]  # the flags the user pinned while tuning (vLLM's defaults use them)
    hardware: Mapping[str, Any]
    budget: int | None  # trials it was tuned with (cache files only)
    origin: str  # the file it came from
    document: Mapping[str, Any]


def _argv(table: Mapping[str, Any], where: str, origin: str) -> tuple[str, ...]:
    argv = table.get("argv")
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise InputError(f"{origin}: [{where}] needs argv, a list of strings (the `vllm serve` flags)")
    return tuple(argv)


def _candidate(table: Any, where: str, label: str, origin: str) -> ServeCandidate:
    if not isinstance(table, Mapping):
        raise InputError(f"{origin}: [{where}] must be a table")
    trial = table.get("trial")
    name = f"{label} (trial {trial})" if isinstance(trial, int) else label
    metrics = table.get("metrics")
    objective = {k: float(table[k]) for k in ("latency_s", "capacity_req_per_s") if isinstance(table.get(k), float)}
    return ServeCandidate(
        name, _argv(table, where, origin), dict(metrics) if isinstance(metrics, Mapping) else {}, objective,
        bool(table.get("confirmed", False)),
    )  # fmt: skip


def from_document(doc: Mapping[str, Any], origin: str) -> TunedResult:
    """Check a tuned-result document and list its candidates (one :class:`InputError` line when malformed)."""
    model = doc.get("model")
    if not isinstance(model, str) or not model:
        raise InputError(f"{origin}: missing key 'model' (is it a `vllm-tune tune -o` file?)")
    slo_texts = doc.get("slos", [])
    if not isinstance(slo_texts, list) or not all(isinstance(s, str) for s in slo_texts):
        raise InputError(f"{origin}: 'slos' must be a list of SLO strings such as \"ttft:p95=200ms\"")
    try:
        slos = tuple(parse_slo(s) for s in slo_texts)
    except InputError as exc:
        raise InputError(f"{origin}: {exc}") from None
    candidates: list[ServeCandidate] = []
    if "winner" in doc:
        candidates.append(_candidate(doc["winner"], "winner", "winner", origin))
        runner_ups = doc.get("runner_up", [])
        if not isinstance(runner_ups, list):
            raise InputError(f"{origin}: runner_up must be an array of tables ([[runner_up]])")
        for i, table in enumerate(runner_ups, start=1):
            candidates.append(_candidate(table, f"runner_up {i}", f"runner-up {i}", origin))
    elif "best_miss" in doc:
        candidates.append(_candidate(doc["best_miss"], "best_miss", "closest miss", origin))
    else:
        raise InputError(f"{origin}: missing key 'winner' (a [winner] table with the `vllm serve` argv)")
    first = doc.get("winner", doc.get("best_miss", {}))
    pinned = first.get("engine_args", {}).get("pinned_args", []) if isinstance(first, Mapping) else []
    if not isinstance(pinned, list) or not all(isinstance(a, str) for a in pinned):
        raise InputError(f"{origin}: engine_args.pinned_args must be a list of strings")
    meta = doc.get("cache", {})
    budget = meta.get("budget") if isinstance(meta, Mapping) else None
    hardware = doc.get("hardware", {})
    return TunedResult(
        model=model, slos=slos, candidates=tuple(candidates), has_winner="winner" in doc, pinned_args=tuple(pinned),
        hardware=hardware if isinstance(hardware, Mapping) else {}, budget=budget if isinstance(budget, int) else None,
        origin=origin, document=doc,
    )  # fmt: skip


def read_result(path: str | Path) -> TunedResult:
    """Read a tuned TOML file (``tune -o`` or a cache entry); a missing, corrupt or incomplete file is one line."""
    return from_document(read_toml(path), str(path))


def lookup(fingerprint: str) -> TunedResult | None:
    """The cached result of this fingerprint, or None (absent). A damaged entry raises :class:`InputError`."""
    path = result_path(fingerprint)
    if not path.exists():
        return None
    return read_result(path)


def store(fingerprint: str, document: Mapping[str, Any], *, budget: int, identity: Mapping[str, Any]) -> Path:
    """Write ``document`` (a result with a winner) as the cache entry of ``fingerprint``, atomically."""
    import tomli_w

    entry = dict(document)
    entry["cache"] = {
        "fingerprint": fingerprint,
        "budget": budget,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "identity": json.dumps(identity, sort_keys=True, default=str),
    }
    return write_atomic(result_path(fingerprint), tomli_w.dumps(entry))
