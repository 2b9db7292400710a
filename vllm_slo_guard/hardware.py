"""What this machine has: GPUs from NVML (pynvml), CPU memory the way vLLM's CPU backend sees it.

Probing never fails: no driver or no GPU gives an empty device list. On the CPU backend vLLM 0.32's
worker reads the memory of one NUMA node, the node of the first CPU it is bound to, and clamps it to
the cgroup limit (``vllm/utils/cpu_resource_utils.py``, ``vllm/utils/ompmultiprocessing.py``,
``vllm/v1/worker/cpu_worker.py``); ``probe_cpu_memory`` reads the same files the same way, from a
root folder that tests point at a fake ``/sys`` and ``/proc``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping
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
    """The NUMA node vLLM's CPU worker (local rank 0) binds to, and that node's memory as vLLM reads it."""

    total_bytes: int
    available_bytes: int
    node: int = 0


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


V1_UNLIMITED = 1 << 62  # cgroup v1 reports "no limit" as a huge sentinel near PAGE_COUNTER_MAX


def _read_int(path: Path) -> int | None:
    """vLLM's ``_read_int_file``: an int, or None for a missing file, ``max`` or text that is no int."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text or text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _cgroup(root: Path) -> tuple[int | None, int | None]:
    """The cgroup memory limit and usage as vLLM reads them (the root cgroup folder, v2 before v1)."""
    if sys.platform != "linux":
        return None, None
    cgroup = root / "sys" / "fs" / "cgroup"
    limit = _read_int(cgroup / "memory.max")
    if limit is not None:
        return limit, _read_int(cgroup / "memory.current")
    limit = _read_int(cgroup / "memory" / "memory.limit_in_bytes")
    if limit is None or limit >= V1_UNLIMITED:
        return None, None
    return limit, _read_int(cgroup / "memory" / "memory.usage_in_bytes")


def _system_memory(root: Path) -> tuple[int, int]:
    """psutil's total and available (``MemTotal``, ``MemAvailable`` of /proc/meminfo)."""
    if root == Path("/"):
        vm = psutil.virtual_memory()
        return int(vm.total), int(vm.available)
    found: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in (root / "proc" / "meminfo").read_text().splitlines():
            key, _, value = line.partition(":")
            with contextlib.suppress(ValueError, IndexError):
                found[key.strip()] = int(value.split()[0]) * 1024
    return found.get("MemTotal", 0), found.get("MemAvailable", found.get("MemFree", 0))


def node_memory(node: int, root: Path = Path("/")) -> tuple[int, int]:
    """vLLM's ``get_memory_node_info(node)``: the node's total and available bytes, clamped to the cgroup.

    Available is ``MemFree + Active(file) + Inactive(file) + SReclaimable`` of the node's meminfo; a machine
    without per-node meminfo gets psutil's system-wide figures, unclamped, as in vLLM.
    """
    if sys.platform == "darwin":
        return _system_memory(root)
    meminfo = root / "sys" / "devices" / "system" / "node" / f"node{node}" / "meminfo"
    try:
        text = meminfo.read_text()
    except OSError:
        return _system_memory(root)
    fields: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()  # "Node 0 MemTotal:  97421888 kB"
        with contextlib.suppress(ValueError, IndexError):
            fields[parts[2].rstrip(":")] = int(parts[3]) * 1024
    total = fields.get("MemTotal", 0)
    available = sum(fields.get(key, 0) for key in ("MemFree", "Active(file)", "Inactive(file)", "SReclaimable"))
    limit, usage = _cgroup(root)
    if limit is not None and limit < total:
        total = limit
        available = max(0, min(available, limit - (usage or 0)))
    return total, available


def parse_id_list(text: str) -> list[int]:
    """``0-2,4,7-8`` → ``[0, 1, 2, 4, 7, 8]`` (vLLM's ``parse_id_list``: sorted, no repeats)."""
    ids: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        start, _, end = part.partition("-")
        ids.update(range(int(start), int(end or start) + 1))
    return sorted(ids)


