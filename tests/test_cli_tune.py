"""`vllm-tune tune` and `vllm-tune export` as an operator runs them: real subprocesses, real studies."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import psutil
import pytest

from vllm_slo_guard.search.loop import KILL_AFTER_ENV
from vllm_slo_guard.search.registry import SEARCHERS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

QWEN = ["Qwen/Qwen2-1.5B", "--engine", "sim", "--gpu", "A100-40GB"]


def vllm_tune(
    *args: str, cache: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "XDG_CACHE_HOME": str(cache), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "vllm_slo_guard.cli", *args],
        capture_output=True, text=True, timeout=timeout, env=full_env, cwd=cache.parent,
    )  # fmt: skip


def table_rows(stdout: str) -> list[list[str]]:
    """The cells of the final table's rows (rich's box drawing, one line per row)."""
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in stdout.splitlines() if line.startswith("│")]


def study_configs(cache: Path, name: str) -> list[dict[str, object]]:
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{cache / 'vllm-tune' / 'studies.db'}")
    return [t.user_attrs["outcome"]["config"] for t in study.trials if t.user_attrs["phase"] != "confirm"]


def test_tune_on_the_simulator_end_to_end(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    out = tmp_path / "out.toml"
    started = time.monotonic()
    proc = vllm_tune("tune", *QWEN, "--slo-p95", "200ms", "--budget", "15", "--seed", "0", "-o", str(out), cache=cache)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert elapsed < 30, f"took {elapsed:.1f} s"
    assert "Traceback" not in proc.stderr
    assert "maximize the request rate subject to ttft:p95=200ms" in proc.stdout  # no rate given: capacity
    assert len(re.findall(r"^trial +\d+ \[\d+/15\]", proc.stdout, flags=re.M)) >= 15
    doc = tomllib.loads(out.read_text())
    winner = doc["winner"]
    assert winner["command"].startswith("vllm serve Qwen/Qwen2-1.5B ")
    assert shlex.split(winner["command"])[3:] == winner["argv"]
    assert winner["metrics"]["p95_ttft_ms"] <= 200
    assert winner["capacity_req_per_s"] > 0 and winner["confirmed"] is True
    assert doc["objective"] == "capacity" and doc["searcher"] == "slo-guard" and doc["seed"] == 0

    # every export works from the stored study alone
    study = doc["study"]
    exported = vllm_tune("export", study, "--format", "toml", cache=cache)
    assert exported.returncode == 0, exported.stderr
    assert tomllib.loads(exported.stdout) == doc
    yaml = vllm_tune("export", study, "--format", "yaml", "-o", str(tmp_path / "w.yaml"), cache=cache)
    assert yaml.returncode == 0, yaml.stderr
    lines = (tmp_path / "w.yaml").read_text().splitlines()
    assert "model: Qwen/Qwen2-1.5B" in lines and not any(line.endswith(": false") for line in lines)
    assert f"max-num-seqs: {winner['engine_args']['max_num_seqs']}" in lines
    args = vllm_tune("export", study, "--format", "args", cache=cache)
    assert args.returncode == 0 and shlex.split(args.stdout) == winner["argv"]
    missing = vllm_tune("export", "no-such-study", cache=cache)
    assert missing.returncode == 1 and missing.stderr.startswith("Error: no study named 'no-such-study'")


def test_crashes_and_guarded_trials_show_their_categories(tmp_path: Path) -> None:
    proc = vllm_tune(
        "tune", "meta-llama/Llama-3.1-8B-Instruct", "--engine", "sim", "--gpu", "L4-24GB", "--max-model-len", "8192",
        "--slo-p95", "500ms", "--request-rate", "4", "--budget", "20", "--seed", "1", "--searcher", "random",
        cache=tmp_path / "cache",
    )  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr
    assert "Traceback" not in proc.stderr
    rows = table_rows(proc.stdout)
    assert len(rows) >= 20
    failed = [(row[2], row[3]) for row in rows if row[2] in ("crash", "guarded")]
    assert ("guarded", "oom") in failed
    assert all(category for _, category in failed)  # every failure names its category
    assert re.search(r"^guarded \(never launched\): \d+ \(oom \d+", proc.stdout, flags=re.M)
    assert "minimize ttft p95" in proc.stdout  # a rate was given: latency
    # the pinned flag is forwarded to every trial and never tuned
    assert all("--max-model-len 8192" not in row[6] and "len=" not in row[6] for row in rows)


def test_server_mode_runs_real_trial_servers_and_stops_them(tmp_path: Path) -> None:
    proc = vllm_tune(
        "tune", *QWEN, "--sim-mode", "server", "--slo-p95", "200ms", "--num-prompts", "20",
        "--random-input-len", "64", "--random-output-len", "16", "--request-rate", "10", "--budget", "3",
        "-o", str(tmp_path / "out.toml"), cache=tmp_path / "cache",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = tomllib.loads((tmp_path / "out.toml").read_text())
    assert doc["objective"] == "latency" and doc["winner"]["metrics"]["completed"] == 40  # confirmation: 2×
    logs = list((tmp_path / "cache" / "vllm-tune" / "logs").rglob("*.log"))
    assert len(logs) >= 3  # one per launched server (the leak check after each test finds none alive)


def test_sigkill_then_rerun_equals_one_uninterrupted_run(tmp_path: Path) -> None:
    args = [
        "tune", *QWEN, "--slo-p95", "200ms", "--budget", "10", "--seed", "3", "--request-rate", "20",
        "--num-prompts", "100",
    ]  # fmt: skip
    whole = vllm_tune(*args, "-o", str(tmp_path / "whole.toml"), cache=tmp_path / "c1")
    assert whole.returncode in (0, 1), whole.stderr

    cache = tmp_path / "c2"
    killed = vllm_tune(*args, "-o", str(tmp_path / "resumed.toml"), cache=cache, env={KILL_AFTER_ENV: "4"})
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "resumed.toml").exists()
    study = tomllib.loads((tmp_path / "whole.toml").read_text())["study"]
    assert len(study_configs(cache, study)) == 4

    resumed = vllm_tune(*args, "-o", str(tmp_path / "resumed.toml"), cache=cache)
    assert resumed.returncode == whole.returncode, resumed.stderr
    assert "resuming after 4 stored trials" in resumed.stdout
    numbers = [int(n) for n in re.findall(r"^trial +(\d+) ", resumed.stdout, flags=re.M)]
    assert numbers == list(range(4, numbers[-1] + 1)) and numbers[-1] >= 9  # exactly the remaining trials
    assert (tmp_path / "resumed.toml").read_text() == (tmp_path / "whole.toml").read_text()
    assert study_configs(cache, study) == study_configs(tmp_path / "c1", study)

    again = vllm_tune(*args, cache=cache)  # all stored, confirmation included: nothing runs
    assert not re.search(r"^(trial|confirm) ", again.stdout, flags=re.M)


def test_usage_and_input_errors_are_one_line(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    no_slo = vllm_tune("tune", *QWEN, cache=cache)
    assert no_slo.returncode == 2 and "at least one SLO is required" in no_slo.stderr
    bad_slo = vllm_tune("tune", *QWEN, "--slo", "ttft:p95=fast", cache=cache)
    assert bad_slo.returncode == 1
    expected = "Error: invalid SLO 'ttft:p95=fast': 'fast' is not a duration such as 200ms"
    assert bad_slo.stderr.strip().splitlines() == [expected]
    no_gpu = vllm_tune("tune", "Qwen/Qwen2-1.5B", "--engine", "sim", "--slo-p95", "200ms", cache=cache)
    assert no_gpu.returncode == 2 and "--engine sim needs --gpu" in no_gpu.stderr
    bad_knob = vllm_tune("tune", *QWEN, "--slo-p95", "200ms", "--tune", "max_num_seq=1:8", cache=cache)
    assert bad_knob.returncode == 1 and "did you mean max_num_seqs?" in bad_knob.stderr
    for proc in (no_slo, bad_slo, no_gpu, bad_knob):
        assert "Traceback" not in proc.stderr


def test_a_changed_spec_under_the_same_name_is_one_line(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    base = ["tune", *QWEN, "--request-rate", "8", "--num-prompts", "40", "--budget", "1", "--study-name", "mine"]
    first = vllm_tune(*base, "--slo-p95", "200ms", "--quiet", cache=cache)
    assert first.returncode in (0, 1) and first.stdout == ""  # --quiet prints nothing
    second = vllm_tune(*base, "--slo-p95", "300ms", cache=cache)
    assert second.returncode == 1
    assert second.stderr.strip().splitlines() == [
        "Error: study 'mine' was made by a different tuning spec (differs in: slos); use the original settings "
        "to resume it, or another --study-name"
    ]


def test_an_environment_failure_aborts_with_one_line(tmp_path: Path) -> None:
    broken = f'{sys.executable} -c "raise SystemExit(\\"ModuleNotFoundError: No module named \'vllm\'\\")"'
    proc = vllm_tune(
        "tune", "Qwen/Qwen2-1.5B", "--engine", "vllm", "--device", "cpu", "--vllm-cmd", broken, "--slo-p95", "200ms",
        "--request-rate", "1", "--num-prompts", "4", "--budget", "3", "--fix", "block_size=128",
        "--fix", "kv_cache_memory_bytes=1GiB", "--fix", "max_num_seqs=8", "--fix", "max_num_batched_tokens=2048",
        cache=tmp_path / "cache",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("Error: trial ") and "no configuration can fix" in line and "vllm" in line


def test_cli_offers_every_registered_searcher() -> None:
    from vllm_slo_guard.cli import SEARCHERS as CLI_SEARCHERS

    assert set(CLI_SEARCHERS) == set(SEARCHERS)


def test_sigterm_stops_the_trial_server_and_keeps_the_study(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    args = [
        sys.executable, "-m", "vllm_slo_guard.cli", "tune", *QWEN, "--sim-mode", "server", "--slo-p95", "200ms",
        "--num-prompts", "400", "--random-input-len", "64", "--random-output-len", "16", "--request-rate", "10",
        "--budget", "3",
    ]  # fmt: skip
    proc = subprocess.Popen(
        args,
        env={**os.environ, "XDG_CACHE_HOME": str(cache)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    servers: list[psutil.Process] = []
    deadline = time.monotonic() + 60
    while not servers and time.monotonic() < deadline:
        time.sleep(0.2)
        servers = [p for p in psutil.Process(proc.pid).children(recursive=True) if _is_sim_server(p)]
    assert servers, "no trial server was started"
    time.sleep(2.0)  # inside the measurement
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    _, alive = psutil.wait_procs(servers, timeout=10)
    assert not alive, f"trial servers left running: {[p.pid for p in alive]}"


def _is_sim_server(process: psutil.Process) -> bool:
    try:
        return "vllm_slo_guard.sim.server" in process.cmdline()
    except psutil.Error:
        return False


@pytest.mark.vllm
@pytest.mark.slow
def test_tune_the_real_vllm_on_cpu(vllm_python: str, tiny_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "tuned.toml"
    proc = vllm_tune(
        "tune", str(tiny_model), "--engine", "vllm", "--device", "cpu",
        "--vllm-cmd", f"{vllm_python} -m vllm.entrypoints.openai.api_server", "--slo", "e2el:p95=30s",
        "--num-prompts", "16", "--request-rate", "8", "--random-input-len", "48", "--random-output-len", "12",
        "--budget", "2", "--confirm-top-k", "1", "--searcher", "random", "--startup-timeout", "240s",
        "--load-format", "dummy", "--max-model-len", "512", "--enforce-eager", "--kv-cache-memory-bytes", "64M",
        "-o", str(out), cache=tmp_path / "cache", timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = tomllib.loads(out.read_text())
    winner = doc["winner"]
    assert winner["confirmed"] is True and winner["metrics"]["completed"] == 32 and winner["metrics"]["failed"] == 0
    assert winner["argv"][:7] == ["--load-format", "dummy", "--max-model-len", "512", "--enforce-eager",
                                  "--kv-cache-memory-bytes", "64M"]  # fmt: skip
    assert winner["metrics"]["kv_cache_tokens"] > 0
    assert doc["hardware"]["kind"] == "cpu" and doc["vllm_version"].startswith("unknown")
