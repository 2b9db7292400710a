"""The tuning problem of one spec: the space, the ``--fix`` values, the repair context and the objective.

Built once per run from the spec and the trial device; the loop, the searchers (``repaired``,
``startup_risk``) and the pre-flight checks read it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import SloGuardError
from ..guard import predict
from ..repair import RepairContext, repair
from ..space import Config, Knob, Space, build_space, pinned_knob_names
from ..spec import TuneSpec
from ..vllm_rules.args import ArgparseExit, parse_serve_args
from ..vllm_rules.modelinfo import load_model_arch
from ..vllm_rules.startup import Device
from .objective import Objective


@dataclass(frozen=True)
class Problem:
    """What the loop needs besides the searcher and the evaluator."""

    space: Space
    fixed: Config  # --fix values, forwarded like pinned flags
    repair_ctx: RepairContext
    objective: Objective
    device: Device
    model: str

    def argv(self, config: Mapping[str, Any]) -> list[str]:
        """Pinned flags, the tuned knobs, then the ``--fix`` values."""
        return self.space.argv(config) + fixed_argv(self.fixed)

    def repaired(self, config: Config) -> Config:
        """The config that would run (searchers use it to avoid proposing what the tuner would reuse)."""
        return repair(config, self.repair_ctx).config

    def startup_risk(self, config: Config) -> bool:
        """The memory guard at zero margin on the repaired config: True when it predicts no start."""
        return not predict(self.model, self.argv(self.repaired(config)), self.device, margin=0.0).ok


def fixed_argv(fixed: Mapping[str, Any]) -> list[str]:
    args: list[str] = []
    for name, value in fixed.items():
        args += Knob(name, "bool" if isinstance(value, bool) else "categorical").argv(value)
    return args


def _pinned_values(pinned_args: Sequence[str], fixed: Mapping[str, Any]) -> tuple[dict[str, Any], int | None]:
    """EngineArgs values the user set (for repair), and the pinned max_model_len if any."""
    values: dict[str, Any] = {}
    max_model_len = None
    if pinned_args:
        try:
            ns = parse_serve_args(["_model_", *pinned_args])
        except ArgparseExit as exc:  # pinned_knob_names reported it already; keep the message anyway
            raise SloGuardError(exc.line) from None
        for name in pinned_knob_names(pinned_args):
            if hasattr(ns, name):
                values[name] = getattr(ns, name)
        if ns.enforce_eager:
            values["optimization_level"] = 0
        if ns.max_model_len and ns.max_model_len > 0:
            max_model_len = int(ns.max_model_len)
    values.update(fixed)
    if isinstance(fixed.get("max_model_len"), int):
        max_model_len = fixed["max_model_len"]
    return values, max_model_len


def build_problem(spec: TuneSpec, device: Device) -> Problem:
    """The space (minus pinned flags, with --tune/--fix), the repair context and the objective."""
    arch = load_model_arch(spec.model)
    _, pinned_len = _pinned_values(spec.pinned_args, {})
    max_model_len = pinned_len or arch.max_position_embeddings
    space, fixed = build_space(device.spec, spec.pinned_args, tune=spec.tune, fix=spec.fix, max_model_len=max_model_len)
    pinned, fixed_len = _pinned_values(spec.pinned_args, fixed)
    ctx = RepairContext(gpu=device.spec, pinned=pinned, max_model_len=fixed_len or max_model_len)
    return Problem(space, fixed, ctx, Objective(spec.objective, tuple(spec.slos)), device, spec.model)
