"""The memory guard on vLLM's CPU backend: the NUMA node the worker checks, its memory, vLLM's checks.

The probe (``hardware.py``) is tested on fake ``/sys`` and ``/proc`` trees; the rule (``vllm_rules/memory.py``)
on devices made from those figures; and both against the real vLLM CPU build (marked ``vllm``), which is
started twice: once just above what the guard says its worker will find available on the node (vLLM
must stop with the guard's message and numbers), once well below (it must start).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from vllm_slo_guard.engine.launcher import free_port
from vllm_slo_guard.engine.lifeline import kill_group
from vllm_slo_guard.guard import cpu_device, predict
from vllm_slo_guard.hardware import CpuMemory, node_memory, probe_cpu_memory, visible_memory_nodes, worker_node
from vllm_slo_guard.tinymodel import make_tiny_model
from vllm_slo_guard.vllm_rules import memory
from vllm_slo_guard.vllm_rules.args import parse_serve_args
from vllm_slo_guard.vllm_rules.config import resolve_config
from vllm_slo_guard.vllm_rules.modelinfo import load_model_arch
from vllm_slo_guard.vllm_rules.startup import Device

GiB = 2**30
KIB = 1024
EAGER = ["--load-format", "dummy", "--enforce-eager", "--max-model-len", "512"]


# ---------------------------------------------------------------------------------------------
# a fake machine: two NUMA nodes, CPUs 0-3 on node 0 and 4-7 on node 1


def _meminfo(node: int, **kb: int) -> str:
    fields = {"MemTotal": 8 * 2**20, "MemFree": 2 * 2**20, "MemUsed": 6 * 2**20, "Active(file)": 512 * KIB}
    fields |= {"Inactive(file)": 256 * KIB, "FilePages": 3 * 2**20, "SReclaimable": 128 * KIB, "Shmem": 64 * KIB}
    fields |= kb
    return "".join(f"Node {node} {key}:{value:>16} kB\n" for key, value in fields.items()) + (
        f"Node {node} HugePages_Total:     0\n"
    )


def fake_machine(root: Path, *, mems: str = "0-1", cpus: str = "0-7", **node1_kb: int) -> Path:
    system = root / "sys" / "devices" / "system"
    (system / "cpu").mkdir(parents=True)
    (system / "cpu" / "online").write_text("0-7\n")
    for node, cpulist in ((0, "0-3"), (1, "4-7")):
        folder = system / "node" / f"node{node}"
        folder.mkdir(parents=True)
        (folder / "cpulist").write_text(cpulist + "\n")
        (folder / "meminfo").write_text(_meminfo(node, **(node1_kb if node == 1 else {})))
    (root / "proc" / "self").mkdir(parents=True)
    (root / "proc" / "self" / "status").write_text(
        f"Name:\tpython\nCpus_allowed:\tff\nCpus_allowed_list:\t{cpus}\nMems_allowed:\t3\nMems_allowed_list:\t{mems}\n"
    )
    (root / "proc" / "meminfo").write_text("MemTotal:  33554432 kB\nMemFree:  1048576 kB\nMemAvailable:  4194304 kB\n")
    (root / "sys" / "fs" / "cgroup").mkdir(parents=True)
    return root


NODE0_TOTAL = 8 * GiB
# MemFree + Active(file) + Inactive(file) + SReclaimable
NODE0_AVAILABLE = (2 * 2**20 + 512 * KIB + 256 * KIB + 128 * KIB) * KIB


def test_node_memory_is_free_plus_file_pages_plus_reclaimable_slab(tmp_path: Path) -> None:
    root = fake_machine(tmp_path)
    # not MemTotal - MemUsed, not FilePages (which counts Shmem), not MemAvailable: vLLM's own sum
    assert node_memory(0, root) == (NODE0_TOTAL, NODE0_AVAILABLE)
    assert node_memory(1, fake_machine(tmp_path / "b", MemFree=3 * 2**20)) == (NODE0_TOTAL, NODE0_AVAILABLE + GiB)


def test_a_node_without_meminfo_reads_the_system_wide_figures_unclamped(tmp_path: Path) -> None:
    root = fake_machine(tmp_path)
    (root / "sys" / "fs" / "cgroup" / "memory.max").write_text(f"{GiB}\n")
    assert node_memory(7, root) == (32 * GiB, 4 * GiB)


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        # cgroup v2 below the node: total is the limit, available at most limit - usage
        ({"memory.max": 6 * GiB, "memory.current": int(5.5 * GiB)}, (6 * GiB, GiB // 2)),
        ({"memory.max": 6 * GiB, "memory.current": 7 * GiB}, (6 * GiB, 0)),
        ({"memory.max": 6 * GiB, "memory.current": GiB}, (6 * GiB, NODE0_AVAILABLE)),
        # a limit above the node changes nothing, whatever the usage
        ({"memory.max": 9 * GiB, "memory.current": int(8.9 * GiB)}, (NODE0_TOTAL, NODE0_AVAILABLE)),
        ({"memory.max": "max", "memory.current": 7 * GiB}, (NODE0_TOTAL, NODE0_AVAILABLE)),
        # cgroup v1, and its "unlimited" sentinel
        ({"memory/memory.limit_in_bytes": 5 * GiB, "memory/memory.usage_in_bytes": 4 * GiB}, (5 * GiB, GiB)),
        ({"memory/memory.limit_in_bytes": 9223372036854771712}, (NODE0_TOTAL, NODE0_AVAILABLE)),
        # v2 wins over v1 when both are there
        ({"memory.max": 7 * GiB, "memory/memory.limit_in_bytes": 5 * GiB}, (7 * GiB, NODE0_AVAILABLE)),
    ],
)
def test_the_cgroup_clamps_the_node_as_in_vllm(tmp_path: Path, files: dict[str, object], expected: tuple) -> None:
    root = fake_machine(tmp_path)
    for name, value in files.items():
        path = root / "sys" / "fs" / "cgroup" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{value}\n")
    assert node_memory(0, root) == expected


@pytest.mark.parametrize(
    ("env", "status", "node"),
    [
        ({}, {}, 0),  # auto: rank 0 binds to the first visible memory node
        ({"CPU_VISIBLE_MEMORY_NODES": "1,0"}, {}, 1),
        ({"CPU_VISIBLE_MEMORY_NODES": "1"}, {"mems": "0"}, 0),  # not allowed: nothing visible, inherited affinity
        ({}, {"mems": "1"}, 1),  # Mems_allowed_list (numactl --membind) decides
        ({"VLLM_CPU_OMP_THREADS_BIND": "5-7|0-3"}, {}, 1),  # rank 0's list
        ({"VLLM_CPU_OMP_THREADS_BIND": "6,2|4"}, {}, 0),  # its lowest CPU
        ({"VLLM_CPU_OMP_THREADS_BIND": "nobind"}, {"cpus": "4-7"}, 1),  # the inherited affinity (taskset)
        ({"VLLM_CPU_OMP_THREADS_BIND": "nobind"}, {}, 0),
        ({"VLLM_CPU_OMP_THREADS_BIND": "2-3"}, {"cpus": "4-7"}, 1),  # a list of CPUs we may not use: inherited
        ({"VLLM_CPU_SIM_MULTI_NUMA": "1", "CPU_VISIBLE_MEMORY_NODES": "1"}, {}, 0),  # the variable is ignored then
        ({"CPU_VISIBLE_MEMORY_NODES": "x", "VLLM_CPU_OMP_THREADS_BIND": "a|b"}, {"cpus": "5"}, 1),  # never fails
    ],
)
def test_the_worker_checks_the_node_of_its_first_bound_cpu(
    tmp_path: Path, env: dict[str, str], status: dict[str, str], node: int
) -> None:
    root = fake_machine(tmp_path, **status)
    assert worker_node(root, env) == node
    probed = probe_cpu_memory(root=root, environ=env)
    assert probed == CpuMemory(*node_memory(node, root), node=node)


def test_visible_memory_nodes_keep_the_variables_order(tmp_path: Path) -> None:
    root = fake_machine(tmp_path)
    assert visible_memory_nodes(root, {}) == [0, 1]
    assert visible_memory_nodes(root, {"CPU_VISIBLE_MEMORY_NODES": "1,0,3"}) == [1, 0]


def test_without_numa_every_cpu_is_on_node_0(tmp_path: Path) -> None:
    root = fake_machine(tmp_path)
    for folder in (root / "sys" / "devices" / "system" / "node").iterdir():
        (folder / "cpulist").unlink()
    assert worker_node(root, {"VLLM_CPU_OMP_THREADS_BIND": "nobind"}) == 0


# ---------------------------------------------------------------------------------------------
# the rule: CPUWorker's two checks, with vLLM's own processes taken out of a probe before launch


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(make_tiny_model(tmp_path_factory.mktemp("models") / "tiny"))


def footprint(model: str, args: list[str], *, at_kv_check: bool = True) -> int:
    ns = parse_serve_args([model, *args])
    arch = load_model_arch(model)
    return memory.cpu_footprint_bytes(resolve_config(ns, arch, cpu_device(CpuMemory(GiB, GiB)).spec), arch,
                                      at_kv_check=at_kv_check)  # fmt: skip


def gib(x: float) -> str:
    return f"{round(x / GiB, 2)}"


def test_an_explicit_kv_size_is_checked_against_the_node_after_vllm_loaded(model: str) -> None:
    device = cpu_device(CpuMemory(total_bytes=int(8.34 * GiB), available_bytes=8 * GiB, node=1))
    at_kv = 8 * GiB - footprint(model, EAGER)
    assert 1.0 * GiB < 8 * GiB - at_kv < 1.5 * GiB  # vLLM's three processes, not the weights of a tiny model
    above = [*EAGER, "--kv-cache-memory-bytes", str(at_kv + 2**20)]
    verdict = predict(model, above, device)
    assert not verdict.ok and verdict.category == "oom"
    assert verdict.message == (
        f"Available memory on node 1 ({gib(at_kv)}/8.34 GiB) on kv cache allocation is less than requested memory "
        f"for kv ({gib(at_kv + 2**20)} GiB). Decrease --kv-cache-memory-bytes, VLLM_CPU_KVCACHE_SPACE, or reduce "
        "CPU memory used by other processes."
    )
    exact = predict(model, [*EAGER, "--kv-cache-memory-bytes", str(at_kv)], device)  # vLLM compares with >
    assert exact.ok and exact.num_blocks == at_kv // (64 * KIB)
    # the tuner's margin lets a borderline config through, on CPU as on a GPU
    assert predict(model, above, device, margin=0.05).ok


def test_the_issues_crash_is_predicted(model: str) -> None:
    """7.06 GiB asked, 6.78 of 8.34 GiB available at vLLM's KV check: the guard let it through before."""
    available = int(6.78 * GiB) + footprint(model, EAGER)
    verdict = predict(model, [*EAGER, "--kv-cache-memory-bytes", str(int(7.06 * GiB))],
                      cpu_device(CpuMemory(int(8.34 * GiB), available)))  # fmt: skip
    assert verdict.category == "oom"
    assert verdict.message is not None
    assert verdict.message.startswith(
        "Available memory on node 0 (6.78/8.34 GiB) on kv cache allocation is less than requested memory for kv "
        "(7.06 GiB)."
    )


