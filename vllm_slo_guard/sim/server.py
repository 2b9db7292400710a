"""The server face of the simulated engine: ``vllm serve`` in real time, without a GPU.

Command line (the ``--sim-*`` flags are ours, everything else is parsed exactly like ``vllm serve``)::

    python -m vllm_slo_guard.sim.server MODEL [vllm serve flags ...]
        --sim-gpu GPU                 catalog name (A100-40GB, H100-80GB, L4-24GB, cpu, ...); required unless
                                      SLO_GUARD_SIM_GPU is set
        [--sim-gpu-count N]           GPUs in the node (tensor parallelism needs them), default 1
        [--sim-gpu-memory-used SIZE]  device memory held by other processes (8GiB, 512M, ...), default 0
        [--sim-seed N]                seed of the engine's timing noise, default 0 (as ``evaluator.simulate``)
        [--sim-startup-delay SECS]    how long startup really takes; the logged figures are the simulated
                                      estimate, but only this delay is slept (default 0, so tests are fast)

Both ``--sim-gpu X`` and ``--sim-gpu=X`` work. A missing or unknown GPU or model is one error line on
stderr and exit status 1. Argument errors behave like vLLM's: argparse's usage text and status 2.

What it reproduces of vLLM 0.32 (reference/vllm-facts.md §2, §3, §4, §10):

- the startup sequence on stdout with vLLM's prefixes (GPU or CPU flavour); uvicorn's own lines on
  stderr and its access log on stdout (uvicorn's defaults, which vLLM keeps); ``VLLM_DISABLE_LOG_LOGO``,
  ``VLLM_LOG_STATS_INTERVAL`` and ``VLLM_API_KEY`` are honoured;
- the listening socket is bound before the engine starts (a busy port fails at once with
  ``OSError: [Errno 98] Address already in use``, exit 1) and only listens once startup is complete;
- startup failures printed the way the vLLM process that raised them would print them (a traceback in
  the API server, or the EngineCore / Worker error blocks and ``Engine core initialization failed``);
- ``GET /health``, ``/v1/models``, ``/version``, ``/metrics``, ``/load``, ``/ping``, ``POST /tokenize``,
  ``/detokenize``, ``/v1/completions`` and ``/v1/chat/completions`` (streaming and not);
- a death of the engine at run time: EngineDeadError in the log, HTTP 500, ``/health`` 503, then the
  process exits with status **0** about 1.5 s later;
- SIGTERM / SIGINT: vLLM's ``[shutdown]`` lines (including the EngineDeadError vLLM 0.32 logs on every
  shutdown), in-flight requests end with vLLM's 500 error, exit status 0 within a fraction of a second;
- ``/metrics`` in prometheus_client's exposition, with vLLM's families, labels and histogram buckets;
  ``--disable-log-stats`` removes every ``vllm:`` series (and the periodic stats line), as in vLLM.

The engine runs in real time: one asyncio task owns the :class:`EngineCore`, executes one step, waits
until ``previous deadline + step duration`` (absolute deadlines, so the sleep overshoot never
accumulates), then hands one token to every request that produced one in that step.

Request semantics:

- the simulated model never produces EOS, so every request generates exactly ``max_tokens`` tokens
  (``finish_reason="length"``) whether or not ``ignore_eos`` is set; ``max_tokens`` defaults to the
  rest of ``max_model_len``, as in vLLM; ``n`` must be 1;
- ``prompt`` may be a string, a list of token ids, or a list of strings / token-id lists, of which only
  the **first** is served; chat ``messages`` become the space-joined text of their contents (no chat
  template tokens are added); text is counted by :class:`SimTokenizer` (one word, one token);
- each output token's text is one vocabulary word with a leading space, chosen deterministically from
  the prompt and the token's position;
- a client that disconnects from a stream aborts its request (its KV blocks are freed).

Fault switch: the environment variable ``SLO_GUARD_SIM_FAULT`` holds comma-separated items::

    hang_startup     log the first startup lines, then never become ready (the socket is bound but never
                     listens, so connections are refused); SIGTERM still ends the process
    die_after=N      after N requests completed, the engine process "dies": EngineDeadError in the log,
                     in-flight and new requests get HTTP 500, /health 503, exit status 0 about 1.5 s later
    stall_after=N    after N requests completed, the engine stops stepping: requests hang, /health stays 200
    slow=F           every engine step takes F times as long (F > 0)

for example ``SLO_GUARD_SIM_FAULT=die_after=2`` or ``SLO_GUARD_SIM_FAULT=slow=3,stall_after=10``.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import gc
import json
import math
import os
import resource
import secrets
import signal
import socket
import sys
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ..errors import InputError, SloGuardError
from ..modelinfo import ModelArch, load_model_arch
from ..units import parse_duration, parse_size
from .args import ArgparseExit, non_default_args, parse_serve_args
from .catalog import GpuSpec, resolve_gpu
from .config import EngineConfig, resolve_config
from .engine import EngineCore, RequestRejected, StepResult
from .evaluator import SimulatedServer, start_server
from .failures import StartupFailure
from .logs import (
    ENGINE_DEAD_MESSAGE,
    VLLM_VERSION,
    EngineFacts,
    StartupLog,
    TracebackPaths,
    gib,
    make_vllm_log,
    stats_message,
)
from .memory import MemoryPlan, plan_memory, weight_bytes_per_rank
from .scheduler import SimRequest
from .tokenizer import VOCAB_SIZE, SimTokenizer

FAULT_ENV = "SLO_GUARD_SIM_FAULT"
GPU_ENV = "SLO_GUARD_SIM_GPU"
STATS_INTERVAL_ENV = "VLLM_LOG_STATS_INTERVAL"  # vLLM's own variable: read, never defined by us
API_KEY_ENV = "VLLM_API_KEY"
NO_LOGO_ENV = "VLLM_DISABLE_LOG_LOGO"
DEATH_EXIT_DELAY_S = 1.5  # a dead engine's API server exits about this long after the death (real run: 2 s)
RESYNC_S = 1.0  # if the loop falls this far behind its timeline (process suspended), restart the timeline
IMPORT_S = 12.0  # the part of the startup estimate spent importing vLLM (see evaluator.estimate_startup_s)
LOAD_BYTES_PER_S = 1.5e9
_TOKEN_STRIDE = 7919  # spreads consecutive output tokens over the vocabulary
_DEAD = -1  # queue item: the engine died
_ABORTED = -2  # queue item: the request was aborted (client gone)

# vLLM 0.32's histogram buckets (v1/metrics/buckets.py; seen in metrics_sample_after_1_request.txt)
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
    160.0, 640.0, 2560.0,
)  # fmt: skip
ITL_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
E2E_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0,
    1920.0, 7680.0,
)  # fmt: skip
ITERATION_TOKEN_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
FINISHED_REASONS = ("stop", "length", "abort", "error", "repetition")

# (path, methods) of every route, in the order vLLM lists its routes at startup
ROUTES = (
    ("/load", "GET"),
    ("/version", "GET"),
    ("/health", "GET"),
    ("/metrics", "GET"),
    ("/tokenize", "POST"),
    ("/detokenize", "POST"),
    ("/v1/models", "GET"),
    ("/ping", "GET"),
    ("/ping", "POST"),
    ("/v1/chat/completions", "POST"),
    ("/v1/completions", "POST"),
)


# --- command line -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimFlags:
    """Our own ``--sim-*`` flags: the simulated hardware and how the simulation behaves."""

    gpu: str | None  # None: not given (an error once vLLM's own argument parsing has passed)
    gpu_count: int = 1
    used_bytes: int = 0
    seed: int = 0
    startup_delay_s: float = 0.0


_SIM_FLAGS = ("gpu", "gpu-count", "gpu-memory-used", "seed", "startup-delay")


def _int_flag(name: str, text: str, minimum: int) -> int:
    """A bad number in our own flags is a user error (one line), not an argparse exit."""
    try:
        value = int(text)
    except ValueError:
        raise InputError(f"--sim-{name} expects a whole number, got {text!r}") from None
    if value < minimum:
        raise InputError(f"--sim-{name} must be at least {minimum}, got {value}")
    return value


def split_sim_flags(argv: Sequence[str], env: Mapping[str, str]) -> tuple[SimFlags, list[str]]:
    """Take the ``--sim-*`` flags out of ``argv``; the rest is a ``vllm serve`` command line."""
    values: dict[str, str] = {}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith(("--sim-", "--sim_")):
            rest.append(arg)
            i += 1
            continue
        flag, eq, value = arg.partition("=")
        name = flag[len("--sim-") :].replace("_", "-")
        if name not in _SIM_FLAGS:
            known = ", ".join(f"--sim-{n}" for n in _SIM_FLAGS)
            raise InputError(f"unknown simulator flag {flag}; known: {known}")
        if not eq:
            if i + 1 >= len(argv):
                raise InputError(f"{flag} expects a value")
            value = argv[i + 1]
            i += 1
        values[name] = value
        i += 1
    flags = SimFlags(
        gpu=values.get("gpu") or env.get(GPU_ENV) or None,
        gpu_count=_int_flag("gpu-count", values.get("gpu-count", "1"), 1),
        used_bytes=parse_size(values.get("gpu-memory-used", "0")),
        seed=_int_flag("seed", values.get("seed", "0"), 0),
        startup_delay_s=parse_duration(values.get("startup-delay", "0")),
    )
    return flags, rest


@dataclass(frozen=True)
class Fault:
    """The injected misbehaviour of ``SLO_GUARD_SIM_FAULT`` (see the module docstring)."""

    hang_startup: bool = False
    die_after: int | None = None
    stall_after: int | None = None
    slow: float = 1.0


def parse_fault(text: str) -> Fault:
    """Parse ``hang_startup,die_after=N,stall_after=N,slow=F``; unknown items are an error, not ignored."""
    kwargs: dict[str, Any] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, eq, value = item.partition("=")
        key = key.strip().replace("-", "_")
        try:
            if key == "hang_startup" and not eq:
                kwargs["hang_startup"] = True
            elif key in ("die_after", "stall_after") and eq and int(value) >= 0:
                kwargs[key] = int(value)
            elif key == "slow" and eq and math.isfinite(float(value)) and float(value) > 0:
                kwargs["slow"] = float(value)
            else:
                raise ValueError(item)
        except ValueError:
            raise InputError(
                f"bad {FAULT_ENV} item {item!r}; expected hang_startup, die_after=N, stall_after=N or slow=F"
            ) from None
    return Fault(**kwargs)


# --- startup ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Launch:
    """Everything startup needs, resolved before the first vLLM line is printed."""

    flags: SimFlags
    fault: Fault
    gpu: GpuSpec
    ns: argparse.Namespace
    arch: ModelArch
    engine_argv: list[str]


def _prepare(argv: Sequence[str], env: Mapping[str, str]) -> _Launch:
    """Our flags, vLLM's argument parsing (first, so ``--help`` works), the fault switch, GPU and model."""
    flags, engine_argv = split_sim_flags(argv, env)
    ns = parse_serve_args(engine_argv)
    if not ns.model:
        raise ArgparseExit(2, "vllm serve: error: the following arguments are required: model_tag\n")
    fault = parse_fault(env.get(FAULT_ENV, ""))
    if flags.gpu is None:
        raise InputError(f"--sim-gpu is required (or set {GPU_ENV}), e.g. --sim-gpu A100-40GB or --sim-gpu cpu")
    return _Launch(flags, fault, resolve_gpu(flags.gpu), ns, load_model_arch(ns.model), engine_argv)


