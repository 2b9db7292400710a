"""The resolved engine configuration of one simulated ``vllm serve``, with vLLM 0.32's defaults.

``resolve_config`` turns parsed arguments into the values vLLM would run with (hardware-dependent
batch defaults, CUDA-graph capture sizes, block size) and raises ``StartupFailure`` for every
argument combination vLLM's config classes refuse, in the order vLLM checks them: batch defaults from
``EngineArgs.get_batch_defaults`` (``vllm/engine/arg_utils.py``), capture sizes from
``VllmConfig._set_cudagraph_sizes`` (``vllm/config/vllm.py``), the checks of ``vllm/config/scheduler.py``,
``vllm/config/cache.py`` and ``vllm/config/model.py``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from .arch import DTYPE_BYTES, ModelArch
from .catalog import GpuSpec
from .failures import StartupFailure, pydantic_field_error, pydantic_value_error
from .limits import (
    DEFAULT_CPU_BLOCK_SIZE,
    DEFAULT_ENABLE_CHUNKED_PREFILL,
    DEFAULT_GPU_BLOCK_SIZE,
    budget_below_max_model_len,
    budget_below_max_num_seqs,
)


@dataclass(frozen=True)
class EngineConfig:
    """Everything the scheduler, cost model and memory model need, as vLLM resolves it."""

    model: str
    served_model_name: str
    max_model_len: int  # -1 until auto-fit resolves it against KV memory
    max_num_seqs: int
    max_num_batched_tokens: int
    block_size: int
    gpu_memory_utilization: float
    kv_cache_memory_bytes: int | None
    enable_chunked_prefill: bool
    enable_prefix_caching: bool
    optimization_level: int
    cudagraph_mode: str  # NONE | PIECEWISE | FULL | FULL_DECODE_ONLY | FULL_AND_PIECEWISE
    cudagraph_capture_sizes: tuple[int, ...]
    dtype: str  # resolved: bfloat16 | float16 | float32
    kv_cache_dtype: str
    tensor_parallel_size: int
    pipeline_parallel_size: int
    num_gpu_blocks_override: int | None
    long_prefill_token_threshold: int
    async_scheduling: bool
    seed: int
    disable_log_stats: bool
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def kv_dtype_bytes(self) -> int:
        if self.kv_cache_dtype.startswith("fp8"):
            return 1
        if self.kv_cache_dtype == "auto":
            return self.dtype_bytes
        return DTYPE_BYTES[self.kv_cache_dtype]

    @property
    def max_capture_size(self) -> int:
        return max(self.cudagraph_capture_sizes, default=0)

    @property
    def full_graph_sizes(self) -> tuple[int, ...]:
        """Capture sizes with a FULL graph: uniform-decode batches no larger than max_num_seqs."""
        if self.cudagraph_mode not in ("FULL", "FULL_DECODE_ONLY", "FULL_AND_PIECEWISE"):
            return ()
        return tuple(s for s in self.cudagraph_capture_sizes if s <= self.max_num_seqs)

    @property
    def world_size(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size


def capture_size_grid(max_size: int) -> tuple[int, ...]:
    """vLLM's default capture sizes: ``[1, 2, 4] + range(8, 256, 8) + range(256, max + 1, 16)``."""
    sizes = [1, 2, 4, *range(8, 256, 8), *range(256, max_size + 1, 16)]
    return tuple(s for s in sizes if s <= max_size)


def batch_defaults(gpu: GpuSpec, world_size: int) -> tuple[int, int]:
    """(max_num_batched_tokens, max_num_seqs) that ``vllm serve`` picks when neither is given."""
    if gpu.is_cpu:
        return 2048 * world_size, 128 * world_size
    gib = gpu.memory_bytes / 2**30
    if gib >= 160:
        return 16384, 1024
    if gib >= 70 and "a100" not in gpu.device_name.lower():
        return 8192, 1024
    return 2048, 256


def _resolve_dtype(requested: str, arch: ModelArch, gpu: GpuSpec) -> tuple[str, list[str]]:
    warnings: list[str] = []
    aliases = {"half": "float16", "float": "float32"}
    if requested != "auto":
        return aliases.get(requested, requested), warnings
    model_dtype = aliases.get(arch.torch_dtype, arch.torch_dtype)
    if model_dtype == "float32":
        model_dtype = "bfloat16" if gpu.bf16_flops else "float16"
    if model_dtype == "bfloat16" and gpu.bf16_flops is None and not gpu.is_cpu:
        warnings.append(
            f"Your {gpu.device_name} device (with compute capability {gpu.compute_capability[0]}."
            f"{gpu.compute_capability[1]}) doesn't support torch.bfloat16. Falling back to torch.float16 for "
            "compatibility."
        )
        model_dtype = "float16"
    return model_dtype, warnings


