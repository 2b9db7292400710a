"""One trial end to end against the simulated server: figures, or the right crash category.

Each test checks that the trial stopped its server: no child process left (the autouse fixture) and
the trial's port free again.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from vllm_slo_guard.bench.workload import WorkloadSpec
from vllm_slo_guard.engine.launcher import port_is_free
from vllm_slo_guard.engine.sim import SimEngine
from vllm_slo_guard.sim import evaluator
from vllm_slo_guard.spec import Timeouts, parse_slo
from vllm_slo_guard.trial import TrialResult, run_trial

QWEN = "Qwen/Qwen2-1.5B"
SMALL = WorkloadSpec(num_prompts=12, request_rate=30.0, random_input_len=64, random_output_len=16)


def _port_of(result: TrialResult) -> int:
    return int(Path(result.log_path or "").stem.rsplit("-", 1)[-1])


def _trial(tmp_path: Path, args: list[str], *, fault: str | None = None, **kwargs) -> TrialResult:
    engine = SimEngine(gpu="A100-40GB", fault=fault)
    result = run_trial(engine, QWEN, args, kwargs.pop("workload", SMALL), log_dir=tmp_path, **kwargs)
    assert port_is_free("127.0.0.1", _port_of(result))
    return result


def test_good_config_yields_metrics_close_to_the_in_process_simulator(tmp_path: Path) -> None:
    result = _trial(tmp_path, ["--max-num-seqs", "8"], slos=[parse_slo("e2el:p95=5s")])
    assert result.status == "ok" and result.crash is None
    assert result.metrics["completed"] == 12 and result.metrics["total_output_tokens"] == 12 * 16
    assert result.violation is not None and result.violation < 0
    assert (
        result.stats is not None
        and result.stats.num_gpu_blocks
        == evaluator.start_server([QWEN, "--max-num-seqs", "8"], "A100-40GB").plan.num_blocks
    )
    predicted = evaluator.simulate([QWEN, "--max-num-seqs", "8"], SMALL, "A100-40GB").metrics["mean_tpot_ms"]
    assert abs(result.metrics["mean_tpot_ms"] / predicted - 1) < 0.25


def test_slo_miss_is_a_violation_not_a_crash(tmp_path: Path) -> None:
    result = _trial(tmp_path, ["--enforce-eager"], slos=[parse_slo("tpot:p95=5ms")])
    assert result.status == "slo_violation" and result.crash is None
    assert result.violation is not None and result.violation > 1  # eager TPOT ≈ 20 ms


def test_memory_model_rejection_is_oom_with_vllms_message(tmp_path: Path) -> None:
    engine = SimEngine(gpu="L4-24GB")
    result = run_trial(engine, "meta-llama/Llama-3.1-8B-Instruct", ["--max-model-len", "131072"], SMALL,
                       log_dir=tmp_path)  # fmt: skip
    assert result.status == "crash" and result.crash_category == "oom"
    assert result.crash is not None
    assert "To serve at least one request with the model's max seq len (131072)" in result.crash.root_cause
    assert "max-model-len" in result.crash.suggestion


def test_refused_arguments_are_config_invalid(tmp_path: Path) -> None:
    result = _trial(tmp_path, ["--max-num-seqs", "512", "--max-num-batched-tokens", "256"])
    assert result.crash_category == "config_invalid" and result.exit_code == 1
    assert "max_num_batched_tokens (256) must be greater than or equal to max_num_seqs (512)" in (
        result.crash.root_cause if result.crash else ""
    )


def test_startup_hang_is_a_timeout_within_the_deadline(tmp_path: Path) -> None:
    started = time.monotonic()
    result = _trial(tmp_path, [], fault="hang_startup", timeouts=Timeouts(startup_s=3, shutdown_s=5))
    assert result.crash_category == "timeout"
    assert time.monotonic() - started < 15


def test_engine_death_during_measurement_is_engine_error(tmp_path: Path) -> None:
    workload = WorkloadSpec(num_prompts=40, request_rate=20.0, random_input_len=64, random_output_len=32)
    result = _trial(tmp_path, [], fault="die_after=3", workload=workload)
    assert result.crash_category == "engine_error"
    assert result.crash is not None and "EngineDead" in result.crash.root_cause
    assert result.exit_code == 0  # vLLM exits 0 after its engine died


def test_stalled_engine_is_a_measurement_timeout(tmp_path: Path) -> None:
    workload = WorkloadSpec(num_prompts=20, request_rate=20.0, random_input_len=32, random_output_len=16)
    result = _trial(tmp_path, [], fault="stall_after=2", workload=workload,
                    timeouts=Timeouts(request_s=2, trial_s=6, shutdown_s=5))  # fmt: skip
    assert result.crash_category == "timeout"


@pytest.mark.parametrize("flag", ["--disable-log-stats", "--disable_log_stats"])
def test_disable_log_stats_is_refused(tmp_path: Path, flag: str) -> None:
    from vllm_slo_guard.errors import SloGuardError

    with pytest.raises(SloGuardError, match="disable-log-stats"):
        _trial(tmp_path, [flag])
