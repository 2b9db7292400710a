"""The trial runner against the real vLLM CPU build (marked ``vllm``; .ci/run installs it).

A tiny random model made by the test (no download) is served with ``--load-format dummy``. Each real
server start costs 20–40 s on a 2-core machine, so these tests are few and each checks a lot.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from vllm_slo_guard.guard import cpu_device, predict

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

BASE_ARGS = ["--load-format", "dummy", "--max-model-len", "512", "--enforce-eager", "--kv-cache-memory-bytes", "64M"]


def _bench(vllm_python: str, model: Path, log_dir: Path, *args: str) -> subprocess.Popen[str]:
    argv = [
        sys.executable, "-m", "vllm_slo_guard.cli", "bench", str(model), "--engine", "vllm", "--device", "cpu",
        "--vllm-cmd", f"{vllm_python} -m vllm.entrypoints.openai.api_server", "--log-dir", str(log_dir),
        "--startup-timeout", "240s", *args,
    ]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _vllm_servers(model: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if str(model) in cmd and "vllm" in cmd and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def test_bench_measures_a_real_server_and_the_guard_predicts_its_kv(
    vllm_python: str, tiny_model: Path, tmp_path: Path
) -> None:
    workload = ["--num-prompts", "24", "--request-rate", "12", "--random-input-len", "48", "--random-output-len", "12"]
    proc = _bench(vllm_python, tiny_model, tmp_path, *BASE_ARGS, *workload, "--slo", "e2el:p95=30s", "--json")
    out, err = proc.communicate(timeout=400)
    assert proc.returncode == 0, err
    data = json.loads(out)
    assert data["status"] == "ok" and data["crash_category"] is None
    assert data["completed"] == 24 and data["failed"] == 0
    assert data["total_output_tokens"] == 24 * 12 and data["total_input_tokens"] == 24 * 48
    assert 0 < data["mean_ttft_ms"] <= data["mean_e2el_ms"] and data["request_goodput"] > 0
    # KV capacity: vLLM's own figure (from /metrics and from its log line) vs the memory guard
    log = Path(data["log_path"]).read_text()
    logged = int(re.search(r"CPU KV cache size: ([\d,]+) tokens", log).group(1).replace(",", ""))
    assert data["kv_cache_tokens"] == logged
    verdict = predict(str(tiny_model), BASE_ARGS, cpu_device())
    assert verdict.ok and abs(verdict.kv_cache_tokens / logged - 1) <= 0.01
    assert _vllm_servers(tiny_model) == []


def test_block_size_16_on_cpu_is_config_invalid_with_vllms_message(
    vllm_python: str, tiny_model: Path, tmp_path: Path
) -> None:
    proc = _bench(vllm_python, tiny_model, tmp_path, *BASE_ARGS, "--block-size", "16", "--num-prompts", "2", "--json")
    out, err = proc.communicate(timeout=400)
    assert proc.returncode == 1, err
    data = json.loads(out)
    assert data["status"] == "crash" and data["crash_category"] == "config_invalid"
    assert "No common block size for 16" in data["root_cause"]
    # the guard predicted it without starting anything
    assert predict(str(tiny_model), [*BASE_ARGS, "--block-size", "16"], cpu_device()).category == "config_invalid"
    assert _vllm_servers(tiny_model) == []


def test_ctrl_c_during_a_real_trial_leaves_no_process(vllm_python: str, tiny_model: Path, tmp_path: Path) -> None:
    proc = _bench(vllm_python, tiny_model, tmp_path, *BASE_ARGS, "--num-prompts", "400", "--request-rate", "4")
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not _vllm_servers(tiny_model):
        time.sleep(0.5)
    assert _vllm_servers(tiny_model), "the trial server never started"
    time.sleep(8)  # well into startup (or measurement)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    deadline = time.monotonic() + 20
    while _vllm_servers(tiny_model) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _vllm_servers(tiny_model) == []