def bind_socket(host: str | None, port: int) -> socket.socket:
    """Bind (not listen) like vLLM's ``create_server_socket``: a busy port fails before the engine starts."""
    address = host or "0.0.0.0"
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
    except OSError:
        sock.close()
        raise
    return sock


def _server_url(host: str | None, sock: socket.socket) -> str:
    """The URL vLLM logs; the bound socket knows the real port (``--port 0`` works)."""
    shown = host or "0.0.0.0"
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{sock.getsockname()[1]}"


def _requested_max_model_len(launch: _Launch) -> int:
    """``Using max model len`` before the engine resolved it: the flag, else the model's limit."""
    length = launch.ns.max_model_len
    return length if length is not None and length > 0 else launch.arch.max_position_embeddings


def _engine_facts(launch: _Launch, cfg: EngineConfig | None, max_seq_len: int) -> EngineFacts:
    """What the engine-config line shows, from the resolved config when there is one."""
    ns = launch.ns
    if cfg is None:  # the config itself failed (e.g. no attention backend for the KV dtype)
        return EngineFacts(
            ns.model, (ns.served_model_name or [ns.model])[0], "bfloat16", max_seq_len, ns.load_format,
            ns.tensor_parallel_size, ns.pipeline_parallel_size, bool(ns.enforce_eager), ns.kv_cache_dtype,
            "cpu" if launch.gpu.is_cpu else "cuda", ns.seed, ns.enable_prefix_caching is not False,
            ns.enable_chunked_prefill is not False, ns.optimization_level, "NONE", (),
        )  # fmt: skip
    return EngineFacts(
        cfg.model, cfg.served_model_name, cfg.dtype, max_seq_len, ns.load_format, cfg.tensor_parallel_size,
        cfg.pipeline_parallel_size, bool(ns.enforce_eager), cfg.kv_cache_dtype,
        "cpu" if launch.gpu.is_cpu else "cuda", cfg.seed, cfg.enable_prefix_caching, cfg.enable_chunked_prefill,
        cfg.optimization_level, cfg.cudagraph_mode, cfg.cudagraph_capture_sizes,
    )  # fmt: skip


@dataclass(frozen=True)
class _Timings:
    """The simulated startup estimate split into the phases vLLM logs (only for the logged figures)."""

    load_s: float
    compile_s: float
    capture_s: float
    init_s: float


def _timings(cfg: EngineConfig, arch: ModelArch, gpu: GpuSpec, startup_s: float) -> _Timings:
    """Split ``startup_s`` (evaluator.estimate_startup_s) into load, compile, capture and init."""
    load_s = weight_bytes_per_rank(cfg, arch) / LOAD_BYTES_PER_S
    init_s = max(startup_s - IMPORT_S - load_s, 0.04)
    capture_s = 0.0
    if cfg.cudagraph_capture_sizes:
        capture_s = 0.12 * len(cfg.cudagraph_capture_sizes) * (2 if cfg.full_graph_sizes else 1)
    compile_s = max(init_s - capture_s, 0.0) if cfg.optimization_level >= 1 else 0.0
    return _Timings(load_s, compile_s, capture_s, init_s)