def resolve_config(ns: argparse.Namespace, arch: ModelArch, gpu: GpuSpec, gpu_count: int = 1) -> EngineConfig:
    """Resolve parsed ``vllm serve`` arguments the way vLLM 0.32's ``create_engine_config`` does."""
    warnings: list[str] = []
    derived_max = arch.max_position_embeddings
    # ModelConfig
    max_model_len = ns.max_model_len
    if max_model_len is None:
        max_model_len = derived_max
    elif max_model_len != -1:
        if max_model_len < 1:
            raise pydantic_value_error(
                "ModelConfig",
                f"max_model_len must be a positive integer, got int: {max_model_len}. Example: max_model_len=2048",
            )
        if max_model_len > derived_max:
            raise pydantic_value_error(
                "ModelConfig",
                f"User-specified max_model_len ({max_model_len}) is greater than the derived max_model_len "
                f"(max_position_embeddings={float(derived_max)} or model_max_length=None in model's config.json). "
                "To allow overriding this maximum, set the env var VLLM_ALLOW_LONG_MAX_MODEL_LEN=1. "
                "VLLM_ALLOW_LONG_MAX_MODEL_LEN must be used with extreme caution. If the model uses relative "
                "position encoding (RoPE), positions exceeding derived_max_model_len lead to nan. If the model "
                "uses absolute position encoding, positions exceeding derived_max_model_len will cause a CUDA "
                "array out-of-bounds error.",
            )
    dtype, dtype_warnings = _resolve_dtype(ns.dtype, arch, gpu)
    warnings += dtype_warnings
    # CacheConfig
    gmu = ns.gpu_memory_utilization
    if gmu > 1:
        raise pydantic_field_error(
            "CacheConfig", "gpu_memory_utilization", "less than or equal to 1", "less_than_equal", gmu
        )
    if gmu <= 0:
        raise pydantic_field_error("CacheConfig", "gpu_memory_utilization", "greater than 0", "greater_than", gmu)
    block_size = ns.block_size
    if block_size is not None and block_size <= 0:
        raise pydantic_field_error("CacheConfig", "block_size", "greater than 0", "greater_than", block_size)
    if block_size is None:
        block_size = DEFAULT_CPU_BLOCK_SIZE if gpu.is_cpu else DEFAULT_GPU_BLOCK_SIZE
    if ns.kv_cache_memory_bytes is not None and ns.kv_cache_memory_bytes < 0:
        raise pydantic_field_error(
            "CacheConfig",
            "kv_cache_memory_bytes",
            "greater than or equal to 0",
            "greater_than_equal",
            ns.kv_cache_memory_bytes,
        )
    if ns.kv_cache_dtype != "auto" and ns.kv_cache_dtype.startswith("fp8") and not gpu.supports_fp8:
        raise StartupFailure(
            "config_invalid",
            "engine_core",
            "ValueError",
            f"No valid attention backend found for cuda with kv_cache_dtype={ns.kv_cache_dtype}. Reasons: "
            "{FLASH_ATTN: [kv_cache_dtype not supported], TRITON_ATTN: [kv_cache_dtype not supported]}.",
        )
    # SchedulerConfig, with EngineArgs' hardware-dependent defaults
    tp, pp = ns.tensor_parallel_size, ns.pipeline_parallel_size
    world = tp * pp
    chunked = DEFAULT_ENABLE_CHUNKED_PREFILL if ns.enable_chunked_prefill is None else bool(ns.enable_chunked_prefill)
    if not chunked:
        warnings.append(
            "This model does not officially support disabling chunked prefill. Disabling this manually may "
            "cause the engine to crash or produce incorrect outputs."
        )
    default_tokens, default_seqs = batch_defaults(gpu, world)
    if ns.performance_mode == "throughput":
        default_tokens, default_seqs = default_tokens * 2, default_seqs * 2
    seqs_given = ns.max_num_seqs is not None
    tokens_given = ns.max_num_batched_tokens is not None
    max_num_seqs = ns.max_num_seqs if seqs_given else default_seqs
    length_for_defaults = max_model_len if max_model_len > 0 else derived_max
    if tokens_given:
        max_num_batched_tokens = ns.max_num_batched_tokens
    else:
        max_num_batched_tokens = default_tokens
        if not chunked:
            max_num_batched_tokens = max(length_for_defaults, default_tokens)
        max_num_batched_tokens = min(max_num_seqs * length_for_defaults, max_num_batched_tokens)
    if not seqs_given:
        max_num_seqs = min(max_num_seqs, max_num_batched_tokens)
    if max_num_seqs < 1 or max_num_batched_tokens < 1:
        field_name = "max_num_seqs" if max_num_seqs < 1 else "max_num_batched_tokens"
        value = max_num_seqs if max_num_seqs < 1 else max_num_batched_tokens
        raise pydantic_field_error(
            "SchedulerConfig", field_name, "greater than or equal to 1", "greater_than_equal", value
        )
    if budget_below_max_model_len(max_num_batched_tokens, max_model_len, chunked):
        raise pydantic_value_error(
            "SchedulerConfig",
            f"max_num_batched_tokens ({max_num_batched_tokens}) is smaller than max_model_len ({max_model_len}). "
            "This effectively limits the maximum sequence length to max_num_batched_tokens and makes vLLM reject "
            "longer sequences. Please increase max_num_batched_tokens or decrease max_model_len.",
        )
    if budget_below_max_num_seqs(max_num_batched_tokens, max_num_seqs):
        raise pydantic_value_error(
            "SchedulerConfig",
            f"max_num_batched_tokens ({max_num_batched_tokens}) must be greater than or equal to max_num_seqs "
            f"({max_num_seqs}).",
        )
    if max_model_len > 0 and ns.long_prefill_token_threshold > max_model_len:
        raise pydantic_value_error(
            "SchedulerConfig",
            f"long_prefill_token_threshold ({ns.long_prefill_token_threshold}) cannot be greater than the "
            f"max_model_len ({max_model_len}).",
        )
    if max_model_len > 0 and max_num_batched_tokens > max_num_seqs * max_model_len:
        warnings.append(
            f"max_num_batched_tokens ({max_num_batched_tokens}) exceeds max_num_seqs * max_model_len "
            f"({max_num_seqs * max_model_len}). This may lead to unexpected behavior."
        )
    # ParallelConfig
    if arch.num_heads % tp:
        raise pydantic_value_error(
            "ModelConfig",
            f"Total number of attention heads ({arch.num_heads}) must be divisible by tensor parallel size ({tp}).",
        )
    if world > gpu_count and not gpu.is_cpu:
        raise StartupFailure(
            "config_invalid",
            "api_server",
            "ValueError",
            f"World size ({world}) is larger than the number of available GPUs ({gpu_count}) in this node. "
            "If this is intentional and you are using:\n- ray, set '--distributed-executor-backend ray'.\n"
            "- multiprocessing, set '--nnodes' appropriately.",
        )
    # CompilationConfig
    level = ns.optimization_level
    if level not in (0, 1, 2, 3):
        raise StartupFailure(
            "config_invalid",
            "api_server",
            "pydantic_core._pydantic_core.ValidationError",
            f"1 validation error for VllmConfig\noptimization_level\n  Input should be 0, 1, 2 or 3 "
            f"[type=literal_error, input_value={level}, input_type=int]",
        )
    compilation = dict(ns.compilation_config or {})
    mode = str(compilation.get("cudagraph_mode", "")).upper()
    if ns.enforce_eager:
        level = 0
    if not mode:
        mode = {0: "NONE", 1: "PIECEWISE"}.get(level, "FULL_AND_PIECEWISE")
    if ns.enforce_eager or gpu.is_cpu:
        mode = "NONE"
    capture_sizes: tuple[int, ...] = ()
    if mode != "NONE":
        explicit = ns.cudagraph_capture_sizes or compilation.get("cudagraph_capture_sizes")
        max_capture = ns.max_cudagraph_capture_size or compilation.get("max_cudagraph_capture_size")
        if explicit:
            capture_sizes = tuple(sorted({int(s) for s in explicit}))
        else:
            if not max_capture:
                max_capture = min(max_num_seqs * 2, 512, max_num_batched_tokens)
            capture_sizes = capture_size_grid(int(max_capture))
    async_sched = False if gpu.is_cpu else (ns.async_scheduling is not False)
    return EngineConfig(
        model=ns.model,
        served_model_name=(ns.served_model_name or [ns.model])[0],
        max_model_len=max_model_len,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        block_size=block_size,
        gpu_memory_utilization=gmu,
        kv_cache_memory_bytes=ns.kv_cache_memory_bytes,
        enable_chunked_prefill=chunked,
        enable_prefix_caching=True if ns.enable_prefix_caching is None else bool(ns.enable_prefix_caching),
        optimization_level=level,
        cudagraph_mode=mode,
        cudagraph_capture_sizes=capture_sizes,
        dtype=dtype,
        kv_cache_dtype=ns.kv_cache_dtype,
        tensor_parallel_size=tp,
        pipeline_parallel_size=pp,
        num_gpu_blocks_override=ns.num_gpu_blocks_override,
        long_prefill_token_threshold=ns.long_prefill_token_threshold,
        async_scheduling=async_sched,
        seed=ns.seed,
        disable_log_stats=bool(ns.disable_log_stats),
        warnings=tuple(warnings),
    )
