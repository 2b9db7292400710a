"""vLLM's defaults and the simple rules its config classes enforce, each written once.

Config resolution (``config.py``) and the memory plan (``memory.py``) raise vLLM's errors with them;
the tuner's repair pass (``vllm_slo_guard/repair.py``) moves tuned values to satisfy the same rules,
so the two can never disagree about what vLLM accepts.
"""

from __future__ import annotations

VLLM_VERSION = "0.32.0"  # the vLLM release these rules were read from (and the simulator models)
DEFAULT_GPU_MEMORY_UTILIZATION = 0.92  # EngineArgs.gpu_memory_utilization (vllm/engine/arg_utils.py)
DEFAULT_ENABLE_CHUNKED_PREFILL = True  # V1 schedules chunked prefills unless told otherwise
DEFAULT_GPU_BLOCK_SIZE = 16
DEFAULT_CPU_BLOCK_SIZE = 128  # vllm/platforms/cpu.py
GPU_BLOCK_SIZE_MULTIPLE = 16  # FlashAttention / FlashInfer / Triton attention kernels
CPU_BLOCK_SIZE_MULTIPLE = 32  # the CPU attention backend (vllm/v1/attention/backends/cpu_attn.py)


def block_size_multiple(is_cpu: bool) -> int:
    """The block sizes the attention backends of this device accept are multiples of this."""
    return CPU_BLOCK_SIZE_MULTIPLE if is_cpu else GPU_BLOCK_SIZE_MULTIPLE


def budget_below_max_model_len(max_num_batched_tokens: int, max_model_len: int, chunked_prefill: bool) -> bool:
    """Without chunked prefill a whole prompt (up to max_model_len) must fit one step's token budget.

    ``SchedulerConfig`` refuses it (``vllm/config/scheduler.py``); an unresolved length (≤ 0) passes.
    """
    return not chunked_prefill and max_model_len > 0 and max_num_batched_tokens < max_model_len


def budget_below_max_num_seqs(max_num_batched_tokens: int, max_num_seqs: int) -> bool:
    """Every running sequence needs at least one token of the step's budget (``vllm/config/scheduler.py``)."""
    return max_num_batched_tokens < max_num_seqs
