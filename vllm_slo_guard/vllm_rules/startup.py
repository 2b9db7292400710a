"""One startup check: a ``vllm serve`` command line against a device, as vLLM 0.32 would start it.

Parsing (``args``), config resolution (``config``), the memory plan (``memory``) and the CPU
attention backend's block-size rule, in vLLM's order. The memory guard, the simulator's in-process
evaluator and its server face all start here, so prediction and simulation cannot drift apart.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

from .arch import ModelArch
from .args import MISSING_MODEL, ArgparseExit, parse_serve_args
from .catalog import GpuSpec
from .config import EngineConfig, resolve_config
from .memory import MemoryPlan, cpu_block_size_check, plan_memory
from .modelinfo import load_model_arch


@dataclass(frozen=True)
class Device:
    """The device a config will run on: its facts, how many there are, and the memory others hold.

    On the CPU backend ``spec.memory_bytes`` is the NUMA node's total, ``node`` the node the worker checks,
    and ``available_bytes`` the node's available memory probed before vLLM starts (None: a described node,
    ``total − used_bytes`` available at vLLM's checks, as the simulator has it).
    """

    spec: GpuSpec
    used_bytes: int = 0
    count: int = 1
    node: int = 0
    available_bytes: int | None = None


@dataclass(frozen=True)
class StartupCheck:
    """A command line that would start: what vLLM parsed, resolved and planned for it."""

    ns: argparse.Namespace
    arch: ModelArch
    cfg: EngineConfig
    plan: MemoryPlan


def check_startup(argv: Sequence[str], device: Device) -> StartupCheck:
    """Whether ``vllm serve argv`` (the model first) starts on ``device``, and with which plan.

    Raises ``ArgparseExit`` where vLLM's parser exits and ``StartupFailure`` (vLLM's own message and
    exit status) where its config classes, memory profiling or attention backend would stop it.
    """
    ns = parse_serve_args(list(argv))
    if not ns.model:
        raise ArgparseExit(2, MISSING_MODEL)
    arch = load_model_arch(ns.model)
    cfg = resolve_config(ns, arch, device.spec, gpu_count=device.count)
    plan = plan_memory(
        cfg, arch, device.spec, used_bytes=device.used_bytes, node=device.node, available_bytes=device.available_bytes
    )
    if device.spec.is_cpu:
        cpu_block_size_check(cfg)
    return StartupCheck(ns, arch, cfg, plan)
