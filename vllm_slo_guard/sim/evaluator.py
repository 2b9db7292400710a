"""The in-process face of the simulated engine: one benchmark run in virtual time.

``simulate()`` starts a simulated ``vllm serve`` (argument checks, memory plan), then replays a
``vllm bench serve`` workload against it: requests are sent at their arrival times (respecting the
client's ``--max-concurrency``), the engine steps in virtual time, and every token's time is taken at
the end of the step that produced it. Runs of pure decode steps are computed vectorized, which keeps
a 300-request trial far below a tenth of a second.
"""

from __future__ import annotations

import functools
import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..bench.metrics import RequestRecord, compute_metrics
from ..bench.tokenizers import prompt_tokenizer
from ..bench.workload import WorkloadRequest, WorkloadSpec, arrival_offsets, build_requests
from ..vllm_rules.arch import ModelArch
from ..vllm_rules.args import ArgparseExit
from ..vllm_rules.catalog import GpuSpec, resolve_gpu
from ..vllm_rules.config import EngineConfig
from ..vllm_rules.failures import StartupFailure
from ..vllm_rules.memory import MemoryPlan
from ..vllm_rules.startup import Device, check_startup
from .engine import EngineCore, RequestRejected


@dataclass
class SimulatedServer:
    """A started simulated engine: its resolved config and memory plan."""

    cfg: EngineConfig
    arch: ModelArch
    gpu: GpuSpec
    plan: MemoryPlan
    startup_s: float

    def engine(self, seed: int) -> EngineCore:
        return EngineCore(self.cfg, self.arch, self.gpu, self.plan, seed=seed)


def estimate_startup_s(cfg: EngineConfig, arch: ModelArch, gpu: GpuSpec) -> float:
    """Rough wall time to healthy: imports, weight load, compile, graph capture (an estimate, not fitted)."""
    seconds = 12.0 + arch.weight_bytes(cfg.dtype_bytes) / cfg.world_size / 1.5e9
    if cfg.optimization_level >= 1 and not gpu.is_cpu:
        seconds += 25.0
    seconds += 0.12 * len(cfg.cudagraph_capture_sizes) * (2 if cfg.full_graph_sizes else 1)
    return round(seconds, 1)


def start_server(
    engine_argv: Sequence[str], gpu: str | GpuSpec, *, gpu_count: int = 1, used_bytes: int = 0
) -> SimulatedServer:
    """Parse and validate ``vllm serve`` arguments and plan memory, failing as vLLM would.

    Raises ``ArgparseExit`` (exit 2) or ``StartupFailure``.
    """
    spec = gpu if isinstance(gpu, GpuSpec) else resolve_gpu(gpu)
    check = check_startup(engine_argv, Device(spec, used_bytes=used_bytes, count=gpu_count))
    return SimulatedServer(check.cfg, check.arch, spec, check.plan, estimate_startup_s(check.cfg, check.arch, spec))


@dataclass
class SimResult:
    """One simulated benchmark: ``status`` "ok" with metrics, or "crash" with vLLM's reason."""

    status: str
    metrics: dict[str, Any] = field(default_factory=dict)
    crash_category: str | None = None
    message: str | None = None
    root_cause: str | None = None
    exit_code: int | None = None
    kv_cache_tokens: int | None = None
    num_gpu_blocks: int | None = None
    max_concurrency: float | None = None
    max_model_len: int | None = None
    startup_s: float | None = None
    num_preemptions: int = 0
    engine_steps: int = 0
    engine_args: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status}
        if self.status == "crash":
            out.update(
                crash_category=self.crash_category,
                message=self.message,
                root_cause=self.root_cause,
                exit_code=self.exit_code,
            )
        out.update(
            kv_cache_tokens=self.kv_cache_tokens,
            num_gpu_blocks=self.num_gpu_blocks,
            max_concurrency=self.max_concurrency,
            max_model_len=self.max_model_len,
            startup_s=self.startup_s,
            num_preemptions=self.num_preemptions,
            engine_args=self.engine_args,
        )
        out.update(self.metrics)
        return out


