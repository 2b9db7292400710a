"""vLLM 0.32's wording of the texts the simulator reproduces: version, error messages and fact lines.

A tuner scrapes some of these lines (KV capacity, the engine config) and a human compares them with
real logs, so each is copied byte for byte, numbers formatted as vLLM formats them (comma thousands
separators, ``round(x / 2**30, 2)`` GiB).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from ..vllm_rules.limits import VLLM_VERSION

ENGINE_DEAD_MESSAGE = "EngineCore encountered an issue. See stack trace (above) for the root cause."
ENGINE_INIT_FAILED = (
    "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {'EngineCore': 1}"
)


def logo_lines(model: str) -> list[str]:
    """The ASCII logo vLLM prints first (``api_utils.py:347``), one message per line as in real logs."""
    return [
        "",
        "       █     █     █▄   ▄█",
        f" ▄▄ ▄█ █     █     █ ▀▄▀ █  version {VLLM_VERSION}",
        f"  █▄█▀ █     █     █     █  model   {model}",
        "   ▀▀  ▀▀▀▀▀ ▀▀▀▀▀ ▀     ▀",
        "",
    ]


def gib(num_bytes: float) -> float:
    """vLLM's GiB figure: ``round(x / 2**30, 2)``."""
    return round(num_bytes / 2**30, 2)


def kv_capacity_message(device: str, kv_tokens: int, max_model_len: int, concurrency: float) -> str:
    """The capacity line a tuner scrapes (``kv_cache_utils.py:2327``), byte for byte as vLLM prints it."""
    return (
        f"{device} KV cache size: {kv_tokens:,} tokens, Maximum concurrency for {max_model_len:,} tokens per "
        f"request: {concurrency:.2f}x"
    )


def stats_message(
    prompt_tps: float,
    generation_tps: float,
    running: int,
    waiting: int,
    preemptions: int,
    device: str,
    kv_usage: float,
    prefix_hit_rate: float | None,
) -> str:
    """The periodic ``Engine 000: ...`` line (``loggers.py:335``); optional parts as vLLM omits them."""
    parts = [
        f"Engine 000: Avg prompt throughput: {prompt_tps:.1f} tokens/s",
        f"Avg generation throughput: {generation_tps:.1f} tokens/s",
        f"Running: {running} reqs",
        f"Waiting: {waiting} reqs",
    ]
    if preemptions:
        parts.append(f"Preemptions: {preemptions}")
    parts.append(f"{device} KV cache usage: {100 * kv_usage:.1f}%")
    if prefix_hit_rate is not None:
        parts.append(f"Prefix cache hit rate: {100 * prefix_hit_rate:.1f}%")
    return ", ".join(parts)


_CUDAGRAPH_MODE_REPR: Mapping[str, str] = MappingProxyType(
    {
        "NONE": "<CUDAGraphMode.NONE: 0>",
        "PIECEWISE": "<CUDAGraphMode.PIECEWISE: 1>",
        "FULL": "<CUDAGraphMode.FULL: 2>",
        "FULL_DECODE_ONLY": "<CUDAGraphMode.FULL_DECODE_ONLY: (2, 0)>",
        "FULL_AND_PIECEWISE": "<CUDAGraphMode.FULL_AND_PIECEWISE: (2, 1)>",
    }
)

# Where vLLM logs each configuration warning from (matched on the start of the message).
_WARNING_SOURCES = (
    ("This model does not officially support disabling chunked prefill", "arg_utils.py:3005"),
    ("max_num_batched_tokens (", "scheduler.py:352"),
    ("Your ", "model.py:1812"),
)


@dataclass(frozen=True)
class EngineFacts:
    """The resolved values the engine-config line shows (``core.py:133``)."""

    model: str
    served_model_name: str
    dtype: str
    max_seq_len: int
    load_format: str
    tensor_parallel_size: int
    pipeline_parallel_size: int
    enforce_eager: bool
    kv_cache_dtype: str
    device: str  # "cuda" | "cpu"
    seed: int
    enable_prefix_caching: bool
    enable_chunked_prefill: bool
    optimization_level: int
    cudagraph_mode: str
    capture_sizes: tuple[int, ...]


def engine_config_message(facts: EngineFacts) -> str:
    """``Initializing a V1 LLM engine (v0.32.0) with config: ...`` with the fields a reader looks for."""
    mode = "<CompilationMode.VLLM_COMPILE: 3>" if facts.optimization_level >= 1 else "<CompilationMode.NONE: 0>"
    compilation = (
        f"{{'mode': {mode}, 'backend': 'inductor', 'cudagraph_mode': {_CUDAGRAPH_MODE_REPR[facts.cudagraph_mode]}, "
        f"'cudagraph_capture_sizes': {list(facts.capture_sizes)}, "
        f"'max_cudagraph_capture_size': {max(facts.capture_sizes) if facts.capture_sizes else None}}}"
    )
    return (
        f"Initializing a V1 LLM engine (v{VLLM_VERSION}) with config: model='{facts.model}', speculative_config=None, "
        f"tokenizer='{facts.model}', skip_tokenizer_init=False, tokenizer_mode=auto, revision=None, "
        f"tokenizer_revision=None, trust_remote_code=False, dtype=torch.{facts.dtype}, "
        f"max_seq_len={facts.max_seq_len}, "
        f"download_dir=None, load_format={facts.load_format}, tensor_parallel_size={facts.tensor_parallel_size}, "
        f"pipeline_parallel_size={facts.pipeline_parallel_size}, data_parallel_size=1, "
        f"disable_custom_all_reduce={facts.device == 'cpu'}, quantization=None, enforce_eager={facts.enforce_eager}, "
        f"kv_cache_dtype={facts.kv_cache_dtype}, device_config={facts.device}, seed={facts.seed}, "
        f"served_model_name={facts.served_model_name}, enable_prefix_caching={facts.enable_prefix_caching}, "
        f"enable_chunked_prefill={facts.enable_chunked_prefill}, pooler_config=None, compilation_config={compilation}"
    )


def warning_source(message: str) -> str:
    """The ``file.py:line`` vLLM logs a configuration warning from."""
    for start, where in _WARNING_SOURCES:
        if message.startswith(start):
            return where
    return "config.py:1"
