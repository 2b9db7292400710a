"""Client CPU per request of the load generator, against a bare aiohttp streaming client (issue: loadgen).

The load generator must never be the bottleneck it measures. Both clients stream the same short
requests (16 prompt tokens, 8 output tokens: per-request overhead dominates) to the simulated server
(Qwen/Qwen2-1.5B on a simulated H200, --max-num-seqs 512) with the same arrival process (all at
t = 0, 64 in flight at most) and the same per-chunk timing work, in the same run. Ours is
``vllm_slo_guard.bench.run.run_load`` (aiohttp, the request function, the run's bookkeeping); the
baseline is a bare aiohttp client, what ``vllm bench serve`` uses, with a full ``json.loads`` per
chunk. CPU is ``time.process_time()`` of this process; the server is a separate process on the same
cores, so the request rates are bounded by the server too (compare ours with the baseline's rate).
Targets: ours/bare CPU ratio <= 1.1 and >= 1000 completed requests/s sustained by ours.

Usage: python benchmarks/loadgen_overhead.py [--requests 1000] [--concurrency 64] [--repeat 3]
       [--output-len 8] [--out benchmarks/results/loadgen_overhead.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp

from vllm_slo_guard.bench.run import LoadGenConfig, run_load
from vllm_slo_guard.bench.workload import WorkloadRequest, WorkloadSpec, arrival_offsets, build_requests
from vllm_slo_guard.engine.launcher import ServerProcess, free_port

MODEL, GPU = "Qwen/Qwen2-1.5B", "H200-141GB"
TARGET_RATIO = 1.1
TARGET_REQ_S = 1000.0
TARGET_IN_FLIGHT = 64  # the throughput target holds at this concurrency


def _payload(request: WorkloadRequest) -> dict[str, Any]:
    return {
        "model": MODEL,
        "prompt": list(request.prompt_token_ids),
        "max_tokens": request.output_len,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
    }


class _Timing:
    """The per-chunk work every client must do: split SSE lines, parse JSON, timestamp content."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.last = self.start
        self.itl: list[float] = []
        self.count = 0
        self.pending = b""

    def feed(self, data: bytes) -> None:
        lines = (self.pending + data).split(b"\n")
        self.pending = lines.pop()
        for line in lines:
            if not line.startswith(b"data:") or line[5:].strip() == b"[DONE]":
                continue
            choices = json.loads(line[5:]).get("choices")
            if choices and choices[0].get("text"):
                now = time.perf_counter()
                if self.count:
                    self.itl.append(now - self.last)
                self.last = now
                self.count += 1


async def _aiohttp_request(session: Any, url: str, request: WorkloadRequest) -> bool:
    timing = _Timing()
    async with session.post(url, json=_payload(request)) as response:
        if response.status != 200:
            return False
        async for data in response.content.iter_any():
            timing.feed(data)
    return timing.count > 0


async def _drive(workload: WorkloadSpec, send: Callable[[WorkloadRequest], Awaitable[bool]]) -> tuple[int, float]:
    """(completed, duration) of vLLM bench's loop: absolute send times, semaphore before the clock."""
    requests = build_requests(workload)
    offsets = arrival_offsets(workload, len(requests)).tolist()
    semaphore = asyncio.Semaphore(workload.max_concurrency or len(requests))

    async def limited(request: WorkloadRequest) -> bool:
        async with semaphore:
            return await send(request)

    t0 = time.perf_counter()
    tasks = []
    for request, offset in zip(requests, offsets, strict=True):
        delay = t0 + offset - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(limited(request)))
    done = await asyncio.gather(*tasks)
    return sum(done), time.perf_counter() - t0


async def _bare_run(base_url: str, workload: WorkloadSpec) -> tuple[int, float]:
    """The baseline: a bare aiohttp session, as ``vllm bench serve`` opens one."""
    cap = workload.max_concurrency or workload.num_prompts
    url = f"{base_url}/v1/completions"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=cap)) as session:
        return await _drive(workload, lambda r: _aiohttp_request(session, url, r))


async def _ours(base_url: str, workload: WorkloadSpec) -> tuple[int, float]:
    result = await run_load(LoadGenConfig(base_url, model=MODEL), workload)
    return sum(r.success for r in result.records), result.duration_s


Client = Callable[[str, WorkloadSpec], Awaitable[tuple[int, float]]]


async def _measure(
    base_url: str, workload: WorkloadSpec, repeat: int, clients: Sequence[tuple[str, Client]]
) -> dict[str, list[dict[str, float]]]:
    """Alternate the clients ``repeat`` times after one warm-up each; CPU and throughput per run."""
    warm = WorkloadSpec(**{**workload.to_dict(), "num_prompts": 50, "request_rate": float("inf")})
    for _, fn in clients:
        await fn(base_url, warm)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name, _ in clients}
    for _ in range(repeat):
        for name, fn in clients:
            cpu = time.process_time()
            completed, duration = await fn(base_url, workload)
            cpu = time.process_time() - cpu
            runs[name].append(
                {
                    "cpu_s": cpu,
                    "cpu_ms_per_request": 1000 * cpu / workload.num_prompts,
                    "completed": completed,
                    "duration_s": duration,
                    "completed_per_s": completed / duration if duration > 0 else 0.0,
                }
            )
    return runs