def _engine_args(cfg: EngineConfig) -> dict[str, Any]:
    return {
        "max_num_seqs": cfg.max_num_seqs,
        "max_num_batched_tokens": cfg.max_num_batched_tokens,
        "block_size": cfg.block_size,
        "gpu_memory_utilization": cfg.gpu_memory_utilization,
        "kv_cache_memory_bytes": cfg.kv_cache_memory_bytes,
        "enable_chunked_prefill": cfg.enable_chunked_prefill,
        "enable_prefix_caching": cfg.enable_prefix_caching,
        "optimization_level": cfg.optimization_level,
        "cudagraph_mode": cfg.cudagraph_mode,
        "max_cudagraph_capture_size": cfg.max_capture_size,
        "kv_cache_dtype": cfg.kv_cache_dtype,
        "tensor_parallel_size": cfg.tensor_parallel_size,
    }


def simulate(
    engine_argv: Sequence[str],
    workload: WorkloadSpec,
    gpu: str | GpuSpec,
    *,
    seed: int = 0,
    gpu_count: int = 1,
    used_bytes: int = 0,
    percentiles: Sequence[float] = (90.0, 95.0, 99.0),
    goodput_thresholds_s: Mapping[str, float] | None = None,
) -> SimResult:
    """Start a simulated ``vllm serve`` with ``engine_argv`` and benchmark ``workload`` against it."""
    try:
        server = start_server(engine_argv, gpu, gpu_count=gpu_count, used_bytes=used_bytes)
    except StartupFailure as failure:
        return SimResult(
            "crash",
            crash_category=failure.category,
            message=str(failure),
            root_cause=failure.root_cause,
            exit_code=failure.exit_code,
        )
    except ArgparseExit as exc:
        line = exc.line
        return SimResult(
            "crash",
            crash_category="config_invalid",
            message=line,
            root_cause=line,
            exit_code=exc.status,
        )
    run = run_workload(server, workload, seed=seed, percentiles=percentiles, goodput_thresholds_s=goodput_thresholds_s)
    run.startup_s = server.startup_s
    return run


def run_workload(
    server: SimulatedServer,
    workload: WorkloadSpec,
    *,
    seed: int = 0,
    percentiles: Sequence[float] = (90.0, 95.0, 99.0),
    goodput_thresholds_s: Mapping[str, float] | None = None,
) -> SimResult:
    """Benchmark ``workload`` against a started simulated server, in virtual time."""
    workload.validate()
    engine = server.engine(seed)
    requests = workload_requests(workload, server.cfg.model)
    arrivals = arrival_offsets(workload, len(requests))
    loop = _VirtualClient(engine, requests, arrivals, workload.max_concurrency)
    records, itl_s, duration = loop.run()
    plan = server.plan
    return SimResult(
        "ok",
        metrics=compute_metrics(
            records, duration, itl_s=itl_s, percentiles=percentiles, goodput_thresholds_s=goodput_thresholds_s
        ),
        kv_cache_tokens=plan.kv_tokens,
        num_gpu_blocks=plan.num_blocks,
        max_concurrency=round(plan.max_concurrency, 2),
        max_model_len=plan.max_model_len,
        num_preemptions=engine.scheduler.num_preemptions,
        engine_steps=engine.step_index,
        engine_args=_engine_args(server.cfg),
    )


@functools.lru_cache(maxsize=4)
def workload_requests(workload: WorkloadSpec, model: str) -> tuple[WorkloadRequest, ...]:
    """The requests of ``workload`` for ``model``, as the load generator makes them for a real server:
    in the model's own tokens when it has a tokenizer on this machine, else the simulator's vocabulary.
    Cached: a tuner replays one workload seed on many configs, and a model's tokenizer costs more."""
    return tuple(build_requests(workload, prompt_tokenizer(model, sim_fallback=True)))


