"""The memory guard: predict, without starting anything, whether a config starts and what KV it gets.

It runs vLLM's startup rules (``vllm_rules.startup.check_startup``: the argument checks and vLLM 0.32's
memory accounting, the same rules the simulator starts with) against this machine's real device:
NVML's total and free memory on a GPU, or, on vLLM's CPU backend, the memory of the NUMA node its worker
binds to, less what vLLM's own processes will hold by the time it checks. A config predicted to fail is
recorded by the tuner as ``guarded`` at no launch cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from .engine.crash import Category
from .errors import SloGuardError
from .hardware import CpuMemory, catalog_gpu_for, probe_cpu_memory, probe_gpus
from .vllm_rules.args import ArgparseExit
from .vllm_rules.catalog import GPUS
from .vllm_rules.failures import StartupFailure
from .vllm_rules.startup import Device, check_startup


@dataclass(frozen=True)
class GuardVerdict:
    """``ok`` with the predicted KV capacity, or the failure vLLM would stop with."""

    ok: bool
    category: str | None = None
    message: str | None = None
    kv_cache_tokens: int | None = None
    num_blocks: int | None = None
    max_model_len: int | None = None
    max_concurrency: float | None = None


def cpu_device(memory: CpuMemory | None = None) -> Device:
    """vLLM's CPU backend on this machine: the NUMA node its worker will check, with that node's memory now.

    The figures are a probe before vLLM starts, so the startup rules take vLLM's own processes out of them.
    """
    memory = memory or probe_cpu_memory()
    spec = replace(GPUS["cpu"], memory_bytes=memory.total_bytes)
    used = max(memory.total_bytes - memory.available_bytes, 0)
    return Device(spec, used_bytes=used, node=memory.node, available_bytes=memory.available_bytes)


def detect_device() -> Device:
    """The first GPU NVML reports (matched to the catalog for its speed facts), else the CPU backend."""
    gpus = probe_gpus()
    if not gpus:
        return cpu_device()
    first = gpus[0]
    spec = catalog_gpu_for(first.name, first.total_bytes)
    if spec is None:  # an unknown GPU: memory is what matters to the guard
        spec = replace(GPUS["A100-80GB"], name=first.name, device_name=first.name, memory_bytes=first.total_bytes)
    used = max(first.total_bytes - first.free_bytes - spec.context_bytes, 0)
    return Device(spec, used_bytes=used, count=len(gpus))


def predict(model: str, engine_args: Sequence[str], device: Device, *, margin: float = 0.0) -> GuardVerdict:
    """Whether ``vllm serve model engine_args`` will start on ``device``, and with how much KV cache.

    ``margin`` makes memory verdicts cautious: a config is predicted to run out of memory only if it
    still does with ``margin`` more device memory. Argument refusals are exact. The tuner guards
    with a small margin, because its memory model of the real vLLM is an estimate: a borderline
    config is worth a launch, a clearly impossible one is not.
    """
    verdict = _predict(model, engine_args, device)
    if verdict.ok or verdict.category != Category.OOM or margin <= 0:
        return verdict
    extra = int(device.spec.memory_bytes * margin)
    roomier = replace(device, spec=replace(device.spec, memory_bytes=device.spec.memory_bytes + extra))
    if device.available_bytes is not None:
        roomier = replace(roomier, available_bytes=device.available_bytes + extra)
    return verdict if not _predict(model, engine_args, roomier).ok else GuardVerdict(True, message="borderline")


def _predict(model: str, engine_args: Sequence[str], device: Device) -> GuardVerdict:
    try:
        plan = check_startup([model, *engine_args], device).plan
    except StartupFailure as failure:
        return GuardVerdict(False, failure.category, failure.root_cause)
    except ArgparseExit as exc:
        return GuardVerdict(False, Category.CONFIG_INVALID, exc.line)
    except SloGuardError:
        raise
    return GuardVerdict(
        True,
        kv_cache_tokens=plan.kv_tokens,
        num_blocks=plan.num_blocks,
        max_model_len=plan.max_model_len,
        max_concurrency=round(plan.max_concurrency, 2),
    )