def test_a_compiled_warmup_and_bigger_buffers_cost_more_node_memory(model: str) -> None:
    eager = footprint(model, EAGER)
    assert footprint(model, [*EAGER, "--max-num-seqs", "512", "--max-model-len", "2048"]) == pytest.approx(
        eager + 5 * (512 * 2048 - 128 * 512), abs=1
    )
    compiled = footprint(model, ["--load-format", "dummy", "--max-model-len", "512"])
    assert compiled - eager > memory.CPU_COMPILE_BYTES
    assert footprint(model, EAGER, at_kv_check=False) < eager


def test_the_utilization_is_checked_at_worker_construction(model: str) -> None:
    available = 6 * GiB
    device = cpu_device(CpuMemory(total_bytes=8 * GiB, available_bytes=available, node=0))
    at_startup = available - footprint(model, EAGER, at_kv_check=False)
    verdict = predict(model, [*EAGER, "--gpu-memory-utilization", "0.7"], device)
    assert verdict.category == "oom"
    assert verdict.message == (
        f"Available memory on node 0 ({gib(at_startup)}/8.0 GiB) on startup is less than desired CPU memory "
        "utilization (0.7, 5.6 GiB). On the CPU backend, the `--gpu-memory-utilization` flag controls the fraction "
        "of CPU memory reserved (despite its name). To resolve: decrease `--gpu-memory-utilization` (e.g. "
        "`--gpu-memory-utilization 0.5`) or reduce CPU memory used by other processes."
    )
    assert predict(model, [*EAGER, "--gpu-memory-utilization", "0.5"], device).ok


