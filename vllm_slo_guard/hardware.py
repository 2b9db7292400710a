"""What this machine has: GPUs from NVML (pynvml), CPU memory the way vLLM's CPU backend sees it.

Probing never fails: no driver or no GPU gives an empty device list, and the CPU facts come from
psutil, the NUMA node's meminfo and the cgroup limit (vLLM clamps the node's memory to the cgroup).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path

import psutil

from .vllm_rules.catalog import GPUS, GpuSpec


@dataclass(frozen=True)
class GpuDevice:
    index: int
    name: str
    total_bytes: int
    free_bytes: int


@dataclass(frozen=True)
class CpuMemory:
    """Memory of NUMA node 0 as vLLM's CPU worker computes it (total clamped to the cgroup limit)."""

    total_bytes: int
    available_bytes: int


def probe_gpus() -> list[GpuDevice]:
    """Every GPU NVML sees, with free and total memory; [] without a driver or GPU."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:
        return []
    devices = []
    try:
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            if isinstance(name, bytes):
                name = name.decode()
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            devices.append(GpuDevice(index, str(name), int(memory.total), int(memory.free)))
    except Exception:
        return devices
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()
    return devices


def _cgroup_limit() -> int | None:
    for path in (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:
            return int(text)
    return None


def probe_cpu_memory(node: int = 0) -> CpuMemory:
    """Node total and available memory, clamped to the cgroup limit as vLLM does."""
    vm = psutil.virtual_memory()
    total, available = int(vm.total), int(vm.available)
    meminfo = Path(f"/sys/devices/system/node/node{node}/meminfo")
    with contextlib.suppress(OSError):
        text = meminfo.read_text()
        found = {k: int(v) * 1024 for k, v in re.findall(r"Node \d+ (\w+):\s+(\d+) kB", text)}
        total = found.get("MemTotal", total)
        available = min(available, found.get("MemFree", available) + found.get("FilePages", 0))
    limit = _cgroup_limit()
    if limit is not None:
        total = min(total, limit)
        available = min(available, total)
    return CpuMemory(total, available)


def catalog_gpu_for(device_name: str, total_bytes: int) -> GpuSpec | None:
    """The catalog entry for an NVML device name, with this device's real memory size."""
    from dataclasses import replace

    lowered = device_name.lower().replace(" ", "")
    best = None
    for spec in GPUS.values():
        if spec.is_cpu:
            continue
        key = spec.device_name.lower().replace(" ", "")
        family = spec.name.split("-")[0].lower()
        if key == lowered or (family in lowered and best is None):
            best = spec
            if key == lowered:
                break
    if best is None:
        return None
    # A100 comes in 40 and 80 GB: pick by memory
    if best.name.startswith("A100"):
        best = GPUS["A100-80GB"] if total_bytes > 50 * 2**30 else GPUS["A100-40GB"]
    return replace(best, memory_bytes=total_bytes)