def _hang_forever() -> None:
    """``hang_startup``: never become ready; the default SIGTERM action still ends the process."""
    while True:
        time.sleep(3600)


def _kv_suggestion(sim: SimulatedServer, used_bytes: int) -> str:
    """gpu_worker.py's advice line: the exact ``--kv-cache-memory`` bytes for the current budget."""
    plan, gpu, cfg = sim.plan, sim.gpu, sim.cfg
    free = gpu.memory_bytes - gpu.context_bytes - used_bytes
    consumed = plan.weight_bytes + plan.non_torch_bytes
    overhead = consumed + plan.activation_bytes + plan.cudagraph_bytes
    fit, full = plan.requested_bytes - overhead, free - overhead
    return (
        f"Free memory on device ({gib(free)}/{gib(gpu.memory_bytes)} GiB) on startup. Desired GPU memory "
        f"utilization is ({cfg.gpu_memory_utilization}, {gib(plan.requested_bytes)} GiB). Actual usage is "
        f"{gib(consumed)} GiB for consumed memory (weights + non-torch), {gib(plan.activation_bytes)} GiB for peak "
        f"activation, and {gib(plan.cudagraph_bytes)} GiB for CUDAGraph memory. Replace gpu_memory_utilization "
        f"config with `--kv-cache-memory={fit}` ({gib(fit)} GiB) to fit into requested memory, or "
        f"`--kv-cache-memory={full}` ({gib(full)} GiB) to fully utilize gpu memory. Current kv cache memory in use "
        f"is {gib(plan.kv_bytes)} GiB."
    )


def _log_engine_startup(out: StartupLog, launch: _Launch, sim: SimulatedServer) -> None:
    """The successful startup lines from the engine config to ``init engine ... took``."""
    cfg, plan = sim.cfg, sim.plan
    times = _timings(cfg, sim.arch, sim.gpu, sim.startup_s)
    out.engine_started(_engine_facts(launch, cfg, plan.max_model_len))
    out.loading(cfg.model)
    out.loaded(plan.weight_bytes, times.load_s)
    if cfg.optimization_level >= 1 and not launch.ns.enforce_eager:
        out.compiled(times.compile_s if not sim.gpu.is_cpu else times.init_s, cfg.max_num_batched_tokens)
    if launch.fault.hang_startup:
        _hang_forever()
    time.sleep(launch.flags.startup_delay_s)
    if cfg.cudagraph_capture_sizes:
        piecewise = cfg.cudagraph_capture_sizes if cfg.cudagraph_mode in ("PIECEWISE", "FULL_AND_PIECEWISE") else ()
        out.graph_estimate(piecewise, cfg.full_graph_sizes, plan.cudagraph_bytes)
    out.kv_memory(plan.kv_bytes, plan.total_bytes, plan.requested_bytes, cfg.kv_cache_memory_bytes is not None)
    if cfg.max_model_len == -1 and plan.max_model_len < sim.arch.max_position_embeddings:
        out.log.info(
            "EngineCore",
            "kv_cache_utils.py:2454",
            f"Auto-fit max_model_len: reduced from {sim.arch.max_position_embeddings} to {plan.max_model_len}",
        )
    out.kv_capacity(plan.kv_tokens, plan.max_model_len, plan.max_concurrency)
    if cfg.cudagraph_capture_sizes:
        out.graphs_captured(times.capture_s, plan.cudagraph_bytes)
    if not sim.gpu.is_cpu and cfg.kv_cache_memory_bytes is None:
        out.kv_suggestion(_kv_suggestion(sim, launch.flags.used_bytes))
    out.init_done(times.init_s, times.compile_s)


def _failure_stage(failure: StartupFailure) -> str:
    """How far startup got before ``failure``: decides which lines precede its error block."""
    message = failure.message
    if failure.where == "engine_core":
        return "backend" if "attention backend" in message else "kv_check"
    if "No common block size" in message:
        return "kernel"
    if message.startswith("Failed to load model"):
        return "load"
    if "on kv cache allocation" in message or failure.exc_type == "torch.OutOfMemoryError":
        return "kv_alloc"
    return "worker_init"


def _available_kv_bytes(message: str) -> float | None:
    """The available KV memory vLLM quotes in its "max seq len" error (the only figure we have then)."""
    marker = "available KV cache memory ("
    at = message.find(marker)
    if at < 0:
        return None
    return float(message[at + len(marker) :].split(" ", 1)[0]) * 2**30


def _config_or_none(launch: _Launch) -> EngineConfig | None:
    """The resolved config for the lines before an engine failure (None if the config itself failed)."""
    try:
        return resolve_config(launch.ns, launch.arch, launch.gpu, gpu_count=launch.flags.gpu_count)
    except StartupFailure:
        return None


def _log_progress(out: StartupLog, launch: _Launch, cfg: EngineConfig, stage: str, message: str) -> None:
    """The engine lines vLLM prints before a failure at ``stage`` (model load, KV sizing)."""
    if stage in ("load", "kv_check", "kv_alloc", "kernel"):
        out.loading(cfg.model)
    if stage in ("kv_check", "kv_alloc", "kernel"):
        weights = weight_bytes_per_rank(cfg, launch.arch)
        out.loaded(weights, weights / LOAD_BYTES_PER_S)
    if stage == "kernel":  # the CPU block-size check comes after the KV cache was sized
        plan = plan_memory(cfg, launch.arch, launch.gpu, used_bytes=launch.flags.used_bytes)
        out.kv_memory(plan.kv_bytes, plan.total_bytes, plan.requested_bytes, cfg.kv_cache_memory_bytes is not None)
        out.kv_capacity(plan.kv_tokens, plan.max_model_len, plan.max_concurrency)
    elif stage == "kv_check":
        explicit, available = cfg.kv_cache_memory_bytes, _available_kv_bytes(message)
        if launch.gpu.is_cpu and explicit is not None:
            out.kv_memory(explicit, launch.gpu.memory_bytes, explicit, explicit=True)
        elif available is not None and not launch.gpu.is_cpu:
            out.kv_memory(available, launch.gpu.memory_bytes, 0, explicit=False)


def _report_failure(out: StartupLog, launch: _Launch, failure: StartupFailure) -> int:
    """Print ``failure`` the way the vLLM process that raised it would, with the lines before it."""
    if failure.where == "argparse":
        sys.stderr.write(failure.message if failure.message.endswith("\n") else failure.message + "\n")
        return failure.exit_code
    requested_len = _requested_max_model_len(launch)
    model_failed = "validation error for ModelConfig" in failure.message
    out.model_config(launch.arch.architecture, None if model_failed else requested_len)
    if failure.where == "api_server":
        out.api_server_failure(failure.exc_type, failure.message)
        return failure.exit_code
    cfg = _config_or_none(launch)
    if cfg is not None:
        out.config_warnings(cfg.warnings, bool(launch.ns.enforce_eager))
    out.engine_started(_engine_facts(launch, cfg, requested_len))
    stage = _failure_stage(failure)
    if cfg is not None:
        _log_progress(out, launch, cfg, stage, failure.message)
    out.engine_failure(failure.where, stage, failure.exc_type, failure.message)
    return failure.exit_code


