"""vllm-tune: crash-aware autotuning of vLLM engine arguments for a latency SLO.

The public entry points are loaded lazily, so ``import vllm_slo_guard`` (and every CLI command)
stays fast and does not import Optuna until tuning starts.

Example::

    from vllm_slo_guard import TuneSpec, WorkloadSpec, parse_slo, tune

    spec = TuneSpec("Qwen/Qwen2-1.5B", (parse_slo("200ms"),), WorkloadSpec(request_rate=8),
                    engine="sim", gpu="A100-40GB", budget=15)
    result = tune(spec)
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import SloGuardError

__version__ = "0.1.0.dev0"

_LAZY = {
    "tune": ".search.tuner",
    "TuneResult": ".search.result",
    "TuneSpec": ".spec",
    "Slo": ".spec",
    "parse_slo": ".spec",
    "Outcome": ".outcome",
    "WorkloadSpec": ".bench.workload",
    "simulate": ".engine.sim",
    "classify": ".engine.crash",
}

__all__ = ["SloGuardError", "__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
