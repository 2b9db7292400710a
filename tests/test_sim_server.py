"""The simulated ``vllm serve`` as a real process: startup lines, OpenAI endpoints, /metrics, faults, signals.

Every test starts ``python -m vllm_slo_guard.sim.server`` on 127.0.0.1 in its own process group and the
``serve`` fixture kills the group on teardown, then asserts the process has exited. Each test takes one
to three seconds; the ones that wait on purpose (faults, the stats interval) are marked ``slow``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from vllm_slo_guard.bench.sim_tokenizer import SimTokenizer
from vllm_slo_guard.bench.workload import WorkloadSpec, build_requests
from vllm_slo_guard.errors import InputError
from vllm_slo_guard.sim import evaluator
from vllm_slo_guard.sim.scheduler import SimRequest
from vllm_slo_guard.sim.server import (
    Fault,
    Histogram,
    SimFlags,
    bucket_1_2_5,
    chunk_templates,
    completion_prompt,
    parse_fault,
    split_sim_flags,
)
from vllm_slo_guard.sim.server import _prom_float as prom_float

QWEN = "Qwen/Qwen2-1.5B"
A100 = "A100-40GB"
KV_LINE = re.compile(
    r"(?P<dev>GPU|CPU) KV cache size: (?P<tok>[\d,]+) tokens, Maximum concurrency for (?P<len>[\d,]+) tokens per "
    r"request: (?P<x>\d+\.\d\d)x$",
    re.M,
)
PREFIX = re.compile(r"^\((?:APIServer|EngineCore|Worker) pid=\d+\) (?:INFO|WARNING|ERROR) \d\d-\d\d \d\d:\d\d:\d\d \[")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """One server process with its log files."""

    proc: subprocess.Popen[bytes]
    port: int
    out_path: Path
    err_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(encoding="utf-8")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(encoding="utf-8")

    def health(self) -> int | None:
        try:
            return httpx.get(f"{self.url}/health", timeout=1.0).status_code
        except httpx.TransportError:
            return None

    def wait_healthy(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.health() == 200:
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.stdout}\n{self.stderr}")
            time.sleep(0.05)
        raise AssertionError(f"server not healthy after {timeout} s:\n{self.stdout}\n{self.stderr}")

    def wait_exit(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="x", max_retries=0)


Launcher = Callable[..., Server]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Launcher]:
    """Start servers; on teardown kill each process group and check that every process has exited."""
    started: list[Server] = []

    def launch(
        *args: str, fault: str | None = None, port: int | None = None, env: dict[str, str] | None = None
    ) -> Server:
        port = free_port() if port is None else port
        n = len(started)
        out_path, err_path = tmp_path / f"server{n}.out", tmp_path / f"server{n}.err"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("SLO_GUARD_SIM_")}
        environ.update(env or {})
        if fault is not None:
            environ["SLO_GUARD_SIM_FAULT"] = fault
        cmd = [sys.executable, "-m", "vllm_slo_guard.sim.server", *args, "--host", "127.0.0.1", "--port", str(port)]
        with out_path.open("wb") as out, err_path.open("wb") as err:
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=environ, start_new_session=True)
        server = Server(proc, port, out_path, err_path)
        started.append(server)
        return server

    yield launch
    for server in started:
        if server.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait(timeout=10)
        assert server.proc.poll() is not None


def _usage_stream(client: openai.OpenAI, max_tokens: int, **extra: object) -> tuple[list[str], object]:
    stream = client.completions.create(
        model=QWEN,
        prompt="the quick brown fox",
        max_tokens=max_tokens,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True, **extra},
    )
    texts, usage = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].text:
            texts.append(chunk.choices[0].text)
        if chunk.usage is not None:
            usage = chunk.usage
    return texts, usage


def _metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} {labels} not in /metrics")


# --- pure helpers ---------------------------------------------------------------------------------


def test_sim_flags_are_split_off_in_both_spellings() -> None:
    flags, rest = split_sim_flags(
        [QWEN, "--sim-gpu=H100", "--max-num-seqs", "8", "--sim-gpu-count", "2", "--sim-gpu-memory-used", "8GiB"], {}
    )
    assert flags == SimFlags("H100", gpu_count=2, used_bytes=8 * 2**30)
    assert rest == [QWEN, "--max-num-seqs", "8"]
    flags, _ = split_sim_flags([QWEN, "--sim-seed", "3", "--sim-startup-delay", "250ms"], {"SLO_GUARD_SIM_GPU": "cpu"})
    assert (flags.gpu, flags.seed, flags.startup_delay_s) == ("cpu", 3, 0.25)
    assert split_sim_flags([QWEN], {})[0].gpu is None  # required, but only after vLLM's own parsing
    with pytest.raises(InputError, match="unknown simulator flag --sim-gpus"):
        split_sim_flags([QWEN, "--sim-gpus", "2"], {})


def test_fault_grammar() -> None:
    assert parse_fault("") == Fault()
    assert parse_fault("hang_startup") == Fault(hang_startup=True)
    assert parse_fault("die_after=2, slow=1.5") == Fault(die_after=2, slow=1.5)
    assert parse_fault("stall_after=0") == Fault(stall_after=0)
    for bad in ("explode", "die_after=x", "slow=0", "hang_startup=1", "die_after"):
        with pytest.raises(InputError, match="SLO_GUARD_SIM_FAULT"):
            parse_fault(bad)


def test_prometheus_number_format_and_buckets() -> None:
    assert [prom_float(v) for v in (0, 1, 0.25, math.inf, 1796056253.3420029)] == [
        "0.0",
        "1.0",
        "0.25",
        "+Inf",
        "1.7960562533420029e+09",
    ]
    assert bucket_1_2_5(512) == (1, 2, 5, 10, 20, 50, 100, 200, 500)
    hist = Histogram((0.1, 1.0))
    for value in (0.1, 0.5, 2.0):
        hist.observe(value)
    assert hist.counts == [1, 1, 1] and hist.n == 3  # le is inclusive


def test_prompt_forms_and_chunk_templates() -> None:
    tok = SimTokenizer()
    assert completion_prompt({"prompt": "a b c"}, tok) == tok.encode("a b c")
    assert completion_prompt({"prompt": [5, 6]}, tok) == [5, 6]
    assert completion_prompt({"prompt": ["x y", "z"]}, tok) == tok.encode("x y")  # only the first is served
    assert completion_prompt({"prompt": [[7], [8]]}, tok) == [7]
    t = chunk_templates("completion", "cmpl-1", 5, 'm"x')
    assert t.head.startswith(b'data: {"id":"cmpl-1","object":"text_completion","created":5,"model":"m\\"x"')
    assert t.last_tail.endswith(b'"finish_reason":"length","stop_reason":null}]}\n\n')


def test_scheduler_abort_frees_a_running_or_waiting_request() -> None:
    engine = evaluator.start_server([QWEN, "--max-num-seqs", "1"], A100).engine(0)
    running, waiting = SimRequest(0, prompt_len=40, max_tokens=10), SimRequest(1, prompt_len=40, max_tokens=10)
    engine.add_request(running)
    engine.add_request(waiting)
    engine.step()
    sched = engine.scheduler
    assert sched.running == [running] and list(sched.waiting) == [waiting]
    free = sched.pool.num_free
    sched.abort(running)
    assert running.finish_reason == "abort" and not sched.running and sched.pool.num_free > free
    sched.abort(waiting)
    sched.abort(waiting)  # aborting twice is harmless
    assert not sched.has_work and sched.pool.num_free == sched.pool.capacity


# --- a running server -------------------------------------------------------------------------------


def test_startup_log_and_capacity_line_match_the_in_process_plan(serve: Launcher) -> None:
    server = serve(QWEN, "--sim-gpu", A100, "--max-num-seqs", "8")
    server.wait_healthy()
    plan = evaluator.start_server([QWEN, "--max-num-seqs", "8"], A100).plan
    out = server.stdout
    match = KV_LINE.search(out)
    assert match, out
    assert match["dev"] == "GPU"
    assert int(match["tok"].replace(",", "")) == plan.kv_tokens
    assert int(match["len"].replace(",", "")) == plan.max_model_len
    assert match["x"] == f"{plan.max_concurrency:.2f}"
    expected = (
        f"GPU KV cache size: {plan.kv_tokens:,} tokens, Maximum concurrency for {plan.max_model_len:,} tokens "
        f"per request: {plan.max_concurrency:.2f}x"
    )
    assert expected in out
    for needle in (
        "non-default args: {",
        "Resolved architecture: Qwen2ForCausalLM",
        f"Using max model len {plan.max_model_len}",
        "Initializing a V1 LLM engine (v0.32.0) with config: model='Qwen/Qwen2-1.5B'",
        "Model loading took ",
        "Available KV cache memory: ",
        "init engine (profile, create kv cache, warmup model) took ",
        f"Starting vLLM server on http://127.0.0.1:{server.port}",
        "Route: /v1/completions, Methods: POST",
    ):
        assert needle in out, needle
    assert all(PREFIX.match(line) for line in out.splitlines() if line and not line.startswith("INFO:")), out
    assert "Application startup complete." in server.stderr
    assert f"Started server process [{server.proc.pid}]" in server.stderr
    assert httpx.get(f"{server.url}/version").json() == {"version": "0.32.0"}
    models = httpx.get(f"{server.url}/v1/models").json()
    assert models["data"][0]["id"] == QWEN and models["data"][0]["max_model_len"] == plan.max_model_len


def test_openai_client_streaming_chat_and_plain_completions(serve: Launcher) -> None:
    server = serve(QWEN, "--sim-gpu", A100, "--max-num-seqs", "8")
    server.wait_healthy()
    client = server.client()
    texts, usage = _usage_stream(client, 20)
    assert len(texts) == 20 and all(t.startswith(" ") and len(t.split()) == 1 for t in texts)
    assert usage is not None and usage.completion_tokens == 20 and usage.prompt_tokens == 4  # type: ignore[attr-defined]
    assert usage.total_tokens == 24  # type: ignore[attr-defined]

    chat = client.chat.completions.create(
        model=QWEN,
        messages=[{"role": "user", "content": "hello there"}],
        max_tokens=7,
        stream=True,
        stream_options={"include_usage": True},
    )
    contents, finish, chat_usage = [], None, None
    for chunk in chat:
        if chunk.choices:
            if chunk.choices[0].delta.content:
                contents.append(chunk.choices[0].delta.content)
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            chat_usage = chunk.usage
    assert len(contents) == 7 and finish == "length"
    assert chat_usage is not None and chat_usage.prompt_tokens == 2 and chat_usage.completion_tokens == 7

    plain = client.completions.create(model=QWEN, prompt=[1, 2, 3], max_tokens=5)
    assert plain.usage is not None and plain.usage.completion_tokens == 5 and plain.usage.prompt_tokens == 3
    assert len(plain.choices[0].text.split()) == 5 and plain.choices[0].finish_reason == "length"
    again = client.completions.create(model=QWEN, prompt=[1, 2, 3], max_tokens=5)
    assert again.choices[0].text == plain.choices[0].text  # deterministic token text
    plain_chat = client.chat.completions.create(
        model=QWEN, messages=[{"role": "user", "content": "a b c"}], max_tokens=3
    )
    assert plain_chat.choices[0].message.content is not None
    assert len(plain_chat.choices[0].message.content.split()) == 3


def test_request_errors_look_like_vllm(serve: Launcher) -> None:
    server = serve(QWEN, "--sim-gpu", A100, "--max-model-len", "64", "--served-model-name", "mine", "--api-key", "k")
    server.wait_healthy()
    ok = openai.OpenAI(base_url=f"{server.url}/v1", api_key="k", max_retries=0)
    assert ok.completions.create(model="mine", prompt="a b", max_tokens=2).usage.completion_tokens == 2  # type: ignore[union-attr]
    with pytest.raises(openai.AuthenticationError):
        server.client().completions.create(model="mine", prompt="a", max_tokens=2)
    with pytest.raises(openai.NotFoundError, match=re.escape("The model `other` does not exist.")):
        ok.completions.create(model="other", prompt="a", max_tokens=2)
    with pytest.raises(openai.BadRequestError) as err:
        ok.completions.create(model="mine", prompt=list(range(60)), max_tokens=10)
    body = err.value.response.json()
    assert body["error"]["type"] == "BadRequestError" and body["error"]["code"] == 400
    assert body["error"]["message"].startswith("This model's maximum context length is 64 tokens.")
    # max_tokens defaults to the rest of max_model_len
    assert ok.completions.create(model="mine", prompt=list(range(60))).usage.completion_tokens == 4  # type: ignore[union-attr]
    assert httpx.get(f"{server.url}/health").status_code == 200  # only /v1 needs the key


def test_real_time_latency_agrees_with_the_in_process_simulator(serve: Launcher) -> None:
    argv = [QWEN, "--max-num-seqs", "8"]
    workload = WorkloadSpec(num_prompts=4, request_rate=math.inf, random_input_len=64, random_output_len=64)
    predicted_s = evaluator.simulate(argv, workload, A100).metrics["mean_e2el_ms"] / 1e3
    server = serve(*argv, "--sim-gpu", A100)
    server.wait_healthy()
    prompts = [list(r.prompt_token_ids) for r in build_requests(workload)]

    async def one(client: openai.AsyncOpenAI, prompt: list[int]) -> float:
        start = time.perf_counter()
        stream = await client.completions.create(
            model=QWEN, prompt=prompt, max_tokens=64, stream=True, extra_body={"ignore_eos": True}
        )
        count = 0
        async for chunk in stream:
            count += bool(chunk.choices and chunk.choices[0].text)
        assert count == 64
        return time.perf_counter() - start

    async def run() -> list[float]:
        client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
        await one(client, prompts[0])  # warm the connection pool and the server's code paths
        return await asyncio.gather(*(one(client, p) for p in prompts))

    measured = asyncio.run(run())
    mean_s = sum(measured) / len(measured)
    assert 0.25 < predicted_s < 0.45
    assert abs(mean_s - predicted_s) / predicted_s < 0.15, (measured, predicted_s)


def test_metrics_count_what_was_served(serve: Launcher) -> None:
    server = serve(QWEN, "--sim-gpu", A100, "--max-num-seqs", "8")
    server.wait_healthy()
    client = server.client()
    for n in (3, 5, 7):
        client.completions.create(model=QWEN, prompt="a b c d", max_tokens=n)
    text = httpx.get(f"{server.url}/metrics").text
    plan = evaluator.start_server([QWEN, "--max-num-seqs", "8"], A100).plan
    labels = {"model_name": QWEN, "engine": "0"}
    assert _metric(text, "vllm:generation_tokens_total", **labels) == 15
    assert _metric(text, "vllm:prompt_tokens_total", **labels) == 12
    assert _metric(text, "vllm:request_success_total", finished_reason="length") == 3
    assert _metric(text, "vllm:num_requests_running") == 0
    assert _metric(text, "vllm:kv_cache_usage_perc") == 0
    assert _metric(text, "vllm:time_to_first_token_seconds_count") == 3
    assert _metric(text, "vllm:e2e_request_latency_seconds_bucket", le="+Inf") == 3
    assert _metric(text, "vllm:inter_token_latency_seconds_count") == 12
    assert _metric(text, "vllm:time_to_first_token_seconds_bucket", le="0.001") == 0
    info = next(line for line in text.splitlines() if line.startswith("vllm:cache_config_info{"))
    assert f'num_gpu_blocks="{plan.num_blocks}"' in info and f'kv_cache_size_tokens="{plan.kv_tokens}"' in info
    assert 'block_size="16"' in info and 'gpu_memory_utilization="0.92"' in info and info.endswith("} 1.0")
    for family in ("vllm:num_preemptions_total", "vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total"):
        assert f"# TYPE {family} counter" in text


def test_disable_log_stats_removes_every_vllm_series(serve: Launcher) -> None:
    server = serve(QWEN, "--sim-gpu", A100, "--disable-log-stats")
    server.wait_healthy()
    server.client().completions.create(model=QWEN, prompt="a b", max_tokens=2)
    text = httpx.get(f"{server.url}/metrics").text
    assert "process_start_time_seconds" in text
    assert "vllm:" not in text


def test_client_disconnect_aborts_the_request(serve: Launcher) -> None:
    server = serve(QWEN, "--sim-gpu", A100, env={"SLO_GUARD_SIM_FAULT": "slow=20"})
    server.wait_healthy()
    body = {"model": QWEN, "prompt": "a b c", "max_tokens": 500, "stream": True}
    with httpx.stream("POST", f"{server.url}/v1/completions", json=body) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        text = httpx.get(f"{server.url}/metrics").text
        if _metric(text, "vllm:request_success_total", finished_reason="abort") == 1:
            break
        time.sleep(0.05)
    assert _metric(text, "vllm:request_success_total", finished_reason="abort") == 1
    assert _metric(text, "vllm:num_requests_running") == 0
    assert _metric(text, "vllm:generation_tokens_total") < 500


# --- faults and signals ---------------------------------------------------------------------------


@pytest.mark.slow
def test_engine_death_gives_500_then_503_then_exit_status_zero(serve: Launcher) -> None:
    server = serve(QWEN, "--sim-gpu", A100, fault="die_after=2")
    server.wait_healthy()
    client = server.client()
    for _ in range(2):
        assert client.completions.create(model=QWEN, prompt="a b", max_tokens=4).usage is not None
    response = httpx.post(f"{server.url}/v1/completions", json={"model": QWEN, "prompt": "a", "max_tokens": 4})
    assert response.status_code == 500
    assert response.json()["error"] == {
        "message": "EngineCore encountered an issue. See stack trace (above) for the root cause.",
        "type": "InternalServerError",
        "param": None,
        "code": 500,
    }
    assert server.health() in (503, None)
    assert server.wait_exit(10) == 0
    out = server.stdout
    assert "[core_client.py:817] [shutdown] MPClient: engine core exited unexpectedly; starting cleanup" in out
    assert "AsyncLLM output_handler failed." in out
    assert (
        "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See stack trace (above) for "
        "the root cause." in out
    )
    err = server.stderr
    assert "INFO:     Shutting down" in err and f"INFO:     Finished server process [{server.proc.pid}]" in err


@pytest.mark.slow
def test_engine_death_breaks_a_running_stream(serve: Launcher) -> None:
    server = serve(QWEN, "--sim-gpu", A100, fault="die_after=1")
    server.wait_healthy()
    client = server.client()
    long = client.completions.create(model=QWEN, prompt="a b", max_tokens=400, stream=True)
    short = client.completions.create(model=QWEN, prompt="c d", max_tokens=3)
    assert short.usage is not None and short.usage.completion_tokens == 3
    with pytest.raises(openai.APIError, match="EngineCore encountered an issue"):
        for _ in long:
            pass
    assert server.wait_exit(10) == 0


@pytest.mark.slow
def test_hang_at_startup_never_gets_healthy_and_dies_on_sigterm(serve: Launcher) -> None:
    server = serve(QWEN, "--sim-gpu", A100, fault="hang_startup")
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        assert server.health() is None  # bound, never listening: connection refused
        assert server.proc.poll() is None
        time.sleep(0.1)
    assert "Starting to load model" in server.stdout
    assert "Application startup complete." not in server.stderr
    server.proc.send_signal(signal.SIGTERM)
    assert server.wait_exit(5) != 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_during_streaming_exits_zero_promptly(serve: Launcher, sig: signal.Signals) -> None:
    server = serve(QWEN, "--sim-gpu", A100)
    server.wait_healthy()
    client = server.client()
    stream = client.completions.create(model=QWEN, prompt="a b", max_tokens=2000, stream=True)
    first = next(iter(stream))
    assert first.choices[0].text
    start = time.monotonic()
    server.proc.send_signal(sig)
    assert server.wait_exit(5) == 0
    assert time.monotonic() - start < 2.0
    out = server.stdout
    assert "[shutdown] API server: shutdown triggered" in out
    assert f"[shutdown] EngineCore: trigger received signal={sig.name}" in out
    assert "INFO:     Finished server process" in server.stderr


@pytest.mark.slow
def test_periodic_stats_line_only_while_busy(serve: Launcher) -> None:
    env = {"VLLM_LOG_STATS_INTERVAL": "0.3", "VLLM_DISABLE_LOG_LOGO": "1"}
    server = serve(QWEN, "--sim-gpu", A100, fault="slow=10", env=env)
    server.wait_healthy()
    assert f"vLLM server version 0.32.0, serving model {QWEN}" in server.stdout and "▄▄" not in server.stdout
    start = time.monotonic()
    server.client().completions.create(model=QWEN, prompt="a b c", max_tokens=20)
    assert time.monotonic() - start > 0.5  # slow=10: each ~4.5 ms step takes ~45 ms
    stats = re.compile(
        r"\[loggers\.py:335\] Engine 000: Avg prompt throughput: [\d.]+ tokens/s, Avg generation throughput: "
        r"[\d.]+ tokens/s, Running: \d+ reqs, Waiting: \d+ reqs, GPU KV cache usage: [\d.]+%, "
        r"Prefix cache hit rate: [\d.]+%$",
        re.M,
    )
    time.sleep(0.7)
    busy_lines = len(stats.findall(server.stdout))
    assert busy_lines >= 1 and "Running: 1 reqs" in server.stdout
    time.sleep(0.7)
    assert len(stats.findall(server.stdout)) == busy_lines  # idle: no more lines


# --- startup failures ---------------------------------------------------------------------------------


def _fails(serve: Launcher, *args: str, timeout: float = 30) -> tuple[int, str, str]:
    server = serve(*args)
    code = server.wait_exit(timeout)
    return code, server.stdout, server.stderr


def test_startup_failures_print_vllms_messages_and_status(serve: Launcher) -> None:
    code, out, err = _fails(serve, QWEN, "--sim-gpu", A100, "--gpu-memory-utilization", "1.5")
    assert code == 1
    assert "pydantic_core._pydantic_core.ValidationError: 1 validation error for CacheConfig" in err
    assert "Input should be less than or equal to 1 [type=less_than_equal, input_value=1.5" in err
    assert err.startswith("Traceback (most recent call last):") and "EngineCore" not in out

    code, out, err = _fails(serve, QWEN, "--sim-gpu", A100, "--max-num-seqs", "512", "--max-num-batched-tokens", "256")
    assert code == 1
    assert "Value error, max_num_batched_tokens (256) must be greater than or equal to max_num_seqs (512)." in err

    code, out, err = _fails(serve, "--no-such-flag", QWEN, "--sim-gpu", A100)
    assert code == 2 and "unrecognized arguments: --no-such-flag" in err and "usage:" in err and out == ""


def test_engine_and_worker_failures_have_vllms_error_blocks(serve: Launcher) -> None:
    code, out, err = _fails(
        serve,
        QWEN,
        "--sim-gpu",
        "cpu",
        "--block-size",
        "16",
        "--kv-cache-memory-bytes",
        "64M",
        "--max-model-len",
        "512",
    )
    assert code == 1
    both = out + err
    assert "ValueError: No common block size for 16 (CPU_ATTN: [MultipleOf(32)])." in both
    assert "RuntimeError: Worker failed with error 'No common block size for 16 (CPU_ATTN: [MultipleOf(32)]).'" in both
    assert re.search(
        r"^\(Worker pid=\d+\) ERROR .*\[multiproc_executor\.py:1063\] WorkerProc hit an exception\.$", out, re.M
    )
    assert re.search(r"^\(EngineCore pid=\d+\) ERROR .*\[core\.py:1510\] EngineCore failed to start\.$", out, re.M)
    assert "CPU KV cache size: " in out and "Explicitly set (0.06/" in out
    assert err.rstrip().endswith(
        "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {'EngineCore': 1}"
    )

    code, out, err = _fails(
        serve, "meta-llama/Llama-3.1-8B-Instruct", "--sim-gpu", "L4-24GB", "--max-model-len", "131072"
    )
    assert code == 1
    root = re.search(
        r"^\(EngineCore pid=\d+\) ERROR .* ValueError: To serve at least one request with the model's max seq len "
        r"\(131072\), \(16\.0 GiB KV cache is needed, which is larger than the available KV cache memory "
        r"\((?P<avail>[\d.]+) GiB\)\. Based on the available memory, the estimated maximum model length is "
        r"(?P<est>\d+)\.",
        out,
        re.M,
    )
    assert root, out
    assert f"Available KV cache memory: {root['avail']} GiB" in out
    assert "Engine core initialization failed" in err


def test_environment_errors_are_one_line_or_fail_fast(serve: Launcher) -> None:
    code, out, err = _fails(serve, QWEN)
    assert code == 1 and out == "" and err.count("\n") == 1 and "--sim-gpu is required" in err
    code, out, err = _fails(serve, QWEN, "--sim-gpu", "Z80")
    assert code == 1 and err.count("\n") == 1 and "unknown GPU 'Z80'" in err
    code, out, err = _fails(serve, "no/such-model", "--sim-gpu", A100)
    assert code == 1 and err.count("\n") == 1 and out == ""

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        server = serve(QWEN, "--sim-gpu", A100, port=busy.getsockname()[1])
        assert server.wait_exit(30) == 1
    assert server.stderr.rstrip().endswith("OSError: [Errno 98] Address already in use")
    assert "non-default args" in server.stdout and "Resolved architecture" not in server.stdout