def _status_list(root: Path, key: str) -> list[int] | None:
    with contextlib.suppress(OSError, ValueError):
        for line in (root / "proc" / "self" / "status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return parse_id_list(line.split(":", 1)[1])
    return None


def _cpu_nodes(root: Path) -> dict[int, int]:
    """Online logical CPU → NUMA node, as ``lscpu --extended=CPU,CORE,NODE --online`` lists them (no node: 0)."""
    system = root / "sys" / "devices" / "system"
    try:
        online = parse_id_list((system / "cpu" / "online").read_text())
    except (OSError, ValueError):
        online = list(range(os.cpu_count() or 1))
    nodes = dict.fromkeys(online, 0)
    with contextlib.suppress(OSError):
        for folder in (system / "node").glob("node[0-9]*"):
            with contextlib.suppress(OSError, ValueError):
                for cpu in parse_id_list((folder / "cpulist").read_text()):
                    if cpu in nodes:
                        nodes[cpu] = int(folder.name[4:])
    return nodes


def visible_memory_nodes(root: Path = Path("/"), environ: Mapping[str, str] | None = None) -> list[int]:
    """vLLM's ``get_visible_memory_node``: the process's ``Mems_allowed_list``, narrowed (in its order) by
    ``CPU_VISIBLE_MEMORY_NODES`` unless ``VLLM_CPU_SIM_MULTI_NUMA`` is set."""
    env = os.environ if environ is None else environ
    allowed = _status_list(root, "Mems_allowed_list")
    if allowed is None:
        allowed = [0]
    visible = env.get("CPU_VISIBLE_MEMORY_NODES", "")
    if "VLLM_CPU_SIM_MULTI_NUMA" not in env and visible:
        with contextlib.suppress(ValueError):  # vLLM itself would stop on a malformed list
            return [node for node in (int(s) for s in visible.split(",")) if node in allowed]
    return allowed


def worker_node(root: Path = Path("/"), environ: Mapping[str, str] | None = None) -> int:
    """The NUMA node whose memory vLLM's CPU worker of local rank 0 checks: the node of its first bound CPU.

    ``vllm/utils/ompmultiprocessing.py`` binds rank 0's OpenMP threads (``VLLM_CPU_OMP_THREADS_BIND``):
    ``auto`` to the CPUs of the first visible memory node, a list (``0-3|4-7``) to its first entry,
    ``nobind`` not at all; the OpenMP runtime pins the worker's main thread to the first CPU of that list
    (lowest id) or the whole list, so ``cpu_worker.py``'s ``get_allowed_cpu_list()[0]`` is the lowest bound
    CPU. A list naming no CPU this process may use leaves the inherited affinity.
    """
    env = os.environ if environ is None else environ
    nodes = _cpu_nodes(root)
    affinity = _status_list(root, "Cpus_allowed_list")
    allowed = [cpu for cpu in nodes if affinity is None or cpu in affinity] or list(nodes)
    mask = env.get("VLLM_CPU_OMP_THREADS_BIND", "auto")
    bound = allowed
    if mask == "auto" and env.get("VLLM_CPU_SIM_MULTI_NUMA", "0") == "0":
        visible = visible_memory_nodes(root, env)
        bound = [cpu for cpu in allowed if visible and nodes[cpu] == visible[0]]
    elif mask not in ("auto", "nobind"):
        with contextlib.suppress(ValueError):
            bound = [cpu for cpu in parse_id_list(mask.split("|")[0]) if cpu in allowed]
    return nodes[min(bound or allowed)] if nodes else 0


def probe_cpu_memory(
    node: int | None = None, *, root: Path = Path("/"), environ: Mapping[str, str] | None = None
) -> CpuMemory:
    """The node vLLM's CPU worker will check (``worker_node`` unless ``node`` is given) and its memory now."""
    if node is None:
        node = worker_node(root, environ)
    total, available = node_memory(node, root)
    return CpuMemory(total, available, node)


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