# --- metrics ------------------------------------------------------------------------------------


def _prom_float(value: float) -> str:
    """Prometheus' Go-style float text (``1.0``, ``+Inf``, ``1.796e+09``), as prometheus_client writes it."""
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(float(value))
    dot = text.find(".")
    if value > 0 and dot > 6 and "e" not in text:
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0").rstrip(".")
        return f"{mantissa}e+0{dot - 1}"
    return text


def _escape_label(value: str) -> str:
    """Prometheus label-value escaping (backslash, newline, quote)."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, str]) -> str:
    """``{a="1",b="2"}`` with names sorted, as prometheus_client orders them."""
    return "{" + ",".join(f'{k}="{_escape_label(v)}"' for k, v in sorted(labels.items())) + "}"


def bucket_1_2_5(max_value: int) -> tuple[int, ...]:
    """vLLM's token-count buckets: 1, 2, 5, 10, 20, 50, ... up to ``max_value``."""
    out: list[int] = []
    exponent = 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if value > max_value:
                return tuple(out)
            out.append(value)
        exponent += 1


@dataclass
class Histogram:
    """A Prometheus histogram: per-bucket counts (non-cumulative inside, cumulative when rendered)."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.n += 1


@dataclass
class ServerStats:
    """What the API server's stat logger records per request (vLLM's ``vllm:*`` series)."""

    max_model_len: int
    started_at: float = field(default_factory=time.time)
    prompt_tokens: int = 0  # counted at each request's first token, as vLLM does
    cached_prompt_tokens: int = 0
    finished: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FINISHED_REASONS, 0))
    ttft: Histogram = field(default_factory=lambda: Histogram(TTFT_BUCKETS))
    itl: Histogram = field(default_factory=lambda: Histogram(ITL_BUCKETS))
    tpot: Histogram = field(default_factory=lambda: Histogram(ITL_BUCKETS))
    e2e: Histogram = field(default_factory=lambda: Histogram(E2E_BUCKETS))
    iteration_tokens: Histogram = field(default_factory=lambda: Histogram(ITERATION_TOKEN_BUCKETS))
    prompt_len: Histogram = field(init=False)
    generation_len: Histogram = field(init=False)
    max_tokens: Histogram = field(init=False)

    def __post_init__(self) -> None:
        buckets = tuple(float(b) for b in bucket_1_2_5(self.max_model_len))
        self.prompt_len = Histogram(buckets)
        self.generation_len = Histogram(buckets)
        self.max_tokens = Histogram(buckets)


@dataclass(frozen=True)
class MetricsView:
    """A snapshot of the engine-side figures /metrics shows next to :class:`ServerStats`."""

    running: int
    waiting: int
    kv_usage: float
    preemptions: int
    prefix_queries: int
    prefix_hits: int
    generation_tokens: int


class _Exposition:
    """Builds Prometheus text in prometheus_client's layout (HELP, TYPE, ``_total`` and ``_created``)."""

    def __init__(self, base: Mapping[str, str], created: float) -> None:
        self.base = dict(base)
        self.created = _prom_float(created)
        self.lines: list[str] = []

    def _family(self, name: str, kind: str, help_text: str) -> None:
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]

    def gauge(self, name: str, help_text: str, value: float, **labels: str) -> None:
        self._family(name, "gauge", help_text)
        self.lines.append(f"{name}{_labels({**self.base, **labels})} {_prom_float(value)}")

    def counter(self, name: str, help_text: str, values: Mapping[str, float], label: str = "") -> None:
        """``values`` maps a value of ``label`` to its count ("" when the counter has no extra label)."""
        for suffix, kind in (("_total", "counter"), ("_created", "gauge")):
            self._family(f"{name}{suffix}", kind, help_text)
            for key, value in values.items():
                labels = {**self.base, label: key} if label else self.base
                shown = _prom_float(value) if suffix == "_total" else self.created
                self.lines.append(f"{name}{suffix}{_labels(labels)} {shown}")

    def histogram(self, name: str, help_text: str, hist: Histogram) -> None:
        self._family(name, "histogram", help_text)
        running = 0
        for bound, count in zip((*hist.bounds, math.inf), hist.counts, strict=True):
            running += count
            self.lines.append(f"{name}_bucket{_labels({**self.base, 'le': _prom_float(bound)})} {_prom_float(running)}")
        self.lines.append(f"{name}_count{_labels(self.base)} {_prom_float(hist.n)}")
        self.lines.append(f"{name}_sum{_labels(self.base)} {_prom_float(hist.total)}")
        self._family(f"{name}_created", "gauge", help_text)
        self.lines.append(f"{name}_created{_labels(self.base)} {self.created}")


