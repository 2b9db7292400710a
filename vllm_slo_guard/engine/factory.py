"""One way to build the engine a spec names: the simulated vLLM server, or the real vLLM.

``tune``, ``serve`` and ``bench`` all start their servers through :func:`engine_for`, so the
engine a trial ran on is the engine the final server runs on, and a missing vLLM or a missing
simulated GPU is the same one line everywhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..spec import require_sim_gpu
from ..vllm_rules.catalog import resolve_gpu
from .engines import Engine, VllmEngine, resolve_vllm_command
from .sim import SimEngine

if TYPE_CHECKING:
    from ..spec import TuneSpec
    from ..vllm_rules.startup import Device


def make_engine(
    engine: str, *, gpu: str | None = None, gpu_count: int = 1, seed: int = 0, vllm_cmd: str | None = None,
    on_cpu: bool = False,
) -> Engine:  # fmt: skip
    """``sim``: the simulated server on ``gpu``; else vLLM (``on_cpu``: its CPU build). Resolves vLLM's command now."""
    if engine == "sim":
        require_sim_gpu(engine, gpu)
        return SimEngine(gpu=resolve_gpu(gpu or "").name, gpu_count=gpu_count, seed=seed)
    resolve_vllm_command(vllm_cmd)  # a missing vLLM is one line here, before anything starts
    return VllmEngine(vllm_cmd=vllm_cmd, cpu=on_cpu)


def engine_for(spec: TuneSpec, device: Device | None = None) -> Engine:
    """The engine of every trial and of the final server for ``spec`` (``device``: its trial device)."""
    on_cpu = spec.engine != "sim" and (device or spec.trial_device()).spec.is_cpu
    return make_engine(
        spec.engine, gpu=spec.gpu, gpu_count=spec.gpu_count, seed=spec.seed, vllm_cmd=spec.vllm_cmd, on_cpu=on_cpu
    )
