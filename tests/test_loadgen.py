"""The load generator against the simulated server as a real process on loopback.

Each test starts ``python -m vllm_slo_guard.sim.server`` through :class:`ServerProcess` on a free
port; the ``sim`` fixture always stops it and asserts that no process of its group is left. The
hot path is also tested against scripted raw-socket servers (framing, keep-alive, connections the
server closed, error texts, timeouts, refused connections, SSE parsing).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from vllm_slo_guard.bench.metrics import RequestRecord
from vllm_slo_guard.bench.promscrape import ServerStats, parse_metrics, scrape
from vllm_slo_guard.bench.request import NO_TOKEN_ERROR
from vllm_slo_guard.bench.run import (
    STOP_DEADLINE,
    STOP_NO_MODEL,
    STOP_SERVER_DEAD,
    STOP_SHOULD_STOP,
    LoadGenConfig,
    LoadResult,
    run_load,
    run_load_sync,
)
from vllm_slo_guard.bench.workload import WorkloadSpec, arrival_offsets, build_requests
from vllm_slo_guard.engine.launcher import ServerProcess, free_port, group_members

MODEL = "Qwen/Qwen2-1.5B"
Start = Callable[..., ServerProcess]


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Start]:
    """Start simulated servers; on teardown stop each one and check its whole group is gone."""
    started: list[ServerProcess] = []

    def start(*args: str, fault: str | None = None) -> ServerProcess:
        port = free_port()
        argv = [sys.executable, "-m", "vllm_slo_guard.sim.server", MODEL, "--sim-gpu", "H200-141GB", *args]
        argv += ["--host", "127.0.0.1", "--port", str(port)]
        env = {"SLO_GUARD_SIM_FAULT": fault} if fault else None
        server = ServerProcess(argv, host="127.0.0.1", port=port, log_path=tmp_path / f"sim{len(started)}.log", env=env)
        started.append(server)
        server.start()
        ready = server.wait_ready(60)
        assert ready.ready, server.log_text()
        return server

    yield start
    for server in started:
        server.stop(grace_s=5)
        assert server.pid is not None
        assert group_members(server.pid) == [], f"processes of {server.argv[:4]} left behind"


def _workload(**kwargs: object) -> WorkloadSpec:
    base: dict[str, object] = {"num_prompts": 8, "random_input_len": 40, "random_output_len": 10, "seed": 3}
    base.update(kwargs)
    return WorkloadSpec(**base)  # type: ignore[arg-type]


def _check_timing(record: RequestRecord) -> None:
    assert record.success, record.error
    assert 0 < record.ttft_s <= record.e2el_s
    assert len(record.itl_s) == record.output_tokens - 1
    assert all(gap >= 0 for gap in record.itl_s)
    assert math.isclose(sum(record.itl_s), record.e2el_s - record.ttft_s, abs_tol=1e-6)


def _max_overlap(intervals: Sequence[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


@pytest.mark.parametrize("endpoint", ["completions", "chat"])
def test_records_have_exact_token_counts_and_consistent_timing(sim: Start, endpoint: str) -> None:
    server = sim()
    workload = _workload(random_range_ratio=0.5, num_warmups=0)
    result = run_load_sync(LoadGenConfig(server.base_url, endpoint=endpoint), workload)  # type: ignore[arg-type]
    requests = build_requests(workload)
    assert result.model == MODEL  # the first id of GET /v1/models
    assert not result.stopped_early and result.stop_reason is None
    assert len(result.records) == len(requests) == result.num_sent == result.num_planned
    for record, request in zip(result.records, requests, strict=True):
        _check_timing(record)
        assert record.prompt_len == request.prompt_len
        assert record.output_tokens == request.output_len
    assert result.duration_s >= max(r.send_s + r.e2el_s for r in result.records) - 1e-6
    metrics = result.metrics()
    assert metrics["completed"] == len(requests) and metrics["failed"] == 0
    assert metrics["total_output_tokens"] == sum(r.output_len for r in requests)


def test_poisson_arrivals_follow_the_schedule(sim: Start) -> None:
    server = sim()
    workload = _workload(num_prompts=40, request_rate=20.0, random_output_len=4)
    result = run_load_sync(LoadGenConfig(server.base_url, model=MODEL), workload)
    assert len(result.records) == 40 and all(r.success for r in result.records)
    offsets = arrival_offsets(workload, 40)
    late = [r.send_s - offset for r, offset in zip(result.records, offsets, strict=True)]
    assert min(late) >= 0 and max(late) < 0.05  # sent on time, never early
    slowest = max(r.e2el_s for r in result.records)
    assert 40 / 20.0 <= result.duration_s <= 40 / 20.0 + slowest + 0.05


def test_max_concurrency_caps_requests_in_flight(sim: Start) -> None:
    server = sim()
    workload = _workload(num_prompts=10, random_output_len=30, max_concurrency=2)
    running: list[int] = []

    async def sample(stop: asyncio.Event) -> None:
        async with httpx.AsyncClient() as client:
            while not stop.is_set():
                stats = ServerStats.from_text((await client.get(f"{server.base_url}/metrics")).text)
                running.append(stats.running or 0)
                await asyncio.sleep(0.005)

    async def main() -> LoadResult:
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample(stop))
        try:
            return await run_load(LoadGenConfig(server.base_url, model=MODEL), workload)
        finally:
            stop.set()
            await sampler

    result = asyncio.run(main())
    assert len(result.records) == 10 and all(r.success for r in result.records)
    assert _max_overlap([(r.send_s, r.send_s + r.e2el_s) for r in result.records]) == 2
    assert running and max(running) <= 2


def test_warmups_are_sent_but_not_recorded(sim: Start) -> None:
    server = sim()
    result = run_load_sync(LoadGenConfig(server.base_url, model=MODEL), _workload(num_prompts=5, num_warmups=3))
    assert result.num_warmups == 3 and len(result.records) == 5
    text = scrape(server.base_url)
    assert text is not None
    served = sum(s.value for s in parse_metrics(text)["vllm:request_success_total"])
    assert served == 8


def test_a_prompt_too_long_fails_alone_with_the_servers_message(sim: Start) -> None:
    server = sim("--max-model-len", "256")
    workload = _workload(num_prompts=12, random_input_len=200, random_range_ratio=0.5, random_output_len=16)
    too_long = [r.prompt_len + r.output_len > 256 for r in build_requests(workload)]
    assert any(too_long) and not all(too_long)
    result = run_load_sync(LoadGenConfig(server.base_url, model=MODEL), workload)
    assert not result.stopped_early
    for record, fails in zip(result.records, too_long, strict=True):
        if fails:
            assert not record.success
            assert record.error.startswith("HTTP 400: This model's maximum context length is 256 tokens.")
        else:
            _check_timing(record)
    assert result.metrics()["failed"] == sum(too_long)


def test_a_killed_server_stops_the_run_quickly_and_keeps_the_records(sim: Start) -> None:
    server = sim()
    assert server.pid is not None
    killed_at: list[float] = []

    def kill_after_three(records: Sequence[RequestRecord]) -> bool:
        if len(records) == 3 and not killed_at:
            os.killpg(server.pid, signal.SIGKILL)  # type: ignore[arg-type]
            killed_at.append(time.perf_counter())
        return False

    workload = _workload(num_prompts=400, request_rate=100.0, max_concurrency=4, random_output_len=20)
    result = run_load_sync(LoadGenConfig(server.base_url, model=MODEL), workload, should_stop=kill_after_three)
    assert time.perf_counter() - killed_at[0] < 3.0
    assert result.stopped_early and result.stop_reason == STOP_SERVER_DEAD
    assert "Connection error" in result.detail
    assert sum(r.success for r in result.records) >= 3
    assert sum(not r.success for r in result.records) >= 5
    assert result.num_sent < 400
    assert result.num_sent == len(result.records) + result.num_cancelled


def test_engine_death_with_http_500s_is_a_dead_server(sim: Start) -> None:
    server = sim(fault="die_after=3")
    workload = _workload(num_prompts=200, request_rate=100.0, max_concurrency=4)
    started = time.perf_counter()
    result = run_load_sync(LoadGenConfig(server.base_url, model=MODEL), workload)
    assert time.perf_counter() - started < 5.0
    assert result.stop_reason == STOP_SERVER_DEAD
    assert sum(r.success for r in result.records) >= 3
    errors = [r.error for r in result.records if not r.success]
    assert len(errors) >= 5 and all(e.startswith(("HTTP 500: ", "Stream error 500: ")) for e in errors)


def test_a_stalled_server_gives_timed_out_records_not_a_dead_server(sim: Start) -> None:
    server = sim(fault="stall_after=2")
    workload = _workload(num_prompts=8, max_concurrency=2, random_output_len=5)
    config = LoadGenConfig(server.base_url, model=MODEL, request_timeout_s=0.3, dead_after_failures=2)
    started = time.perf_counter()
    result = run_load_sync(config, workload)
    assert time.perf_counter() - started < 0.3 * 8 / 2 + 1.0
    assert not result.stopped_early  # timeouts say nothing about the server being dead
    assert sum(r.success for r in result.records) == 2
    assert [r.error for r in result.records if not r.success] == ["Request timed out after 0.3 s"] * 6


def test_deadline_stops_sending_and_keeps_finished_records(sim: Start) -> None:
    server = sim()
    workload = _workload(num_prompts=100, request_rate=10.0, random_output_len=4)
    started = time.perf_counter()
    result = run_load_sync(LoadGenConfig(server.base_url, model=MODEL), workload, deadline_s=1.0)
    assert time.perf_counter() - started < 2.0
    assert result.stopped_early and result.stop_reason == STOP_DEADLINE
    assert 5 <= len(result.records) <= 11 and all(r.success for r in result.records)
    assert result.num_sent <= 12 and result.num_sent == len(result.records) + result.num_cancelled
    assert result.metrics()["completed"] == len(result.records)


def test_should_stop_ends_the_run(sim: Start) -> None:
    server = sim()
    workload = _workload(num_prompts=200, request_rate=50.0, random_output_len=4)
    result = run_load_sync(
        LoadGenConfig(server.base_url, model=MODEL), workload, should_stop=lambda records: len(records) >= 3
    )
    assert result.stop_reason == STOP_SHOULD_STOP
    assert 3 <= len(result.records) <= 5 and result.num_sent < 20


def test_metric_keys_match_vllm_bench_serve(sim: Start) -> None:
    server = sim()
    result = run_load_sync(LoadGenConfig(server.base_url, model=MODEL), _workload(num_prompts=4))
    metrics = result.metrics(percentiles=(50, 99), goodput_thresholds_s={"ttft": 10.0, "e2el": 10.0})
    # the keys of `vllm bench serve --save-result` (the result dict of vllm/benchmarks/serve.py)
    vllm_keys = {"duration", "completed", "failed", "total_input_tokens", "total_output_tokens"}
    vllm_keys |= {"request_throughput", "request_goodput", "output_throughput", "total_token_throughput"}
    for metric in ("ttft", "tpot", "itl", "e2el"):
        vllm_keys |= {f"{stat}_{metric}_ms" for stat in ("mean", "median", "std", "p50", "p99")}
    assert vllm_keys <= set(metrics)
    assert metrics["request_goodput"] == metrics["request_throughput"]


def test_no_server_means_no_model_or_a_dead_server_fast() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    started = time.perf_counter()
    result = run_load_sync(LoadGenConfig(url), _workload())
    assert result.stop_reason == STOP_NO_MODEL and "Connection error" in result.detail
    result = run_load_sync(LoadGenConfig(url, model=MODEL), _workload(num_prompts=50, max_concurrency=1))
    assert result.stop_reason == STOP_SERVER_DEAD
    assert len(result.records) == 5 and not any(r.success for r in result.records)
    assert time.perf_counter() - started < 3.0


# --- the HTTP client against scripted servers: framing, keep-alive, closed connections ----------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await reader.readexactly(length)


async def _with_server(handler: Handler, body: Callable[[str], Awaitable[None]]) -> None:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await body(f"http://127.0.0.1:{port}")
    finally:
        server.close()
        await server.wait_closed()


def _chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
USAGE = b'data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3}}\n\ndata: [DONE]\n\n'


def _run_scripted(handler: Handler, workload: WorkloadSpec, **config: object) -> LoadResult:
    results: list[LoadResult] = []

    async def body_fn(url: str) -> None:
        results.append(await run_load(LoadGenConfig(url, **config), workload))  # type: ignore[arg-type]

    asyncio.run(_with_server(handler, body_fn))
    return results[0]


def test_bodies_split_anywhere_are_decoded_and_one_connection_is_kept_alive() -> None:
    connections: list[int] = []
    tokens = [b'data: {"choices":[{"index":0,"text":"%d"}]}\n\n' % i for i in range(3)]
    answer = SSE_HEAD + _chunked(*tokens, b": " + b"x" * 300 + b"\n\n", USAGE)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        while not reader.at_eof():
            try:
                await _read_request(reader)
            except asyncio.IncompleteReadError:
                break
            for i in range(0, len(answer), 7):  # split head, sizes, CRLFs and data at odd places
                writer.write(answer[i : i + 7])
                await writer.drain()
                await asyncio.sleep(0)
        writer.close()

    result = _run_scripted(handler, _workload(num_prompts=4, max_concurrency=1), model="m")
    assert [(r.success, r.prompt_len, r.output_tokens, len(r.itl_s)) for r in result.records] == [(True, 7, 3, 2)] * 4
    assert len(connections) == 1


def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    served: list[int] = []
    answer = SSE_HEAD + _chunked(b'data: {"choices":[{"index":0,"text":"a"}]}\n\n', USAGE)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        served.append(1)
        writer.write(answer)
        await writer.drain()
        await asyncio.sleep(0.05)  # close only after the client took the connection back
        writer.close()

    # constant gaps of 0.2 s: each request finds its predecessor's connection closed by the server
    workload = _workload(num_prompts=3, request_rate=5.0, burstiness=math.inf, max_concurrency=1)
    result = _run_scripted(handler, workload, model="m")
    assert [r.success for r in result.records] == [True] * 3, [r.error for r in result.records]
    assert len(served) == 3


def test_a_stream_without_content_is_a_failed_record() -> None:
    async def empty_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        usage = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":0}}\n\ndata: [DONE]\n\n'
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(_chunked(b'data: {"choices":[{"index":0,"logprobs":null}]}\n\n', usage))
        await writer.drain()
        writer.close()

    async def body_fn(url: str) -> None:
        result = await run_load(LoadGenConfig(url, model="m"), _workload(num_prompts=2, max_concurrency=1))
        assert [r.error for r in result.records] == [NO_TOKEN_ERROR, NO_TOKEN_ERROR]
        assert not result.stopped_early

    asyncio.run(_with_server(empty_stream, body_fn))


# --- the hot path on scripted servers: the SDK's headers, error texts, SSE parsing -------------------


def _answering(answer: bytes, seen: list[bytes] | None = None, *, close: bool = True) -> Handler:
    """A server that answers every request on a connection with ``answer`` (and records the requests)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                request = await _read_request(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            if seen is not None:
                seen.append(request)
            writer.write(answer)
            await writer.drain()
            if close:
                break
        writer.close()

    return handler


def _error_answer(status: bytes, body: bytes, content_type: bytes = b"application/json") -> bytes:
    head = b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n" % (status, content_type, len(body))
    return head + body


def test_streaming_requests_carry_the_sdks_headers_and_vllms_body() -> None:
    seen: list[bytes] = []
    usage = b'data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":1}}\n\ndata: [DONE]\n\n'
    answer = SSE_HEAD + _chunked(b'data: {"choices":[{"index":0,"text":"hi"}]}\n\n', usage)
    workload = _workload(num_prompts=3, max_concurrency=1)
    result = _run_scripted(_answering(answer, seen, close=False), workload, model="m", api_key="sk-test")
    assert [r.success for r in result.records] == [True] * 3
    assert len(seen) == 3
    for raw, request in zip(seen, build_requests(workload), strict=True):
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        assert lines[0] == "POST /v1/completions HTTP/1.1"
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        assert headers["authorization"] == "Bearer sk-test"
        assert headers["user-agent"].startswith("AsyncOpenAI/Python")
        assert headers["x-stainless-lang"] == "python"
        assert headers["content-type"] == "application/json"
        assert headers["host"].startswith("127.0.0.1:")
        assert int(headers["content-length"]) == len(body)
        payload = json.loads(body)
        assert payload["model"] == "m" and payload["stream"] is True
        assert payload["prompt"] == list(request.prompt_token_ids)
        assert payload["max_tokens"] == request.output_len
        assert payload["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("answer", "error", "dead"),
    [
        (
            _error_answer(b"400 Bad Request", b'{"error":{"message":"prompt too long","type":"BadRequestError"}}'),
            "HTTP 400: prompt too long",
            False,
        ),
        (_error_answer(b"404 Not Found", b'{"message":"no such model"}'), "HTTP 404: no such model", False),
        (_error_answer(b"502 Bad Gateway", b"upstream down\n", b"text/plain"), "HTTP 502: upstream down", True),
        (_error_answer(b"503 Service Unavailable", b""), "HTTP 503: Service Unavailable", True),
        (
            SSE_HEAD + _chunked(b'data: {"error":{"message":"engine dead","code":500}}\n\n', b"data: [DONE]\n\n"),
            "Stream error 500: engine dead",
            True,
        ),
        (SSE_HEAD + b"5\r\nhel", "Connection error: ", True),  # the server closes mid-body
    ],
)
def test_hot_path_errors_become_the_same_record_texts(answer: bytes, error: str, dead: bool) -> None:
    workload = _workload(num_prompts=6, max_concurrency=1)
    result = _run_scripted(_answering(answer), workload, model="m", dead_after_failures=3)
    errors = [r.error for r in result.records]
    assert errors and all(e.startswith(error) for e in errors), errors
    if error.endswith(": "):  # the transport's own explanation follows
        assert all(len(e) > len(error) for e in errors)
    else:
        assert set(errors) == {error}
    assert result.stopped_early is dead
    assert (result.stop_reason == STOP_SERVER_DEAD) is dead
    assert len(errors) == (3 if dead else 6)


def test_hot_path_timeouts_and_refused_connections() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(2)
        writer.close()

    result = _run_scripted(silent, _workload(num_prompts=2, max_concurrency=2), model="m", request_timeout_s=0.2)
    assert [r.error for r in result.records] == ["Request timed out after 0.2 s"] * 2
    assert not result.stopped_early
    url = f"http://127.0.0.1:{free_port()}"
    result = run_load_sync(LoadGenConfig(url, model="m", dead_after_failures=2), _workload(max_concurrency=1))
    assert result.stop_reason == STOP_SERVER_DEAD
    assert all(r.error.startswith("Connection error: cannot connect") for r in result.records)


CONTENT_CASES: list[tuple[str, bytes, bool]] = [
    ("completions", b'data: {"choices":[{"index":0,"text":"a"}]}', True),
    ("completions", b'data: {"choices":[{"index":0,"text":""}]}', True),  # a step whose tokens are no text yet
    ("completions", b'data: {"choices":[{"index":0,"text":"\\""}]}', True),  # an escaped quote
    ("completions", b'data: {"choices":[{"index":0,"text":"\\"usage\\": no"}]}', True),
    ("completions", b'data: {"choices":[{"index":0,"text":"usage"}]}', True),  # parsed: "usage" in a value
    ("completions", b'data: {"choices": [{"index": 0, "text": "spaced"}]}', True),  # parsed: no fast key
    ("completions", b'data: {"choices": [{"index": 0, "text": ""}]}', True),
    ("completions", b'data:{"choices":[{"index":0,"text":"no space"}]}\r', True),  # CRLF, no space after data:
    ("completions", b'data: {"choices":[]}', False),
    ("chat", b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}', False),
    ("chat", b'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}', True),
    ("chat", b'data: {"choices":[{"index":0,"delta":{"content":""}}]}', True),  # a token that is no text yet
    ("chat", b'data: {"choices":[{"index":0,"delta":{"content":null,"tool_calls":[]}}]}', False),
    ("chat", b'data: {"choices":[{"index":0,"delta":{"reasoning_content":"think"}}]}', False),
    ("chat", b'data: {"choices":[{"index":0,"delta":{"reasoning_content":"t","content":"x"}}]}', True),
    ("chat", b'data: {"choices":[{"index":0,"text":"completions key"}]}', False),
]


@pytest.mark.parametrize("endpoint", ["completions", "chat"])
def test_sse_parsing_counts_content_chunks_like_json_loads_however_the_stream_is_split(endpoint: str) -> None:
    cases = [(line, content) for kind, line, content in CONTENT_CASES if kind == endpoint]
    events = [b": ping", b"event: message"] + [line for line, _ in cases]
    # token counts come from usage, which may ride along a content chunk (continuous usage stats)
    last = b'"choices":[{"index":0,"text":"z"}]' if endpoint == "completions" else b'"choices":[]'
    events.append(b'data: {%s,"usage":{"prompt_tokens":5,"completion_tokens":42}}' % last)
    events.append(b"data: [DONE]")
    stream = b"\n\n".join(events) + b"\n\n"
    expected = sum(content for _, content in cases) + (endpoint == "completions")
    for piece in (len(stream), 1, 7, 64):
        pieces = [stream[i : i + piece] for i in range(0, len(stream), piece)]
        answer = SSE_HEAD + _chunked(*pieces)
        workload = _workload(num_prompts=2, max_concurrency=1)
        result = _run_scripted(_answering(answer), workload, model="m", endpoint=endpoint)
        for record in result.records:
            assert record.success, record.error
            assert len(record.itl_s) == expected - 1, piece
            assert (record.prompt_len, record.output_tokens) == (5, 42)
