"""One trial, end to end: start a server for a config, wait, drive the workload, measure, stop.

A trial never leaves a process behind (the server is stopped in ``finally``, also on Ctrl-C), never
hangs the caller (one startup deadline, one measurement deadline, per-request timeouts), and always
says why a config failed: the crash taxonomy classifies the trial's own log with the exit code, the
phase and whether a deadline passed.

A measurement whose requests fail is not a measurement: above ``bench.failures.MAX_FAILURE_SHARE``
failed requests the trial is judged by its failures (``_failure_crash``), never ``ok`` and never a
near-miss. The same 4xx on most requests is the workload's fault (``request_error``: the tuner stops,
no configuration fixes it); 5xx answers and dropped streams are the config's (``engine_error``, or
what the server's log says when it died); requests that time out are ``timeout``. At or under that
share the failures are reported (``failures`` in the metrics) and the SLOs are judged on the completed
requests, as ``vllm bench serve`` computes its percentiles.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .bench.capacity import find_capacity
from .bench.failures import TIMEOUT, FailureVerdict
from .bench.metrics import RequestRecord
from .bench.promscrape import ServerStats, sample_peak_kv, scrape
from .bench.run import STOP_NO_MODEL, STOP_SERVER_DEAD, LoadGenConfig, LoadResult, run_load
from .bench.workload import WorkloadSpec
from .engine.crash import CrashReport, classify, startup_crash
from .engine.engines import Engine, flag_value
from .engine.launcher import ServerProcess, free_port
from .spec import Slo, Timeouts, certain_violation, normalized_violation, percentiles_needed

TRIAL_HOST = "127.0.0.1"  # trial servers never listen beyond loopback
_DEAD = (STOP_SERVER_DEAD, STOP_NO_MODEL)  # the server stopped answering


@dataclass
class TrialResult:
    """What one trial measured, or why it failed (``crash.category`` ``request_error``: the workload's fault)."""

    status: str  # "ok" | "slo_violation" | "crash"
    engine_args: list[str]
    metrics: dict[str, Any] = field(default_factory=dict)
    crash: CrashReport | None = None
    violation: float | None = None  # max_i(measured_i / threshold_i) − 1; ≤ 0 meets every SLO
    startup_s: float | None = None
    measurement_s: float | None = None
    stats: ServerStats | None = None
    peak_kv_usage: float | None = None
    capacity: float | None = None  # highest rate meeting every SLO (capacity trials only)
    probes: list[tuple[float, float]] = field(default_factory=list)  # (rate, violation) per capacity probe
    log_path: str | None = None
    exit_code: int | None = None

    @property
    def crash_category(self) -> str | None:
        return self.crash.category if self.crash else None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": self.status,
            "crash_category": self.crash_category,
            "root_cause": self.crash.root_cause if self.crash else None,
            "suggestion": self.crash.suggestion if self.crash else None,
            "startup_s": self.startup_s,
            "measurement_s": self.measurement_s,
            "violation": self.violation,
            "capacity": self.capacity,
            "engine_args": self.engine_args,
            "log_path": self.log_path,
        }
        if self.stats is not None:
            out.update(
                kv_cache_tokens=self.stats.kv_cache_tokens,
                num_gpu_blocks=self.stats.num_gpu_blocks,
                num_preemptions=self.stats.num_preemptions,
            )
        out["peak_kv_cache_usage"] = self.peak_kv_usage
        out.update(self.metrics)
        return out


def _measure(
    server: ServerProcess,
    load: LoadGenConfig,
    workload: WorkloadSpec,
    deadline_s: float,
    should_stop: Callable[[Sequence[RequestRecord]], bool] | None = None,
) -> tuple[LoadResult, float | None]:
    async def both() -> tuple[LoadResult, float | None]:
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_peak_kv(server.base_url, stop))
        try:
            result = await run_load(load, workload, deadline_s=deadline_s, should_stop=should_stop)
        finally:
            stop.set()
        return result, await sampler

    return asyncio.run(both())


