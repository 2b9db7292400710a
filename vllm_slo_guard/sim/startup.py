"""Which startup lines the simulated server prints, in vLLM's order, for a launch that succeeds or fails.

A failed trial is classified by how far its log got, so a failure prints exactly the lines vLLM prints
before it (model load, KV sizing), then its error blocks. The wording of each line is :class:`StartupLog`'s;
this module only decides the sequence and the figures in it.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from ..vllm_rules.arch import ModelArch
from ..vllm_rules.config import EngineConfig, resolve_config
from ..vllm_rules.failures import StartupFailure
from ..vllm_rules.memory import plan_memory, weight_bytes_per_rank
from .evaluator import SimulatedServer
from .launch import Launch
from .logs import StartupLog
from .messages import EngineFacts, gib

IMPORT_S = 12.0  # the part of the startup estimate spent importing vLLM (see evaluator.estimate_startup_s)
LOAD_BYTES_PER_S = 1.5e9


def _requested_max_model_len(launch: Launch) -> int:
    """``Using max model len`` before the engine resolved it: the flag, else the model's limit."""
    length = launch.ns.max_model_len
    return length if length is not None and length > 0 else launch.arch.max_position_embeddings


def _engine_facts(launch: Launch, cfg: EngineConfig | None, max_seq_len: int) -> EngineFacts:
    """What the engine-config line shows, from the resolved config when there is one."""
    ns = launch.ns
    device = "cpu" if launch.gpu.is_cpu else "cuda"
    if cfg is None:  # the config itself failed (e.g. no attention backend for the KV dtype)
        return EngineFacts(
            ns.model, (ns.served_model_name or [ns.model])[0], "bfloat16", max_seq_len, ns.load_format,
            ns.tensor_parallel_size, ns.pipeline_parallel_size, bool(ns.enforce_eager), ns.kv_cache_dtype, device,
            ns.seed, ns.enable_prefix_caching is not False, ns.enable_chunked_prefill is not False,
            ns.optimization_level, "NONE", (),
        )  # fmt: skip
    return EngineFacts(
        cfg.model, cfg.served_model_name, cfg.dtype, max_seq_len, ns.load_format, cfg.tensor_parallel_size,
        cfg.pipeline_parallel_size, bool(ns.enforce_eager), cfg.kv_cache_dtype, device, cfg.seed,
        cfg.enable_prefix_caching, cfg.enable_chunked_prefill, cfg.optimization_level, cfg.cudagraph_mode,
        cfg.cudagraph_capture_sizes,
    )  # fmt: skip


# --- a successful startup -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Timings:
    """The simulated startup estimate split into the phases vLLM logs (only for the logged figures)."""

    load_s: float
    compile_s: float
    capture_s: float
    init_s: float


def _timings(cfg: EngineConfig, arch: ModelArch, startup_s: float) -> _Timings:
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


def log_startup(out: StartupLog, launch: Launch, sim: SimulatedServer) -> None:
    """The successful startup lines from the model config to ``init engine ... took``.

    Sleeps ``--sim-startup-delay`` on the way, and never returns under the ``hang_startup`` fault.
    """
    cfg, plan = sim.cfg, sim.plan
    out.model_config(launch.arch.architecture, plan.max_model_len)
    out.config_warnings(cfg.warnings, bool(launch.ns.enforce_eager))
    times = _timings(cfg, sim.arch, sim.startup_s)
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
        out.auto_fit(sim.arch.max_position_embeddings, plan.max_model_len)
    out.kv_capacity(plan.kv_tokens, plan.max_model_len, plan.max_concurrency)
    if cfg.cudagraph_capture_sizes:
        out.graphs_captured(times.capture_s, plan.cudagraph_bytes)
    if not sim.gpu.is_cpu and cfg.kv_cache_memory_bytes is None:
        out.kv_suggestion(_kv_suggestion(sim, launch.flags.used_bytes))
    out.init_done(times.init_s, times.compile_s)


# --- a failed startup ---------------------------------------------------------------------------


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


def _config_or_none(launch: Launch) -> EngineConfig | None:
    """The resolved config for the lines before an engine failure (None if the config itself failed)."""
    try:
        return resolve_config(launch.ns, launch.arch, launch.gpu, gpu_count=launch.flags.gpu_count)
    except StartupFailure:
        return None


def _log_progress(out: StartupLog, launch: Launch, cfg: EngineConfig, stage: str, message: str) -> None:
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


def report_failure(out: StartupLog, launch: Launch, failure: StartupFailure) -> int:
    """Print ``failure`` the way the vLLM process that raised it would, with the lines before it.

    Returns the exit status that vLLM process would end with.
    """
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