def _summary(runs: dict[str, list[dict[str, float]]], workload: WorkloadSpec) -> dict[str, Any]:
    def median(name: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[name])

    ours_cpu, bare_cpu = median("ours", "cpu_ms_per_request"), median("bare", "cpu_ms_per_request")
    ratio = ours_cpu / bare_cpu
    sustained = median("ours", "completed_per_s")
    pairs = zip(runs["ours"], runs["bare"], strict=True)
    report = {
        "workload": workload.to_dict(),
        "server": f"vllm_slo_guard.sim.server {MODEL} --sim-gpu {GPU} --max-num-seqs 512",
        "baseline": f"aiohttp {aiohttp.__version__} ClientSession, json.loads per chunk",
        "ours_client": f"vllm_slo_guard.bench.run.run_load on aiohttp {aiohttp.__version__}",
        "ours_cpu_ms_per_request": ours_cpu,
        "bare_cpu_ms_per_request": bare_cpu,
        "cpu_ratio_ours_over_bare": ratio,
        "cpu_ratio_per_repeat": [o["cpu_ms_per_request"] / b["cpu_ms_per_request"] for o, b in pairs],
        "target_ratio": TARGET_RATIO,
        "meets_ratio_target": ratio <= TARGET_RATIO,
        "ours_completed_per_s": sustained,
        "bare_completed_per_s": median("bare", "completed_per_s"),
        "target_completed_per_s": TARGET_REQ_S,
        "target_in_flight": TARGET_IN_FLIGHT,
        "meets_throughput_target": sustained >= TARGET_REQ_S and workload.max_concurrency == TARGET_IN_FLIGHT,
        "all_completed": all(run["completed"] == workload.num_prompts for name in runs for run in runs[name]),
    }
    report.update(runs=runs, python=platform.python_version(), machine=platform.machine())
    return report


def _print(report: dict[str, Any]) -> None:
    rows = [
        ("client", "CPU ms/request", "completed req/s"),
        ("ours", f"{report['ours_cpu_ms_per_request']:.3f}", f"{report['ours_completed_per_s']:.0f}"),
        ("bare", f"{report['bare_cpu_ms_per_request']:.3f}", f"{report['bare_completed_per_s']:.0f}"),
    ]
    print(f"baseline: {report['baseline']}; ours: {report['ours_client']}")
    for row in rows:
        print(f"{row[0]:<10} {row[1]:>16} {row[2]:>18}")
    ok = "ok" if report["meets_ratio_target"] else "MISSED"
    per_repeat = ", ".join(f"{r:.2f}" for r in report["cpu_ratio_per_repeat"])
    print(
        f"CPU ratio ours/bare: {report['cpu_ratio_ours_over_bare']:.2f} of medians (target <= {TARGET_RATIO}: {ok});"
        f" per repeat: {per_repeat}"
    )
    ok = "ok" if report["meets_throughput_target"] else "MISSED"
    print(
        f"sustained by ours: {report['ours_completed_per_s']:.0f} req/s"
        f" (target >= {TARGET_REQ_S:.0f} with {TARGET_IN_FLIGHT} in flight: {ok})"
    )


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # so SIGTERM also unwinds through the server's context manager


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=TARGET_IN_FLIGHT)
    parser.add_argument("--output-len", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/loadgen_overhead.json")
    args = parser.parse_args()
    workload = WorkloadSpec(
        num_prompts=args.requests,
        max_concurrency=args.concurrency,
        random_input_len=16,
        random_output_len=args.output_len,
    )
    signal.signal(signal.SIGTERM, _raise_interrupt)
    port = free_port()
    argv = [sys.executable, "-m", "vllm_slo_guard.sim.server", MODEL, "--sim-gpu", GPU, "--max-num-seqs", "512"]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    with (
        tempfile.TemporaryDirectory() as tmp,
        ServerProcess(argv, host="127.0.0.1", port=port, log_path=Path(tmp) / "server.log") as server,
    ):
        ready = server.wait_ready(120)
        if not ready.ready:
            print(f"the simulated server did not start:\n{server.log_text()[-2000:]}", file=sys.stderr)
            return 1
        clients: list[tuple[str, Client]] = [("ours", _ours), ("bare", _bare_run)]
        runs = asyncio.run(_measure(server.base_url, workload, args.repeat, clients))
    report = _summary(runs, workload)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    _print(report)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