def _process_lines(started_at: float) -> list[str]:
    """The ``process_*`` series, present with or without ``--disable-log-stats``."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return [
        "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.",
        "# TYPE process_start_time_seconds gauge",
        f"process_start_time_seconds {_prom_float(round(started_at, 2))}",
        "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.",
        "# TYPE process_cpu_seconds_total counter",
        f"process_cpu_seconds_total {_prom_float(usage.ru_utime + usage.ru_stime)}",
    ]


def render_metrics(
    stats: ServerStats, view: MetricsView, model_name: str, cache_info: Mapping[str, str], log_stats: bool
) -> str:
    """The /metrics text; with ``--disable-log-stats`` vLLM has no ``vllm:`` series at all."""
    lines = _process_lines(stats.started_at)
    if not log_stats:
        return "\n".join(lines) + "\n"
    out = _Exposition({"engine": "0", "model_name": model_name}, stats.started_at)
    out.gauge("vllm:num_requests_running", "Number of requests in model execution batches.", view.running)
    out.gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", view.waiting)
    out.gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", view.kv_usage)
    out.counter(
        "vllm:prefix_cache_queries",
        "Prefix cache queries, in terms of number of queried tokens.",
        {"": view.prefix_queries},
    )
    out.counter(
        "vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.", {"": view.prefix_hits}
    )
    out.counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.", {"": view.preemptions})
    out.counter("vllm:prompt_tokens", "Number of prefill tokens processed.", {"": stats.prompt_tokens})
    by_source = {
        "local_compute": stats.prompt_tokens - stats.cached_prompt_tokens,
        "local_cache_hit": stats.cached_prompt_tokens,
        "external_kv_transfer": 0,
    }
    out.counter("vllm:prompt_tokens_by_source", "Number of prompt tokens by source.", by_source, "source")
    out.counter(
        "vllm:prompt_tokens_cached",
        "Number of cached prompt tokens (local + external).",
        {"": stats.cached_prompt_tokens},
    )
    out.counter("vllm:generation_tokens", "Number of generation tokens processed.", {"": view.generation_tokens})
    out.counter("vllm:request_success", "Count of successfully processed requests.", stats.finished, "finished_reason")
    out.histogram("vllm:request_prompt_tokens", "Number of prefill tokens processed.", stats.prompt_len)
    out.histogram("vllm:request_generation_tokens", "Number of generation tokens processed.", stats.generation_len)
    out.histogram(
        "vllm:iteration_tokens_total", "Histogram of number of tokens per engine_step.", stats.iteration_tokens
    )
    out.histogram("vllm:request_params_max_tokens", "Histogram of the max_tokens request parameter.", stats.max_tokens)
    out.histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", stats.ttft)
    out.histogram("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", stats.itl)
    out.histogram(
        "vllm:request_time_per_output_token_seconds",
        "Histogram of time_per_output_token_seconds per request.",
        stats.tpot,
    )
    out.histogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", stats.e2e)
    out._family("vllm:cache_config_info", "gauge", "Information of the LLMEngine CacheConfig")
    out.lines.append(f"vllm:cache_config_info{_labels({**cache_info, 'engine': '0'})} 1.0")
    return "\n".join(lines + out.lines) + "\n"


def cache_config_labels(cfg: EngineConfig, plan: MemoryPlan) -> dict[str, str]:
    """The labels of ``vllm:cache_config_info`` (the memory facts a tuner reads instead of the log)."""
    return {
        "block_size": str(cfg.block_size),
        "cache_dtype": cfg.kv_cache_dtype,
        "enable_prefix_caching": str(cfg.enable_prefix_caching),
        "gpu_memory_utilization": str(cfg.gpu_memory_utilization),
        "is_attention_free": "False",
        "kv_cache_max_concurrency": str(float(plan.max_concurrency)),
        "kv_cache_memory_bytes": str(cfg.kv_cache_memory_bytes),
        "kv_cache_size_tokens": str(plan.kv_tokens),
        "num_cpu_blocks": "None",
        "num_gpu_blocks": str(plan.num_blocks),
        "num_gpu_blocks_override": str(cfg.num_gpu_blocks_override),
        "sliding_window": "None",
        "user_specified_block_size": "False",
    }


# --- the real-time engine -----------------------------------------------------------------------


class RequestStream:
    """One request's channel from the engine loop to its HTTP handler.

    The queue carries the index of each produced token, then nothing more once the last token is in;
    ``_DEAD`` / ``_ABORTED`` end it early.
    """

    __slots__ = ("arrival", "first_at", "last_at", "queue", "req", "token_base")

    def __init__(self, req: SimRequest, arrival: float, token_base: int) -> None:
        self.req = req
        self.arrival = arrival
        self.first_at: float | None = None
        self.last_at = arrival
        self.token_base = token_base
        self.queue: asyncio.Queue[int] = asyncio.Queue()

    def token_id(self, index: int) -> int:
        """The vocabulary id of output token ``index``: deterministic per prompt and position."""
        return (self.token_base + index * _TOKEN_STRIDE) % VOCAB_SIZE


class EngineRunner:
    """Owns the :class:`EngineCore` and drives it in real time; HTTP handlers submit and read streams."""

    def __init__(
        self, sim: SimulatedServer, out: StartupLog, *, seed: int, fault: Fault, served_names: Sequence[str]
    ) -> None:
        self.sim = sim
        self.engine: EngineCore = sim.engine(seed)
        self.out = out
        self.fault = fault
        self.served_names = tuple(served_names)
        self.model_name = self.served_names[0]
        self.max_model_len = sim.plan.max_model_len
        self.caching = sim.cfg.enable_prefix_caching
        self.log_stats = not sim.cfg.disable_log_stats
        self.stats = ServerStats(self.max_model_len)
        self.cache_info = cache_config_labels(sim.cfg, sim.plan)
        self.tokenizer = SimTokenizer()
        words = [self.tokenizer.decode([i]) for i in range(VOCAB_SIZE)]
        self.token_json = [(" " + w).encode() for w in words]  # vocabulary words need no JSON escaping
        self.token_text = [" " + w for w in words]
        self.streams: dict[int, RequestStream] = {}
        self.dead = False
        self.stalled = False
        self.num_completed = 0
        self.on_exit: Callable[[], None] = lambda: None
        self._next_id = 0
        self._wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # lifecycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the engine loop (and the periodic stats line) on the running event loop."""
        self._wake = asyncio.Event()
        self._tasks.append(asyncio.create_task(self._engine_loop()))
        if self.log_stats:
            self._tasks.append(asyncio.create_task(self._stats_loop(_stats_interval())))
        if self.fault.die_after == 0:
            asyncio.get_running_loop().call_soon(self.die)

    async def stop(self) -> None:
        """Cancel the engine and stats tasks at application shutdown."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def _fail_all(self) -> None:
        """Give every in-flight request the engine-dead error and wake the loop so it can end."""
        for stream in self.streams.values():
            stream.queue.put_nowait(_DEAD)
        self.streams.clear()
        if self._wake is not None:
            self._wake.set()

    def die(self) -> None:
        """The engine process is gone: log it like vLLM, fail every request, exit (status 0) shortly after."""
        if self.dead:
            return
        self.dead = True
        self.out.engine_died()
        self._fail_all()
        asyncio.get_running_loop().call_later(DEATH_EXIT_DELAY_S, self.on_exit)

    def shutdown(self, signal_name: str) -> None:
        """Graceful shutdown (SIGTERM/SIGINT): vLLM aborts everything; in-flight requests see EngineDeadError."""
        if self.dead:
            return
        self.dead = True
        self.out.shutdown_triggered(signal_name)
        self._fail_all()

    # requests -------------------------------------------------------------------------------------
    def check(self, prompt_len: int, max_tokens: int) -> None:
        """Raise ``RequestRejected`` with vLLM's text if the request can never fit ``max_model_len``."""
        self.engine.check_request(prompt_len, max_tokens)

    def submit(self, prompt_ids: Sequence[int] | None, prompt_len: int, max_tokens: int) -> RequestStream:
        """Add a request to the engine now; the returned stream yields its tokens as steps finish."""
        req = SimRequest(
            req_id=self._next_id,
            prompt_len=prompt_len,
            max_tokens=max_tokens,
            prompt_ids=tuple(prompt_ids) if self.caching and prompt_ids is not None else None,
        )
        self._next_id += 1
        self.engine.add_request(req)
        first = prompt_ids[0] if prompt_ids else 0
        stream = RequestStream(req, time.perf_counter(), (prompt_len * 131 + first) % VOCAB_SIZE)
        self.streams[req.req_id] = stream
        self.stats.max_tokens.observe(max_tokens)
        assert self._wake is not None
        self._wake.set()
        return stream

    def abort(self, stream: RequestStream) -> None:
        """The client went away: take the request out of the engine and end its stream."""
        if self.streams.pop(stream.req.req_id, None) is None:
            return
        self.engine.scheduler.abort(stream.req)
        self.stats.finished["abort"] += 1
        stream.queue.put_nowait(_ABORTED)

    # the loop -------------------------------------------------------------------------------------
    async def _engine_loop(self) -> None:
        """Step the engine in real time: absolute deadlines, so sleep overshoot never accumulates."""
        engine = self.engine
        clock = time.perf_counter
        wake = self._wake
        assert wake is not None
        slow = self.fault.slow
        t_prev = clock()
        while not self.dead:
            if self.stalled or not engine.has_work:
                wake.clear()
                await wake.wait()
                t_prev = clock()
                continue
            try:
                result = engine.step()
            except Exception:  # a simulator bug must look like what it is: a dead engine
                message = "EngineCore encountered a fatal error.\n" + traceback.format_exc().rstrip()
                self.out.log.error("EngineCore", "core.py:1512", message)
                self.die()
                return
            if result.num_tokens == 0:  # nothing schedulable: wait for news instead of spinning
                await asyncio.sleep(0.001)
                t_prev = clock()
                continue
            deadline = t_prev + result.duration_s * slow
            delay = deadline - clock()
            await asyncio.sleep(delay if delay > 0 else 0)
            now = clock()
            t_prev = deadline if now - deadline < RESYNC_S else now
            if not self.dead:
                self._deliver(result, now)

    def _deliver(self, result: StepResult, now: float) -> None:
        """Hand this step's tokens to their streams and record vLLM's per-request statistics."""
        streams, stats = self.streams, self.stats
        stats.iteration_tokens.observe(result.num_tokens)
        for req in result.emitted:
            stream = streams.get(req.req_id)
            if stream is None:
                continue
            if stream.first_at is None:
                stream.first_at = now
                stats.ttft.observe(now - stream.arrival)
                stats.prompt_tokens += req.prompt_len
                stats.cached_prompt_tokens += req.num_cached_tokens
            else:
                stats.itl.observe(now - stream.last_at)
            stream.last_at = now
            stream.queue.put_nowait(req.num_output - 1)
        for req in result.finished:
            stream = streams.pop(req.req_id, None)
            if stream is None:
                continue
            self.num_completed += 1
            stats.finished["length"] += 1
            stats.e2e.observe(now - stream.arrival)
            stats.prompt_len.observe(req.prompt_len)
            stats.generation_len.observe(req.num_output)
            if req.num_output > 1 and stream.first_at is not None:
                stats.tpot.observe((now - stream.first_at) / (req.num_output - 1))
        self._apply_faults()

    def _apply_faults(self) -> None:
        """``die_after`` / ``stall_after``: counted in completed requests."""
        fault = self.fault
        if fault.die_after is not None and self.num_completed >= fault.die_after:
            self.die()
        elif fault.stall_after is not None and self.num_completed >= fault.stall_after:
            self.stalled = True

    async def _stats_loop(self, interval: float) -> None:
        """vLLM's periodic ``Engine 000: ...`` line, only while the engine is not idle."""
        engine, sched = self.engine, self.engine.scheduler
        last_prompt, last_gen, last_t = engine.prompt_tokens_total, engine.generation_tokens_total, time.monotonic()
        last_preempt = sched.num_preemptions
        while not self.dead:
            await asyncio.sleep(interval)
            now = time.monotonic()
            prompt, gen, preempt = engine.prompt_tokens_total, engine.generation_tokens_total, sched.num_preemptions
            busy = prompt != last_prompt or gen != last_gen or engine.has_work
            if busy and not self.dead:
                elapsed = max(now - last_t, 1e-9)
                hit_rate = sched.prefix_hits / sched.prefix_queries if sched.prefix_queries else 0.0
                self.out.stats(
                    stats_message(
                        (prompt - last_prompt) / elapsed,
                        (gen - last_gen) / elapsed,
                        engine.num_running,
                        engine.num_waiting,
                        preempt - last_preempt,
                        self.out.device_word,
                        sched.pool.usage,
                        hit_rate if self.caching else None,
                    )
                )
            last_prompt, last_gen, last_t, last_preempt = prompt, gen, now, preempt

    def metrics_text(self) -> str:
        """The /metrics body from the engine's current state and the recorded statistics."""
        sched = self.engine.scheduler
        view = MetricsView(
            running=len(sched.running),
            waiting=len(sched.waiting),
            kv_usage=sched.pool.usage,
            preemptions=sched.num_preemptions,
            prefix_queries=sched.prefix_queries,
            prefix_hits=sched.prefix_hits,
            generation_tokens=self.engine.generation_tokens_total,
        )
        return render_metrics(self.stats, view, self.model_name, self.cache_info, self.log_stats)