def test_an_auto_sized_kv_needs_more_than_the_workers_rss(model: str) -> None:
    device = cpu_device(CpuMemory(total_bytes=8 * GiB, available_bytes=6 * GiB))
    verdict = predict(model, [*EAGER, "--gpu-memory-utilization", "0.05"], device)  # 0.4 GiB < the worker's RSS
    assert verdict.category == "oom"
    assert verdict.message is not None
    match = re.fullmatch(
        r"Available memory on node 0 \(([\d.]+)/8\.0 GiB\) on kv cache allocation is less than requested memory "
        r"for kv \((-[\d.]+)/0\.4 GiB\)\. Reduce CPU memory used by other processes\.",
        verdict.message,
    )
    assert match, verdict.message
    assert -0.4 < float(match.group(2)) < 0


def test_a_described_node_has_no_vllm_footprint(model: str) -> None:
    """The simulator's devices (no probe) keep what they say: total - used at both checks."""
    spec = cpu_device(CpuMemory(8 * GiB, 8 * GiB)).spec
    verdict = predict(model, [*EAGER, "--kv-cache-memory-bytes", "9G"], Device(spec, used_bytes=GiB))
    assert verdict.message is not None and verdict.message.startswith("Available memory on node 0 (7.0/8.0 GiB)")