def run_trial(
    engine: Engine,
    model: str,
    engine_args: Sequence[str],
    workload: WorkloadSpec,
    *,
    slos: Sequence[Slo] = (),
    timeouts: Timeouts | None = None,
    log_dir: str | Path,
    endpoint: Literal["completions", "chat"] = "completions",
    served_model_name: str | None = None,
    api_key: str = "EMPTY",
    name: str = "trial",
    capacity: bool = False,
    stop_early: bool = False,
) -> TrialResult:
    """Run one trial of ``engine_args`` and return its figures or its crash.

    ``capacity``: instead of one measurement at the workload's rate, search the highest request rate
    that meets every SLO on this one running server (``bench.capacity.find_capacity``); the
    result's ``capacity`` holds it and ``metrics`` are those of the best passing probe (or the lowest
    probe when none passed). ``stop_early``: end a measurement as soon as a percentile SLO can no
    longer be met (``spec.certain_violation``).
    """
    timeouts = timeouts or Timeouts()
    port = free_port(TRIAL_HOST)
    log_path = Path(log_dir) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{port}.log"
    argv = engine.argv(model, engine_args, TRIAL_HOST, port)
    server = ServerProcess(argv, host=TRIAL_HOST, port=port, log_path=log_path, env=engine.env())
    result = TrialResult("crash", list(engine_args), log_path=str(log_path))
    try:
        server.start()
        ready = server.wait_ready(timeouts.startup_s)
        result.startup_s = round(ready.waited_s, 3)
        if not ready.ready:
            server.stop(timeouts.shutdown_s)
            result.exit_code = ready.exit_code
            result.crash = startup_crash(
                server.log_text(), ready.exit_code, timed_out=ready.timed_out, deadline_s=timeouts.startup_s
            )
            return result
        load = LoadGenConfig(
            base_url=server.base_url, model=served_model_name, endpoint=endpoint, api_key=api_key,
            request_timeout_s=timeouts.request_s, tokenizer=flag_value(engine_args, "--tokenizer") or model,
            tokenizer_fallback=engine.name == "sim",
        )  # fmt: skip
        started = time.monotonic()
        thresholds = {slo.metric: slo.threshold_s for slo in slos if slo.metric in ("ttft", "tpot", "e2el")}
        percentiles = percentiles_needed(slos)
        measurements: list[LoadResult] = []
        measured_metrics: list[dict[str, Any]] = []

        def measure(rate: float) -> tuple[dict[str, Any], float]:
            probe = dataclasses.replace(workload, request_rate=rate) if capacity else workload
            remaining = max(timeouts.trial_s - (time.monotonic() - started), 1.0)
            stop = certain_violation(slos, probe.num_prompts) if stop_early and slos else None
            measured, peak = _measure(server, load, probe, remaining, stop)
            measurements.append(measured)
            result.peak_kv_usage = max(result.peak_kv_usage or 0.0, peak or 0.0)
            metrics = measured.metrics(percentiles=percentiles, goodput_thresholds_s=thresholds)
            measured_metrics.append(metrics)
            violation = normalized_violation(slos, metrics) if slos else -1.0
            if measured.stopped_early and measured.stop_reason == "should_stop":
                violation = max(violation, 1e-9)  # stopped because the SLO was certainly missed
            verdict = measured.failure_verdict()
            if verdict is not None and verdict.kind == TIMEOUT:
                violation = math.inf  # a capacity probe whose requests time out is above capacity
            return metrics, violation

        if capacity:
            found = find_capacity(lambda rate: measure(rate) if not _bad(measurements) else ({}, math.inf))
            probe = found.best_probe or found.lowest_probe
            result.capacity = found.capacity
            result.probes = [(p.rate, p.violation) for p in found.probes]
            result.metrics = probe.metrics
        else:
            result.metrics, violation = measure(workload.request_rate)
        measured = measurements[-1]
        result.measurement_s = round(time.monotonic() - started, 3)
        text = scrape(server.base_url)
        result.stats = ServerStats.from_text(text) if text else None
        if measured.stopped_early and measured.stop_reason in _DEAD:
            # vLLM exits by itself (status 0) a few seconds after its engine died; a code we caused
            # ourselves by killing it would be misleading evidence
            exited = _wait_exit(server, 8.0)
            server.stop(timeouts.shutdown_s)
            result.exit_code = exited
            result.crash = classify(
                server.log_text(), exit_code=exited, phase="measurement", ready=True
            ) or CrashReport.engine_died(
                "the server stopped answering during the measurement", exited, phase="measurement"
            )
            return result
        stalled = _stalled(measured)
        if stalled is not None:
            result.crash = dataclasses.replace(CrashReport.measurement_timeout(timeouts.trial_s), root_cause=stalled)
            return result
        verdict = measured.failure_verdict()
        if verdict is not None and (not capacity or verdict.kind != TIMEOUT):
            result.metrics = measured_metrics[-1]  # the failed measurement's own figures and failures
            result.crash = _failure_crash(verdict, server)
            return result
        if capacity:
            met = result.capacity is not None and result.capacity > 0
            result.violation = (found.best_probe or found.lowest_probe).violation
        else:
            result.violation = violation if slos else None
            met = result.violation is None or result.violation <= 0
        result.status = "ok" if met else "slo_violation"
        return result
    finally:
        server.stop(timeouts.shutdown_s)
        if result.exit_code is None and result.status == "crash":
            result.exit_code = server.exit_code


def _bad(measurements: Sequence[LoadResult]) -> bool:
    """The previous probe found a dead or stalled server, or failed requests that end the trial: stop probing."""
    if not measurements:
        return False
    last = measurements[-1]
    verdict = last.failure_verdict()
    ends_trial = verdict is not None and verdict.kind != TIMEOUT
    return last.stop_reason in _DEAD or _stalled(last) is not None or ends_trial


def _failure_crash(verdict: FailureVerdict, server: ServerProcess) -> CrashReport:
    """The crash a measurement with too many failed requests is: whose fault, in the server's words."""
    cause = verdict.describe()
    if verdict.workload_refused:
        return CrashReport.requests_refused(cause)
    if verdict.kind == TIMEOUT:
        return CrashReport.requests_timed_out(cause)
    # 5xx answers, dropped streams: the config's fault; a log that names the cause (a dead engine) says more
    exited = server.poll()
    logged = classify(server.log_text(), exit_code=exited, phase="measurement", ready=True)
    return logged or CrashReport.requests_failed(cause)


def _stalled(measured: LoadResult) -> str | None:
    """Why the measurement counts as "no progress", or None: most requests timed out, or none finished."""
    timed_out = sum(1 for r in measured.records if not r.success and r.error.startswith("Request timed out"))
    finished = sum(1 for r in measured.records if r.success)
    if measured.stopped_early and measured.stop_reason == "deadline" and finished == 0:
        return "no request finished before the measurement deadline"
    if timed_out and timed_out >= max(finished, 1):
        return (
            f"no progress during the measurement: {timed_out} of {len(measured.records)} requests timed out "
            f"while the server stayed up ({finished} finished)"
        )
    return None


def _wait_exit(server: ServerProcess, timeout_s: float) -> int | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code = server.poll()
        if code is not None:
            return code
        time.sleep(0.1)
    return None