def _stats_interval() -> float:
    """vLLM's ``VLLM_LOG_STATS_INTERVAL`` (10 s), so tests can see the stats line quickly."""
    try:
        return max(float(os.environ.get(STATS_INTERVAL_ENV, "10")), 0.1)
    except ValueError:
        return 10.0


# --- HTTP ---------------------------------------------------------------------------------------


class BadRequest(Exception):
    """A request vLLM would answer with HTTP 400 (the message is vLLM's where vLLM has one)."""


def error_response(message: str, err_type: str, code: int, param: str | None = None) -> JSONResponse:
    """vLLM's error body: ``{"error": {"message", "type", "param", "code"}}``."""
    return JSONResponse({"error": {"message": message, "type": err_type, "param": param, "code": code}}, code)


def _engine_dead_response() -> JSONResponse:
    """The HTTP 500 every request gets once the engine is dead (vLLM's exact body)."""
    return error_response(ENGINE_DEAD_MESSAGE, "InternalServerError", 500)


_DEAD_CHUNK = (
    b"data: "
    + json.dumps(
        {"error": {"message": ENGINE_DEAD_MESSAGE, "type": "InternalServerError", "param": None, "code": 500}},
        separators=(",", ":"),
    ).encode()
    + b"\n\ndata: [DONE]\n\n"
)


def _json_bytes(obj: object) -> bytes:
    """Compact JSON, as vLLM's pydantic responses are."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class ChunkTemplates:
    """Pre-serialized SSE chunk pieces of one streaming request: per token only the text is spliced in."""

    head: bytes  # ``data: {...,"choices":[{"index":0,<text or delta>:"`` up to the token text
    tail: bytes  # the rest of a chunk whose finish_reason is null
    last_tail: bytes  # the rest of the final token's chunk (finish_reason "length")
    preamble: bytes  # chat's first chunk (the assistant role), empty for completions
    usage_prefix: bytes  # ``data: {...,"choices":[],"usage":`` for the include_usage chunk


def chunk_templates(kind: str, request_id: str, created: int, model: str) -> ChunkTemplates:
    """Build the byte templates of a ``completion`` or ``chat`` stream (vLLM's chunk shapes)."""
    name = _json_bytes(model).decode()
    if kind == "chat":
        common = f'"id":"{request_id}","object":"chat.completion.chunk","created":{created},"model":{name}'
        head = f'data: {{{common},"choices":[{{"index":0,"delta":{{"content":"'
        tail = '"},"logprobs":null,"finish_reason":null}]}\n\n'
        last = '"},"logprobs":null,"finish_reason":"length","stop_reason":null}]}\n\n'
        preamble = (
            f'data: {{{common},"choices":[{{"index":0,"delta":{{"role":"assistant","content":""}},'
            '"logprobs":null,"finish_reason":null}]}\n\n'
        )
    else:
        common = f'"id":"{request_id}","object":"text_completion","created":{created},"model":{name}'
        head = f'data: {{{common},"choices":[{{"index":0,"text":"'
        tail = '","logprobs":null,"finish_reason":null,"stop_reason":null}]}\n\n'
        last = '","logprobs":null,"finish_reason":"length","stop_reason":null}]}\n\n'
        preamble = ""
    usage = f'data: {{{common},"choices":[],"usage":'
    return ChunkTemplates(head.encode(), tail.encode(), last.encode(), preamble.encode(), usage.encode())


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """OpenAI's usage object in vLLM's key order."""
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
    }