class _VirtualClient:
    """``vllm bench serve`` against the engine, in virtual time."""

    def __init__(self, engine: EngineCore, requests: Sequence[Any], arrivals: np.ndarray, max_conc: int | None):
        from .scheduler import SimRequest

        self.engine = engine
        self.max_conc = max_conc or math.inf
        self.pending: list[tuple[float, int]] = [(float(t), i) for i, t in enumerate(arrivals)]
        heapq.heapify(self.pending)
        caching = engine.cfg.enable_prefix_caching
        self.sim = [
            SimRequest(
                req_id=i,
                prompt_len=r.prompt_len,
                max_tokens=r.output_len,
                prompt_ids=tuple(r.prompt_token_ids) if caching else None,
            )
            for i, r in enumerate(requests)
        ]
        self.records: list[RequestRecord | None] = [None] * len(requests)
        self.in_flight = 0
        self.slot_free_since = 0.0  # when the client's concurrency limit last stopped being full
        self.gap_runs: list[tuple[np.ndarray, int]] = []
        self.gaps: list[float] = []

    def _admit(self, now: float) -> None:
        while self.pending and self.pending[0][0] <= now and self.in_flight < self.max_conc:
            arrival, i = heapq.heappop(self.pending)
            req = self.sim[i]
            req.arrival_s = max(arrival, self.slot_free_since)
            try:
                self.engine.add_request(req)
            except RequestRejected as exc:
                self.records[i] = RequestRecord(False, req.prompt_len, error=str(exc), send_s=req.arrival_s, status=400)
                continue
            self.in_flight += 1

    def _emit(self, req: Any, t: float) -> None:
        if req.first_token_s is None:
            req.first_token_s = t
        else:
            self.gaps.append(t - req.last_token_s)
        req.last_token_s = t

    def _complete(self, req: Any, t: float) -> None:
        req.finish_s = t
        if self.in_flight >= self.max_conc:
            self.slot_free_since = t
        self.in_flight -= 1
        self.records[req.req_id] = RequestRecord(
            True,
            prompt_len=req.prompt_len,
            output_tokens=req.num_output,
            ttft_s=req.first_token_s - req.arrival_s,
            e2el_s=t - req.arrival_s,
            send_s=req.arrival_s,
        )

    def _next_send_time(self) -> float:
        if not self.pending or self.in_flight >= self.max_conc:
            return math.inf
        return self.pending[0][0]

    def run(self) -> tuple[list[RequestRecord], np.ndarray, float]:
        engine = self.engine
        now = 0.0
        start = min((t for t, _ in self.pending), default=0.0)
        while self.pending or engine.has_work:
            self._admit(now)
            if not engine.has_work:
                if not self.pending:
                    break
                now = max(now, self.pending[0][0])
                continue
            k = engine.decode_run_length()
            if k >= 2:
                durations = engine.decode_durations(k)
                ends = now + np.cumsum(durations)
                # steps that start before the next request is sent see the same batch
                starts_before = int(np.searchsorted(ends, self._next_send_time(), side="left")) + 1
                k = min(k, starts_before)
            if k >= 2:
                run = engine.decode_run(k)
                ends = now + np.cumsum(run.durations_s)
                for req in run.batch:
                    self._emit(req, float(ends[0]))
                    req.last_token_s = float(ends[-1])
                self.gap_runs.append((np.diff(ends), len(run.batch)))
                now = float(ends[-1])
                for req in run.finished:
                    self._complete(req, now)
                continue
            result = engine.step()
            now += result.duration_s
            for req in result.emitted:
                self._emit(req, now)
            for req in result.finished:
                self._complete(req, now)
        records = [r if r is not None else RequestRecord(False, error="not completed") for r in self.records]
        runs = [np.repeat(g, n) for g, n in self.gap_runs]
        itl = np.concatenate([np.asarray(self.gaps, dtype=float), *runs]) if runs or self.gaps else np.zeros(0)
        return records, itl, max(now - start, 1e-9)
