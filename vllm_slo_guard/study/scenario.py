"""Scenario files: one tuning problem (model, GPU, workload, SLOs, pinned flags) a study runs every searcher on.

A scenario is TOML, so a user can write their own and run ``vllm-tune compare --scenario FILE``::

    name = "chat-llama8b-h100"
    model = "meta-llama/Llama-3.1-8B-Instruct"
    gpu = "H100-80GB"            # gpu_count = 1
    engine = "sim"               # studies run on the simulated engine
    objective = "latency"        # or "capacity"

    [slo]                        # <metric>_<stat> = duration; the first is the latency objective
    tpot_p99 = "25ms"
    ttft_p95 = "300ms"

    [workload]                   # vllm bench serve's flags, snake_case
    num_prompts = 300
    request_rate = 25

    [pinned]                     # vllm serve flags the user fixed (never tuned)
    max_model_len = 8192

    [space]                      # optional: "LOW:HIGH" or a list sets a range, a scalar fixes a knob
    max_num_seqs = "8:512"
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..bench.workload import WorkloadSpec
from ..errors import InputError
from ..files import read_toml
from ..spec import SLO_METRICS, Slo, TuneSpec, parse_slo

_TOP_KEYS = {"name", "description", "model", "gpu", "gpu_count", "engine", "objective"}
_TABLES = {"slo", "workload", "pinned", "space"}
_WORKLOAD_KEYS = (
    "num_prompts", "request_rate", "burstiness", "max_concurrency", "random_input_len", "random_output_len",
    "random_range_ratio", "random_prefix_len",
)  # fmt: skip


@dataclass(frozen=True)
class Scenario:
    """One study problem, as read from its TOML file."""

    name: str
    model: str
    gpu: str
    slos: tuple[Slo, ...]
    workload: WorkloadSpec
    objective: str = "latency"
    gpu_count: int = 1
    engine: str = "sim"
    pinned: tuple[str, ...] = ()
    tune: tuple[str, ...] = ()  # --tune KNOB=RANGE overrides from [space]
    fix: tuple[str, ...] = ()  # --fix KNOB=VALUE overrides from [space]
    description: str = ""

    @property
    def minimize(self) -> bool:
        return self.objective == "latency"

    def definition(self) -> dict[str, Any]:
        """Everything that decides the scenario's results (not its name or description)."""
        return {
            "model": self.model, "gpu": self.gpu, "gpu_count": self.gpu_count, "objective": self.objective,
            "slos": [str(s) for s in self.slos], "workload": self.workload.to_dict(), "pinned": list(self.pinned),
            "tune": list(self.tune), "fix": list(self.fix),
        }  # fmt: skip

    def key(self) -> str:
        """A short hash of :meth:`definition`: two files that define the same problem share it."""
        text = json.dumps(self.definition(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def tune_spec(
        self, *, searcher: str, seed: int, budget: int, storage: str, confirm_top_k: int = 0,
        search_workload_seed: int | None = None,
    ) -> TuneSpec:  # fmt: skip
        """The ``vllm-tune tune`` run of one searcher and seed on this scenario."""
        return TuneSpec(
            self.model, self.slos, self.workload, objective=self.objective, budget=budget, engine="sim",
            gpu=self.gpu, gpu_count=self.gpu_count, pinned_args=self.pinned, tune=self.tune, fix=self.fix,
            seed=seed, searcher=searcher, confirm_top_k=confirm_top_k, storage=storage,
            search_workload_seed=search_workload_seed, study_name=f"{self.name}-{searcher}-{seed}",
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "key": self.key(), **self.definition()}


def load_scenario(path: str | Path) -> Scenario:
    """Read and check a scenario file; any problem is one :class:`InputError` line naming the file."""
    path = Path(path)
    doc = read_toml(path, "scenario file")
    try:
        return scenario_from_dict(doc, default_name=path.stem)
    except InputError as exc:
        raise InputError(f"scenario file {path}: {exc}") from None


def scenario_from_dict(doc: Mapping[str, Any], *, default_name: str = "scenario") -> Scenario:
    unknown = set(doc) - _TOP_KEYS - _TABLES
    if unknown:
        raise InputError(f"unknown key {sorted(unknown)[0]!r} (known: {', '.join(sorted(_TOP_KEYS | _TABLES))})")
    for key in ("model", "gpu"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            raise InputError(f"{key!r} is required (a string)")
    engine = doc.get("engine", "sim")
    if engine != "sim":
        raise InputError(f"engine = {engine!r}: studies run thousands of trials, on the simulated engine only ('sim')")
    objective = doc.get("objective", "latency")
    if objective not in ("latency", "capacity"):
        raise InputError(f"objective = {objective!r}: expected 'latency' or 'capacity'")
    gpu_count = doc.get("gpu_count", 1)
    if not isinstance(gpu_count, int) or isinstance(gpu_count, bool) or gpu_count < 1:
        raise InputError(f"gpu_count = {gpu_count!r}: expected a positive integer")
    tune, fix = _space(_table(doc, "space"))
    from ..space import build_space
    from ..vllm_rules.catalog import resolve_gpu

    try:
        gpu_spec = resolve_gpu(doc["gpu"])
    except Exception as exc:  # the catalog's own one-line error
        raise InputError(str(exc).splitlines()[0]) from None
    from ..errors import ModelNotFoundError
    from ..vllm_rules.modelinfo import load_model_arch

    try:
        load_model_arch(doc["model"])
    except ModelNotFoundError as exc:
        raise InputError(str(exc).splitlines()[0]) from None
    pinned = _pinned(_table(doc, "pinned"))
    build_space(gpu_spec, pinned, tune=tune, fix=fix)  # unknown knobs and bad ranges: one line, now
    return Scenario(
        name=str(doc.get("name") or default_name), model=doc["model"], gpu=gpu_spec.name,
        slos=_slos(_table(doc, "slo")), workload=_workload(_table(doc, "workload")), objective=objective,
        gpu_count=gpu_count, pinned=pinned, tune=tune, fix=fix, description=str(doc.get("description", "")),
    )  # fmt: skip


def _table(doc: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    table = doc.get(name, {})
    if not isinstance(table, Mapping):
        raise InputError(f"[{name}] must be a table")
    return table


def _slos(table: Mapping[str, Any]) -> tuple[Slo, ...]:
    if not table:
        raise InputError('[slo] needs at least one SLO, e.g. ttft_p95 = "500ms"')
    out = []
    for key, value in table.items():
        metric, _, stat = key.partition("_")
        if metric not in SLO_METRICS or not stat:
            raise InputError(
                f"[slo] {key}: expected <metric>_<stat> such as ttft_p95 (metrics: {', '.join(SLO_METRICS)})"
            )
        out.append(parse_slo(f"{metric}:{stat}={value}"))
    return tuple(out)


def _workload(table: Mapping[str, Any]) -> WorkloadSpec:
    unknown = set(table) - set(_WORKLOAD_KEYS)
    if unknown:
        raise InputError(f"[workload] unknown key {sorted(unknown)[0]!r} (known: {', '.join(_WORKLOAD_KEYS)})")
    values = dict(table)
    rate = values.get("request_rate", math.inf)
    if isinstance(rate, str):
        if rate.strip().lower() != "inf":
            raise InputError(f'[workload] request_rate = {rate!r}: expected a number or "inf"')
        rate = math.inf
    values["request_rate"] = float(rate)
    try:
        workload = WorkloadSpec(**values)
    except TypeError as exc:
        raise InputError(f"[workload] {exc}") from None
    workload.validate()
    return workload


def _pinned(table: Mapping[str, Any]) -> tuple[str, ...]:
    """``[pinned]`` as ``vllm serve`` flags; checked by the same parser the tuner uses."""
    from ..space import pinned_knob_names

    argv: list[str] = []
    for key, value in table.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, (int, float, str)):
            argv += [flag, str(value)]
        else:
            raise InputError(f"[pinned] {key}: expected a number, string or boolean")
    pinned_knob_names(argv)  # raises InputError with vLLM's own message for a flag it would refuse
    return tuple(argv)


def _space(table: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    tune, fix = [], []
    for key, value in table.items():
        if isinstance(value, list):
            tune.append(f"{key}={','.join(_text(v) for v in value)}")
        elif isinstance(value, str) and ":" in value:
            tune.append(f"{key}={value}")
        else:
            fix.append(f"{key}={_text(value)}")
    return tuple(tune), tuple(fix)


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
