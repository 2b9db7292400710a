"""The simulated engine: the one door from the rest of the package into ``sim/``.

Two faces of the same simulated vLLM 0.32: :class:`SimEngine` starts the simulated *server*
(``python -m vllm_slo_guard.sim.server``, real HTTP in real time) like any other engine, and
:func:`simulate` runs a benchmark *in process* in virtual time (the tuner's fast evaluator and
``vllm-tune simulate``). Nothing else outside ``sim/`` imports the simulator, so it can change
behind these two names.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..sim.evaluator import SimResult, simulate
from .engines import check_forwarded

__all__ = ["SimEngine", "SimResult", "simulate"]


@dataclass
class SimEngine:
    """The built-in simulated vLLM server (``python -m vllm_slo_guard.sim.server``)."""

    gpu: str
    gpu_count: int = 1
    seed: int = 0
    fault: str | None = None  # SLO_GUARD_SIM_FAULT for tests
    extra_env: dict[str, str] = field(default_factory=dict)
    name: str = "sim"

    def argv(self, model: str, engine_args: Sequence[str], host: str, port: int) -> list[str]:
        check_forwarded(engine_args)
        return [
            sys.executable, "-m", "vllm_slo_guard.sim.server", model, *engine_args,
            "--host", host, "--port", str(port),
            "--sim-gpu", self.gpu, "--sim-gpu-count", str(self.gpu_count), "--sim-seed", str(self.seed),
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        env = dict(self.extra_env)
        if self.fault:
            env["SLO_GUARD_SIM_FAULT"] = self.fault
        return env
