"""The simulated server's command line resolved into a :class:`Launch`, before any vLLM line is printed.

Everything that can be wrong with the arguments (our ``--sim-*`` flags, vLLM's own flags, the fault
switch, the GPU, the model) fails here as one user error, so startup itself only has to narrate.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import InputError
from ..units import parse_duration, parse_size
from ..vllm_rules.arch import ModelArch
from ..vllm_rules.args import MISSING_MODEL, ArgparseExit, parse_serve_args
from ..vllm_rules.catalog import GpuSpec, resolve_gpu
from ..vllm_rules.modelinfo import load_model_arch
from .faults import FAULT_ENV, Fault, parse_fault

GPU_ENV = "SLO_GUARD_SIM_GPU"


@dataclass(frozen=True)
class SimFlags:
    """Our own ``--sim-*`` flags: the simulated hardware and how the simulation behaves."""

    gpu: str | None  # None: not given (an error once vLLM's own argument parsing has passed)
    gpu_count: int = 1
    used_bytes: int = 0
    seed: int = 0
    startup_delay_s: float = 0.0


_SIM_FLAGS = ("gpu", "gpu-count", "gpu-memory-used", "seed", "startup-delay")


def _int_flag(name: str, text: str, minimum: int) -> int:
    """A bad number in our own flags is a user error (one line), not an argparse exit."""
    try:
        value = int(text)
    except ValueError:
        raise InputError(f"--sim-{name} expects a whole number, got {text!r}") from None
    if value < minimum:
        raise InputError(f"--sim-{name} must be at least {minimum}, got {value}")
    return value


def split_sim_flags(argv: Sequence[str], env: Mapping[str, str]) -> tuple[SimFlags, list[str]]:
    """Take the ``--sim-*`` flags out of ``argv``; the rest is a ``vllm serve`` command line."""
    values: dict[str, str] = {}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith(("--sim-", "--sim_")):
            rest.append(arg)
            i += 1
            continue
        flag, eq, value = arg.partition("=")
        name = flag[len("--sim-") :].replace("_", "-")
        if name not in _SIM_FLAGS:
            known = ", ".join(f"--sim-{n}" for n in _SIM_FLAGS)
            raise InputError(f"unknown simulator flag {flag}; known: {known}")
        if not eq:
            if i + 1 >= len(argv):
                raise InputError(f"{flag} expects a value")
            value = argv[i + 1]
            i += 1
        values[name] = value
        i += 1
    flags = SimFlags(
        gpu=values.get("gpu") or env.get(GPU_ENV) or None,
        gpu_count=_int_flag("gpu-count", values.get("gpu-count", "1"), 1),
        used_bytes=parse_size(values.get("gpu-memory-used", "0")),
        seed=_int_flag("seed", values.get("seed", "0"), 0),
        startup_delay_s=parse_duration(values.get("startup-delay", "0")),
    )
    return flags, rest


@dataclass(frozen=True)
class Launch:
    """Everything startup needs, resolved before the first vLLM line is printed."""

    flags: SimFlags
    fault: Fault
    gpu: GpuSpec
    ns: argparse.Namespace
    arch: ModelArch
    engine_argv: list[str]


def prepare_launch(argv: Sequence[str], env: Mapping[str, str]) -> Launch:
    """Our flags, vLLM's argument parsing (first, so ``--help`` works), the fault switch, GPU and model."""
    flags, engine_argv = split_sim_flags(argv, env)
    ns = parse_serve_args(engine_argv)
    if not ns.model:
        raise ArgparseExit(2, MISSING_MODEL)
    fault = parse_fault(env.get(FAULT_ENV, ""))
    if flags.gpu is None:
        raise InputError(f"--sim-gpu is required (or set {GPU_ENV}), e.g. --sim-gpu A100-40GB or --sim-gpu cpu")
    return Launch(flags, fault, resolve_gpu(flags.gpu), ns, load_model_arch(ns.model), engine_argv)
