"""`vllm-tune simulate` as an operator runs it: a real subprocess, its output and exit status."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from vllm_slo_guard.errors import InputError
from vllm_slo_guard.units import parse_duration, parse_size


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vllm_slo_guard.cli", "simulate", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_prints_vllm_bench_serve_figures() -> None:
    proc = _run(
        "Qwen/Qwen2-1.5B",
        "--gpu",
        "A100-40GB",
        "--num-prompts",
        "50",
        "--request-rate",
        "5",
        "--random-input-len",
        "256",
        "--random-output-len",
        "32",
        "--max-num-seqs",
        "8",
    )
    assert proc.returncode == 0, proc.stderr
    assert "============ Serving Benchmark Result ============" in proc.stdout
    assert "Successful requests:                     50" in proc.stdout
    assert "Mean TTFT (ms):" in proc.stdout and "P99 E2EL (ms):" in proc.stdout


def test_json_has_vllm_result_keys() -> None:
    proc = _run("Qwen/Qwen2-1.5B", "--gpu", "A100-40GB", "--num-prompts", "20", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["status"] == "ok" and data["completed"] == 20 and data["kv_cache_tokens"] > 0
    for metric in ("ttft", "tpot", "itl", "e2el"):
        for stat in ("mean", "median", "p90", "p95", "p99"):
            assert data[f"{stat}_{metric}_ms"] >= 0
    assert data["request_throughput"] > 0 and data["output_throughput"] > 0


def test_crash_reports_vllm_message_and_category() -> None:
    proc = _run("meta-llama/Llama-3.1-8B-Instruct", "--gpu", "L4-24GB", "--max-model-len", "131072", "--json")
    assert proc.returncode == 0
    data = json.loads(proc.stdout)
    assert data["status"] == "crash" and data["crash_category"] == "oom"
    assert "To serve at least one request with the model's max seq len (131072)" in data["message"]
    text = _run("meta-llama/Llama-3.1-8B-Instruct", "--gpu", "L4-24GB", "--max-model-len", "131072")
    assert text.returncode == 1 and "estimated maximum model length" in text.stderr


def test_unknown_vllm_flag_is_refused_like_vllm() -> None:
    proc = _run("Qwen/Qwen2-1.5B", "--gpu", "A100-40GB", "--swap-space", "4")
    assert proc.returncode == 1
    assert "unrecognized arguments: --swap-space 4" in proc.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["Nope/Model", "--gpu", "A100-40GB"], "model 'Nope/Model' not found"),
        (["Qwen/Qwen2-1.5B", "--gpu", "Z100"], "unknown GPU 'Z100'"),
        (["Qwen/Qwen2-1.5B", "--gpu", "A100-40GB", "--request-rate", "fast"], "is not a number"),
        (["Qwen/Qwen2-1.5B", "--gpu", "A100-40GB", "--num-prompts", "0"], "num_prompts"),
        (["Qwen/Qwen2-1.5B", "--gpu", "A100-40GB", "--dataset-path", "/nonexistent.json"], "nonexistent.json"),
    ],
)
def test_bad_input_is_one_clear_line(args: list[str], needle: str) -> None:
    proc = _run(*args)
    assert proc.returncode != 0
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.strip()]) <= 3


def test_local_model_folder(tmp_path) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "architectures": ["LlamaForCausalLM"],
                "model_type": "llama",
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "num_key_value_heads": 2,
                "head_dim": 32,
                "vocab_size": 347,
                "max_position_embeddings": 2048,
                "torch_dtype": "bfloat16",
            }
        )
    )
    proc = _run(
        str(tmp_path),
        "--gpu",
        "cpu",
        "--max-model-len",
        "512",
        "--kv-cache-memory-bytes",
        "64M",
        "--num-prompts",
        "10",
        "--random-input-len",
        "64",
        "--random-output-len",
        "16",
        "--json",
    )
    data = json.loads(proc.stdout)
    assert data["status"] == "ok" and data["kv_cache_tokens"] == 131072 and data["max_concurrency"] == 256.0


def test_units() -> None:
    assert parse_duration("200ms") == pytest.approx(0.2)
    assert parse_duration("0.2s") == pytest.approx(0.2)
    assert parse_duration("30m") == 1800
    assert parse_size("8G") == 8 * 2**30 and parse_size("8GiB") == 8 * 2**30 and parse_size("1k") == 1000
    for bad in ("fast", "-1s"):
        with pytest.raises(InputError):
            parse_duration(bad)
    with pytest.raises(InputError, match="Decimals are not allowed"):
        parse_size("1.5K")