async def _watch_disconnect(receive: Receive, on_disconnect: Callable[[], None]) -> None:
    """Wait for ``http.disconnect`` (the request body was already read) and report it."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            on_disconnect()
            return


class SseResponse(Response):
    """A server-sent-events response fed by a :class:`RequestStream`, one token per chunk.

    Tokens that are already queued go out in one write; a client disconnect aborts the request.
    """

    def __init__(self, runner: EngineRunner, stream: RequestStream, templates: ChunkTemplates, usage: bool) -> None:
        self.runner, self.stream, self.templates, self.include_usage = runner, stream, templates, usage
        self.status_code = 200
        self.background = None
        self.raw_headers = [(b"content-type", b"text/event-stream; charset=utf-8")]

    def _render(self, index: int) -> bytes:
        """One token's chunk: only the token text is spliced into the pre-serialized template."""
        t = self.templates
        text = self.runner.token_json[self.stream.token_id(index)]
        return t.head + text + (t.last_tail if index + 1 >= self.stream.req.max_tokens else t.tail)

    def _ending(self, completed: int) -> bytes:
        """The optional usage chunk, then ``[DONE]``."""
        end = b""
        if self.include_usage:
            usage = _json_bytes(_usage(self.stream.req.prompt_len, completed))
            end = self.templates.usage_prefix + usage + b"}\n\n"
        return end + b"data: [DONE]\n\n"

    async def _pump(self, send: Send) -> None:
        """Forward queued tokens until the last one (or an abort / engine death)."""
        queue, last = self.stream.queue, self.stream.req.max_tokens - 1
        if self.templates.preamble:
            await send({"type": "http.response.body", "body": self.templates.preamble, "more_body": True})
        completed = 0
        while True:
            items = [await queue.get()]
            while not queue.empty():
                items.append(queue.get_nowait())
            parts: list[bytes] = []
            finished = False
            for index in items:
                if index < 0:
                    if index == _DEAD:
                        parts.append(_DEAD_CHUNK)
                    finished = True
                    break
                parts.append(self._render(index))
                completed += 1
                if index >= last:
                    parts.append(self._ending(completed))
                    finished = True
                    break
            if parts:
                await send({"type": "http.response.body", "body": b"".join(parts), "more_body": True})
            if finished:
                return

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        runner, stream = self.runner, self.stream
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        watcher = asyncio.ensure_future(_watch_disconnect(receive, lambda: runner.abort(stream)))
        try:
            await self._pump(send)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the client is gone; the finally clause aborts the request
        finally:
            watcher.cancel()
            runner.abort(stream)


def _text_of_content(content: Any) -> str:
    """A chat message's text: a string, or the text parts of a content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    if content is None:
        return ""
    raise BadRequest("message content must be a string or a list of content parts")


def _token_ids(value: list[Any]) -> list[int]:
    """Validated token ids (vLLM answers 400 for anything else)."""
    if not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value):
        raise BadRequest("prompt token ids must be non-negative integers")
    return value


def completion_prompt(body: Mapping[str, Any], tokenizer: SimTokenizer) -> list[int]:
    """The prompt's token ids: a string, token ids, or a list of either (only the first is served)."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and not isinstance(prompt[0], (int, bool)):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return tokenizer.encode(prompt)
    if isinstance(prompt, list):
        return _token_ids(prompt)
    raise BadRequest("prompt must be a string, a list of token ids, or a list of strings or token-id lists")


def chat_prompt(body: Mapping[str, Any], tokenizer: SimTokenizer) -> list[int]:
    """Chat messages as one prompt: their contents joined by spaces (the simulator has no chat template)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list")
    texts = [_text_of_content(m.get("content")) for m in messages if isinstance(m, dict)]
    return tokenizer.encode(" ".join(texts))


def _max_tokens(body: Mapping[str, Any], chat: bool) -> int | None:
    """``max_tokens`` (chat: ``max_completion_tokens`` first), None when absent; 400 when invalid."""
    value = body.get("max_completion_tokens") if chat else None
    if value is None:
        value = body.get("max_tokens")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise BadRequest(f"max_tokens must be at least 1, got {value}.")
    return value


class Api:
    """The HTTP endpoints of one simulated server."""

    def __init__(self, runner: EngineRunner, model_root: str, api_key: str | None) -> None:
        self.runner = runner
        self.model_root = model_root
        self.api_key = api_key
        self.fingerprint = f"vllm-{VLLM_VERSION}-{secrets.token_hex(4)}"

    # helpers --------------------------------------------------------------------------------------
    def _unauthorized(self, request: Request) -> Response | None:
        """``--api-key`` guards /v1 only, as in vLLM; the answer is vLLM's 401 body."""
        if self.api_key is None or request.headers.get("authorization") == f"Bearer {self.api_key}":
            return None
        return JSONResponse({"error": "Unauthorized"}, status_code=401)

    async def _body(self, request: Request) -> dict[str, Any]:
        """The JSON object of a request, or BadRequest (HTTP 400)."""
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        return body

    def _model_error(self, body: Mapping[str, Any]) -> Response | None:
        """A request for another model than the served names gets vLLM's 404."""
        name = body.get("model")
        if name is None or name in self.runner.served_names:
            return None
        return error_response(f"The model `{name}` does not exist.", "NotFoundError", 404, "model")

    # simple endpoints -----------------------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        return Response(status_code=503 if self.runner.dead else 200)

    async def version(self, request: Request) -> Response:
        return JSONResponse({"version": VLLM_VERSION})

    async def load(self, request: Request) -> Response:
        return JSONResponse({"server_load": len(self.runner.streams)})

    async def metrics(self, request: Request) -> Response:
        return Response(self.runner.metrics_text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def models(self, request: Request) -> Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        created = int(time.time())
        data = [
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": "vllm",
                "root": self.model_root,
                "parent": None,
                "max_model_len": self.runner.max_model_len,
                "permission": [
                    {
                        "id": f"modelperm-{secrets.token_hex(16)}",
                        "object": "model_permission",
                        "created": created,
                        "allow_create_engine": False,
                        "allow_sampling": True,
                        "allow_logprobs": True,
                        "allow_search_indices": False,
                        "allow_view": True,
                        "allow_fine_tuning": False,
                        "organization": "*",
                        "group": None,
                        "is_blocking": False,
                    }
                ],
            }
            for name in self.runner.served_names
        ]
        return JSONResponse({"object": "list", "data": data})

    async def tokenize(self, request: Request) -> Response:
        try:
            body = await self._body(request)
            tok = self.runner.tokenizer
            ids = chat_prompt(body, tok) if "messages" in body else completion_prompt(body, tok)
        except BadRequest as exc:
            return error_response(str(exc), "BadRequestError", 400)
        return JSONResponse(
            {"count": len(ids), "max_model_len": self.runner.max_model_len, "tokens": ids, "token_strs": None}
        )

    async def detokenize(self, request: Request) -> Response:
        try:
            body = await self._body(request)
            tokens = body.get("tokens")
            ids = _token_ids(tokens if isinstance(tokens, list) else [])
        except BadRequest as exc:
            return error_response(str(exc), "BadRequestError", 400)
        return JSONResponse({"prompt": self.runner.tokenizer.decode(ids)})

    # generation -----------------------------------------------------------------------------------
    async def completions(self, request: Request) -> Response:
        return await self._generate(request, chat=False)

    async def chat_completions(self, request: Request) -> Response:
        return await self._generate(request, chat=True)

    async def _generate(self, request: Request, chat: bool) -> Response:
        """Shared by completions and chat: validate like vLLM, submit, then stream or wait."""
        if (denied := self._unauthorized(request)) is not None:
            return denied
        runner = self.runner
        try:
            body = await self._body(request)
            if (missing := self._model_error(body)) is not None:
                return missing
            ids = chat_prompt(body, runner.tokenizer) if chat else completion_prompt(body, runner.tokenizer)
            if not ids:
                raise BadRequest("The decoder prompt cannot be empty")
            if body.get("n", 1) not in (1, None):
                raise BadRequest("the simulated engine supports only n=1")
            max_tokens = _max_tokens(body, chat)
            if max_tokens is None:
                max_tokens = max(runner.max_model_len - len(ids), 1)
            runner.check(len(ids), max_tokens)
        except (BadRequest, RequestRejected) as exc:
            return error_response(str(exc), "BadRequestError", 400)
        if runner.dead:
            return _engine_dead_response()
        stream = runner.submit(ids, len(ids), max_tokens)
        model = str(body.get("model") or runner.model_name)
        request_id = f"{'chatcmpl' if chat else 'cmpl'}-{secrets.token_hex(16)}"
        created = int(time.time())
        if body.get("stream"):
            options = body.get("stream_options")
            include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
            templates = chunk_templates("chat" if chat else "completion", request_id, created, model)
            return SseResponse(runner, stream, templates, include_usage)
        return await self._complete(stream, chat, request_id, created, model)

    async def _complete(self, stream: RequestStream, chat: bool, request_id: str, created: int, model: str) -> Response:
        """A non-streaming answer: wait for every token, then one JSON body."""
        runner, req = self.runner, stream.req
        texts: list[str] = []
        try:
            while len(texts) < req.max_tokens:
                index = await stream.queue.get()
                if index < 0:
                    return _engine_dead_response()
                texts.append(runner.token_text[stream.token_id(index)])
        finally:
            runner.abort(stream)
        text = "".join(texts)
        usage = _usage(req.prompt_len, len(texts))
        choice: dict[str, Any]
        if chat:
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text, "tool_calls": []},
                "logprobs": None,
                "finish_reason": "length",
                "stop_reason": None,
            }
            kind = "chat.completion"
        else:
            choice = {
                "index": 0,
                "text": text,
                "logprobs": None,
                "finish_reason": "length",
                "stop_reason": None,
                "prompt_logprobs": None,
            }
            kind = "text_completion"
        body = {
            "id": request_id,
            "object": kind,
            "created": created,
            "model": model,
            "choices": [choice],
            "usage": usage,
            "system_fingerprint": self.fingerprint,
        }
        return Response(_json_bytes(body), media_type="application/json")

    def routes(self) -> list[Route]:
        """Starlette routes for ``ROUTES`` (the same list is logged at startup)."""
        handlers: dict[str, Callable[[Request], Any]] = {
            "/load": self.load,
            "/version": self.version,
            "/health": self.health,
            "/metrics": self.metrics,
            "/tokenize": self.tokenize,
            "/detokenize": self.detokenize,
            "/v1/models": self.models,
            "/ping": self.health,
            "/v1/chat/completions": self.chat_completions,
            "/v1/completions": self.completions,
        }
        methods: dict[str, list[str]] = {}
        for path, method in ROUTES:
            methods.setdefault(path, []).append(method)
        return [Route(path, handlers[path], methods=m) for path, m in methods.items()]