# ---------------------------------------------------------------------------------------------
# against the real vLLM CPU build

MESSAGE_RE = re.compile(
    r"Available memory on node (?P<node>\d+) \((?P<avail>[\d.]+)/(?P<total>[\d.]+) GiB\) on kv cache allocation is "
    r"less than requested memory for kv \((?P<kv>[\d.]+) GiB\)\. Decrease --kv-cache-memory-bytes, "
    r"VLLM_CPU_KVCACHE_SPACE, or reduce CPU memory used by other processes\."
)
EXPLICIT_RE = re.compile(r"Explicitly set \(([\d.]+)/([\d.]+)\) GiB for KV cache on node (\d+)\.")


@contextmanager
def vllm_server(vllm_python: str, model: str, args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    argv = [vllm_python, "-m", "vllm.entrypoints.openai.api_server", "--model", model, *args]
    argv += ["--host", "127.0.0.1", "--port", str(free_port())]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        for sig in (signal.SIGINT, signal.SIGKILL):
            if proc.poll() is None:
                os.killpg(proc.pid, sig)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    continue
        # the engine's own processes are in the group too
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)


def _tree_footprint(proc: subprocess.Popen[bytes]) -> int:
    """What vLLM's processes hold of the node: anonymous memory and page tables (/proc/PID/status)."""
    total = 0
    try:
        pids = [proc.pid, *(child.pid for child in psutil.Process(proc.pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        return 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        total += sum(int(kb) * KIB for kb in re.findall(r"^(?:RssAnon|VmPTE):\s+(\d+) kB", status, re.M))
    return total


def _start_above(
    vllm_python: str, model: str, kv: int, node: int, log: Path
) -> tuple[re.Match[str], int, int, int] | None:
    """Start a config vLLM should refuse: its message, and the node's total and available memory and vLLM's
    share of the node in the last sample before the message was logged. None if vLLM took the KV cache."""
    sample = (0, 0, 0)
    with vllm_server(vllm_python, model, [*EAGER, "--kv-cache-memory-bytes", f"{kv // 2**20}M"], log) as proc:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            text = log.read_text(errors="replace")
            if (match := MESSAGE_RE.search(text)) is not None:
                return match, *sample
            if EXPLICIT_RE.search(text):  # memory moved our way and vLLM allocates: stop it before it does
                kill_group(proc.pid)  # its resource tracker last, so vLLM's /dev/shm segments go too
                print(f"vLLM found more: {text[text.index('Explicitly set') :].splitlines()[0]}, sample {sample}")
                return None
            sample = (*node_memory(node), _tree_footprint(proc))
            time.sleep(0.05)
    pytest.fail(f"vLLM did not check the KV size:\n{log.read_text(errors='replace')[-3000:]}")


ABOVE_MIB = 512
ATTEMPTS = 4


def _wait_for_steady_memory(timeout_s: float = 20.0) -> None:
    """Wait (a while) until the node's available memory holds still, so that little moves while vLLM starts."""
    deadline = time.monotonic() + timeout_s
    last = probe_cpu_memory().available_bytes
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = probe_cpu_memory().available_bytes
        if abs(now - last) < 16 * 2**20:
            return
        last = now


@pytest.mark.vllm
@pytest.mark.slow
def test_the_guard_predicts_vllms_node_memory_check(vllm_python: str, tiny_model: Path, tmp_path: Path) -> None:
    model = str(tiny_model)
    for attempt in range(ATTEMPTS):  # other tests on this machine may free memory while vLLM starts: try again
        _wait_for_steady_memory()
        device = cpu_device()  # the machine's own figures, just before vLLM starts
        assert device.available_bytes is not None
        at_kv = device.available_bytes - footprint(model, EAGER)
        # above what the worker will find by more than the node's page cache moves while vLLM starts
        # (it reads its libraries meanwhile: a few hundred MiB that count as available)
        kv = (at_kv // 2**20 + ABOVE_MIB) * 2**20
        verdict = predict(model, [*EAGER, "--kv-cache-memory-bytes", f"{kv // 2**20}M"], device)
        assert not verdict.ok and verdict.category == "oom"
        guarded = MESSAGE_RE.fullmatch(verdict.message or "")
        assert guarded, verdict.message
        started = _start_above(vllm_python, model, kv, device.node, tmp_path / f"above-{attempt}.log")
        if started is not None:
            break
    assert started is not None, f"vLLM found more memory than predicted {ATTEMPTS} times (see the output)"
    real, total, available, share = started
    assert real.group(0) == guarded.group(0).replace(guarded["avail"], real["avail"], 1)  # the same text
    assert (real["node"], real["kv"]) == (guarded["node"], guarded["kv"])
    assert float(real["total"]) == round(total / GiB, 2)
    if total == device.spec.memory_bytes:  # a VM's memory can be resized underneath
        assert real["total"] == guarded["total"]
    # vLLM's own processes hold what the guard said they would ...
    assert abs(share - footprint(model, EAGER)) <= 0.005 * GiB, (share, footprint(model, EAGER))
    # ... and its figure is the guard's, but for the memory that moved in between: what the node lost or
    # gained besides vLLM's processes
    moved = (device.available_bytes - available) - share
    print(f"guard: {guarded.group(0)[:70]} | vLLM: {real.group(0)[:70]} | moved {moved / GiB:+.3f} GiB | "
          f"vLLM's processes {share / 2**20:.1f} MiB, predicted {footprint(model, EAGER) / 2**20:.1f}")  # fmt: skip
    assert abs(float(real["avail"]) - (at_kv - moved) / GiB) <= 0.01, (real.group(0), verdict.message, moved / GiB)

    # well below: the guard lets it start, and vLLM starts with the KV cache the guard predicted
    below = [*EAGER, "--kv-cache-memory-bytes", "256M"]
    verdict = predict(model, below, cpu_device())
    assert verdict.ok
    log = tmp_path / "below.log"
    with vllm_server(vllm_python, model, below, log) as proc:
        deadline = time.monotonic() + 240
        while "Application startup complete." not in log.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.5)
        text = log.read_text(errors="replace")
    explicit = EXPLICIT_RE.search(text)
    assert explicit and explicit.group(1) == "0.25" and int(explicit.group(3)) == device.node
    tokens = re.search(r"CPU KV cache size: ([\d,]+) tokens", text)
    assert tokens and int(tokens.group(1).replace(",", "")) == verdict.kv_cache_tokens
