"""vllm-tune: crash-aware autotuning of vLLM engine arguments for a latency SLO."""

from __future__ import annotations

from .errors import SloGuardError

__version__ = "0.1.0.dev0"

__all__ = ["SloGuardError", "__version__"]