def build_app(runner: EngineRunner, model_root: str, api_key: str | None) -> Starlette:
    """The Starlette app; its lifespan runs the engine loop inside uvicorn's event loop."""
    api = Api(runner, model_root, api_key)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        runner.start()
        try:
            yield
        finally:
            await runner.stop()

    return Starlette(routes=api.routes(), lifespan=lifespan)


class HttpServer(uvicorn.Server):
    """uvicorn, with vLLM's signal handling: a signal starts a graceful shutdown and the exit status is 0.

    (Plain uvicorn re-raises the signal after shutting down, which would end the process *by* SIGTERM.)
    """

    def __init__(self, config: uvicorn.Config, on_signal: Callable[[str], None]) -> None:
        super().__init__(config)
        self._on_signal = on_signal

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Install our handler for SIGINT/SIGTERM and restore the old ones afterwards, no re-raise."""
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """First signal: uvicorn's graceful exit plus vLLM's shutdown of the engine."""
        first = not self.should_exit
        super().handle_exit(sig, frame)
        if first:
            self._on_signal(signal.Signals(sig).name)


async def _serve(launch: _Launch, sim: SimulatedServer, out: StartupLog, sock: socket.socket) -> int:
    """Run uvicorn on the already bound socket until a signal or the engine's death."""
    ns = launch.ns
    served = list(ns.served_model_name or [ns.model])
    runner = EngineRunner(sim, out, seed=launch.flags.seed, fault=launch.fault, served_names=served)
    app = build_app(runner, ns.model, ns.api_key or os.environ.get(API_KEY_ENV) or None)
    config = uvicorn.Config(
        app,
        loop="asyncio",
        http="h11",
        ws="none",
        lifespan="on",
        log_level=str(ns.uvicorn_log_level).lower(),
        access_log=not ns.disable_uvicorn_access_log,
        use_colors=False,
        timeout_graceful_shutdown=1,
    )
    loop = asyncio.get_running_loop()

    def on_signal(name: str) -> None:  # runs in the signal handler: hand over to the event loop
        loop.call_soon_threadsafe(runner.shutdown, name)

    server = HttpServer(config, on_signal)

    def exit_now() -> None:
        server.should_exit = True

    runner.on_exit = exit_now
    await server.serve(sockets=[sock])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m vllm_slo_guard.sim.server``: returns the process exit status."""
    try:
        launch = _prepare(list(sys.argv[1:] if argv is None else argv), os.environ)
    except ArgparseExit as exc:
        sys.stderr.write(exc.text)
        return exc.status
    except SloGuardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    ns = launch.ns
    multiproc = launch.gpu.is_cpu or ns.tensor_parallel_size * ns.pipeline_parallel_size > 1
    out = StartupLog(make_vllm_log(sys.stdout), sys.stderr, TracebackPaths.here(), launch.gpu.is_cpu, multiproc)
    out.preamble(ns.model, non_default_args(ns), logo=os.environ.get(NO_LOGO_ENV, "0") in ("", "0"))
    try:
        sock = bind_socket(ns.host, ns.port)
    except OSError as exc:
        out.port_in_use(exc)
        return 1
    try:
        sim = start_server(
            launch.engine_argv, launch.gpu, gpu_count=launch.flags.gpu_count, used_bytes=launch.flags.used_bytes
        )
    except StartupFailure as failure:
        sock.close()
        return _report_failure(out, launch, failure)
    out.model_config(launch.arch.architecture, sim.plan.max_model_len)
    out.config_warnings(sim.cfg.warnings, bool(ns.enforce_eager))
    _log_engine_startup(out, launch, sim)
    out.frontend(_server_url(ns.host, sock), ROUTES)
    gc.freeze()  # the startup objects live forever: keep them out of every later collection
    return asyncio.run(_serve(launch, sim, out, sock))


if __name__ == "__main__":
    sys.exit(main())
