"""vLLM 0.32-style log text for the simulated server: the line prefix, fact lines and tracebacks.

A crash classifier and a human reading a trial log should not be able to tell the simulated server
from ``vllm serve`` by the shape of its output, so every line here copies the wording of real vLLM
0.32 logs (reference/vllm-facts.md §3, §9, §10 and reference/vllm-cpu-logs/):

- vLLM's own log lines go to **stdout** with the prefix
  ``(APIServer pid=N) INFO MM-DD hh:mm:ss [file.py:line] message``; a multi-line message repeats the
  prefix on every line (vLLM's NewLineFormatter);
- plain Python tracebacks (the API server's own crash, ``Process EngineCore:``) go to **stderr**;
- numbers are formatted as vLLM formats them (comma thousands separators, ``round(x / 2**30, 2)`` GiB).

Source paths inside tracebacks point at where vLLM would be installed in this interpreter; the
frames themselves are the ones real vLLM 0.32 prints for each failure.
"""

from __future__ import annotations

import logging
import sys
import sysconfig
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TextIO

VLLM_VERSION = "0.32.0"
DATE_FORMAT = "%m-%d %H:%M:%S"
ENGINE_DEAD_MESSAGE = "EngineCore encountered an issue. See stack trace (above) for the root cause."
ENGINE_INIT_FAILED = (
    "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {'EngineCore': 1}"
)
_LOGGER_NAME = "vllm_slo_guard.sim.vllm"


class VllmFormatter(logging.Formatter):
    """vLLM's log format, prefix repeated on each line so grep-based tools see every line's origin."""

    def __init__(self) -> None:
        super().__init__(datefmt=DATE_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        proc = getattr(record, "vllm_proc", "APIServer")
        where = getattr(record, "vllm_where", f"{record.filename}:{record.lineno}")
        prefix = f"({proc} pid={record.process}) {record.levelname} {self.formatTime(record, self.datefmt)} [{where}] "
        return "\n".join(prefix + line for line in message.split("\n"))


@dataclass(frozen=True)
class VllmLog:
    """Writes vLLM-style lines: ``proc`` is the process name, ``where`` the ``file.py:line`` vLLM logs from."""

    logger: logging.Logger

    def info(self, proc: str, where: str, message: str) -> None:
        self.logger.info(message, extra={"vllm_proc": proc, "vllm_where": where})

    def warning(self, proc: str, where: str, message: str) -> None:
        self.logger.warning(message, extra={"vllm_proc": proc, "vllm_where": where})

    def error(self, proc: str, where: str, message: str) -> None:
        self.logger.error(message, extra={"vllm_proc": proc, "vllm_where": where})


def make_vllm_log(stream: TextIO | None = None) -> VllmLog:
    """A logger writing vLLM lines to ``stream`` (stdout by default, as vLLM does); flushes every line."""
    logger = logging.getLogger(_LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    handler.setFormatter(VllmFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return VllmLog(logger)


# --- fact lines ---------------------------------------------------------------------------------


def logo_lines(model: str) -> list[str]:
    """The ASCII logo vLLM prints first (``api_utils.py:347``), one message per line as in real logs."""
    return [
        "",
        "       █     █     █▄   ▄█",
        f" ▄▄ ▄█ █     █     █ ▀▄▀ █  version {VLLM_VERSION}",
        f"  █▄█▀ █     █     █     █  model   {model}",
        "   ▀▀  ▀▀▀▀▀ ▀▀▀▀▀ ▀     ▀",
        "",
    ]


def gib(num_bytes: float) -> float:
    """vLLM's GiB figure: ``round(x / 2**30, 2)``."""
    return round(num_bytes / 2**30, 2)


def kv_capacity_message(device: str, kv_tokens: int, max_model_len: int, concurrency: float) -> str:
    """The capacity line a tuner scrapes (``kv_cache_utils.py:2327``), byte for byte as vLLM prints it."""
    return (
        f"{device} KV cache size: {kv_tokens:,} tokens, Maximum concurrency for {max_model_len:,} tokens per "
        f"request: {concurrency:.2f}x"
    )


def stats_message(
    prompt_tps: float,
    generation_tps: float,
    running: int,
    waiting: int,
    preemptions: int,
    device: str,
    kv_usage: float,
    prefix_hit_rate: float | None,
) -> str:
    """The periodic ``Engine 000: ...`` line (``loggers.py:335``); optional parts as vLLM omits them."""
    parts = [
        f"Engine 000: Avg prompt throughput: {prompt_tps:.1f} tokens/s",
        f"Avg generation throughput: {generation_tps:.1f} tokens/s",
        f"Running: {running} reqs",
        f"Waiting: {waiting} reqs",
    ]
    if preemptions:
        parts.append(f"Preemptions: {preemptions}")
    parts.append(f"{device} KV cache usage: {100 * kv_usage:.1f}%")
    if prefix_hit_rate is not None:
        parts.append(f"Prefix cache hit rate: {100 * prefix_hit_rate:.1f}%")
    return ", ".join(parts)


# --- tracebacks ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """One traceback frame; ``root`` is "site" (site-packages), "py" (stdlib), "bin" or "" (as written)."""

    root: str
    path: str
    line: int
    func: str
    code: str = ""
    caret: bool = False


@dataclass(frozen=True)
class TracebackPaths:
    """Where the frames' files would live in this interpreter (real tracebacks carry absolute paths)."""

    site: str
    stdlib: str
    bin: str

    @classmethod
    def here(cls) -> TracebackPaths:
        """Paths of the running interpreter, so the frames look like a local vLLM install."""
        paths = sysconfig.get_paths()
        return cls(paths["purelib"], paths["stdlib"], f"{sys.prefix}/bin")

    def resolve(self, frame: Frame) -> str:
        """The absolute file name of ``frame``."""
        root = {"site": self.site, "py": self.stdlib, "bin": self.bin}.get(frame.root)
        return f"{root}/{frame.path}" if root else frame.path


def _caret_line(code: str) -> str | None:
    """Python 3.11's ``^^^`` marker under the call on the right-hand side (none when it spans the line)."""
    for marker in (" = ", "return "):
        at = code.find(marker)
        if at >= 0:
            start = at + len(marker)
            return " " * (4 + start) + "^" * (len(code) - start)
    return None


def format_traceback(frames: Sequence[Frame], final: str, paths: TracebackPaths) -> str:
    """A ``Traceback (most recent call last):`` block ending in ``final`` (``ExcType: message``)."""
    lines = ["Traceback (most recent call last):"]
    for frame in frames:
        lines.append(f'  File "{paths.resolve(frame)}", line {frame.line}, in {frame.func}')
        if frame.code:
            lines.append(f"    {frame.code}")
            caret = _caret_line(frame.code) if frame.caret else None
            if caret:
                lines.append(caret)
    lines.append(final)
    return "\n".join(lines)


def _entry(line: int, func: str, code: str, caret: bool = False) -> Frame:
    """A frame of vLLM's API-server entry module."""
    return Frame("site", "vllm/entrypoints/launchers/api_server/entry.py", line, func, code, caret)


def _ctx_enter() -> Frame:
    """contextlib's ``__aenter__`` frame that async context managers add."""
    return Frame("py", "contextlib.py", 210, "__aenter__", "return await anext(self.gen)", True)


def _otel() -> Frame:
    """vLLM's tracing wrapper frame, present around most engine calls."""
    return Frame("site", "vllm/tracing/otel.py", 175, "sync_wrapper", "return func(*args, **kwargs)", True)


def _pydantic_init() -> Frame:
    """The frame in which pydantic validates a config dataclass."""
    return Frame(
        "site",
        "pydantic/_internal/_dataclasses.py",
        121,
        "__init__",
        "s.__pydantic_validator__.validate_python(ArgsKwargs(args, kwargs), self_instance=s)",
    )


def cli_frames() -> list[Frame]:
    """The frames from ``vllm`` down to ``run_server`` that every API-server crash starts with."""
    return [
        Frame("bin", "vllm", 8, "<module>", "sys.exit(main())", True),
        Frame("site", "vllm/entrypoints/cli/main.py", 120, "main", "args.dispatch_function(args)"),
        Frame("site", "vllm/entrypoints/cli/serve.py", 156, "cmd", "uvloop.run(run_server(args))"),
        Frame("site", "uvloop/__init__.py", 92, "run", "return runner.run(wrapper())", True),
        Frame("py", "asyncio/runners.py", 118, "run", "return self._loop.run_until_complete(task)", True),
        Frame("", "uvloop/loop.pyx", 1515, "uvloop.loop.Loop.run_until_complete"),
        Frame("site", "uvloop/__init__.py", 48, "wrapper", "return await main", True),
    ]


def port_in_use_frames() -> list[Frame]:
    """``setup_server`` binds the socket before the engine starts (launcher.py:348)."""
    return [
        *cli_frames(),
        _entry(176, "run_server", "listen_address, sock = setup_server(args, reuse_port=False)", True),
        _otel(),
        Frame(
            "site",
            "vllm/entrypoints/launchers/launcher.py",
            398,
            "setup_server",
            "sock = create_server_socket(sock_addr, reuse_port=reuse_port)",
            True,
        ),
        Frame("site", "vllm/entrypoints/launchers/launcher.py", 348, "create_server_socket", "sock.bind(addr)"),
    ]


def _engine_client_frames() -> list[Frame]:
    """From ``run_server`` into the engine-client context managers."""
    return [
        *cli_frames(),
        _entry(177, "run_server", "await run_server_worker(listen_address, sock, args, **uvicorn_kwargs)"),
        _entry(195, "run_server_worker", "async with build_async_engine_client("),
        _ctx_enter(),
        _entry(61, "build_async_engine_client", "async with build_async_engine_client_from_engine_args("),
        _ctx_enter(),
    ]


_CONFIG_FRAMES: Mapping[str, Sequence[Frame]] = MappingProxyType(
    {
        "CacheConfig": [
            Frame("site", "vllm/engine/arg_utils.py", 2265, "create_engine_config", "cache_config = CacheConfig(", True)
        ],
        "SchedulerConfig": [
            Frame(
                "site",
                "vllm/engine/arg_utils.py",
                2617,
                "create_engine_config",
                "scheduler_config = SchedulerConfig(",
                True,
            )
        ],
        "ModelConfig": [
            Frame(
                "site",
                "vllm/engine/arg_utils.py",
                2240,
                "create_engine_config",
                "model_config = self.create_model_config()",
                True,
            ),
            Frame("site", "vllm/engine/arg_utils.py", 1955, "create_model_config", "return ModelConfig(", True),
        ],
        "VllmConfig": [
            Frame("site", "vllm/engine/arg_utils.py", 2790, "create_engine_config", "config = VllmConfig(", True)
        ],
        "ParallelConfig": [
            Frame(
                "site",
                "vllm/engine/arg_utils.py",
                2520,
                "create_engine_config",
                "parallel_config = ParallelConfig(",
                True,
            )
        ],
    }
)


def config_error_frames(config_class: str, pydantic: bool) -> list[Frame]:
    """``create_engine_config`` failing in the API server, before any engine process exists."""
    frames = [
        *_engine_client_frames(),
        _entry(
            83,
            "build_async_engine_client_from_engine_args",
            "vllm_config = engine_args.create_engine_config(usage_context=usage_context)",
            True,
        ),
        *_CONFIG_FRAMES.get(config_class, _CONFIG_FRAMES["ParallelConfig"]),
    ]
    if pydantic:
        frames.append(_pydantic_init())
    return frames


def engine_wait_frames() -> list[Frame]:
    """The API server waiting for the engine handshake (``wait_for_engine_startup``)."""
    return [
        *_engine_client_frames(),
        _entry(95, "build_async_engine_client_from_engine_args", "async_llm = AsyncLLM.from_vllm_config(", True),
        Frame("site", "vllm/v1/engine/async_llm.py", 255, "from_vllm_config", "return cls(", True),
        Frame(
            "site",
            "vllm/v1/engine/async_llm.py",
            184,
            "__init__",
            "self.engine_core = EngineCoreClient.make_async_mp_client(",
            True,
        ),
        _otel(),
        Frame("site", "vllm/v1/engine/core_client.py", 167, "make_async_mp_client", "return AsyncMPClient(", True),
        _otel(),
        Frame("site", "vllm/v1/engine/core_client.py", 1120, "__init__", "super().__init__("),
        Frame("site", "vllm/v1/engine/core_client.py", 682, "__init__", "with launch_core_engines("),
        Frame("py", "contextlib.py", 144, "__exit__", "next(self.gen)"),
        Frame("site", "vllm/v1/engine/utils.py", 1351, "launch_core_engines", "wait_for_engine_startup("),
        Frame("site", "vllm/v1/engine/utils.py", 1431, "wait_for_engine_startup", "raise RuntimeError("),
    ]


def _engine_init_frames() -> list[Frame]:
    """The first frames of the EngineCore process's constructor."""
    return [
        Frame(
            "site",
            "vllm/v1/engine/core.py",
            1482,
            "run_engine_core",
            "engine_core = EngineCoreProc(*args, engine_index=dp_rank, **kwargs)",
            True,
        ),
        _otel(),
        Frame("site", "vllm/v1/engine/core.py", 1194, "__init__", "super().__init__("),
    ]


def engine_core_frames(stage: str) -> list[Frame]:
    """Frames inside EngineCore for a failure at ``stage``: "backend", "worker_init", "kv_check", "kv_alloc"."""
    init = _engine_init_frames()
    if stage in ("backend", "worker_init"):
        return [
            *init,
            Frame(
                "site",
                "vllm/v1/engine/core.py",
                121,
                "__init__",
                "self.model_executor = executor_class(vllm_config)",
                True,
            ),
            Frame("site", "vllm/v1/executor/abstract.py", 103, "__init__", "self._init_executor()"),
            Frame(
                "site", "vllm/v1/executor/uniproc_executor.py", 52, "_init_executor", "self.driver_worker.init_device()"
            ),
        ]
    frames = [
        *init,
        Frame(
            "site",
            "vllm/v1/engine/core.py",
            157,
            "__init__",
            "kv_cache_config = self._initialize_kv_caches(vllm_config)",
            True,
        ),
        _otel(),
    ]
    if stage == "kv_check":
        return [
            *frames,
            Frame(
                "site",
                "vllm/v1/engine/core.py",
                326,
                "_initialize_kv_caches",
                "kv_cache_configs = get_kv_cache_configs(",
                True,
            ),
            Frame(
                "site", "vllm/v1/core/kv_cache_utils.py", 2642, "get_kv_cache_configs", "_check_enough_kv_cache_memory("
            ),
            Frame("site", "vllm/v1/core/kv_cache_utils.py", 1030, "_check_enough_kv_cache_memory", "raise ValueError("),
        ]
    return [
        *frames,
        Frame(
            "site",
            "vllm/v1/engine/core.py",
            377,
            "_initialize_kv_caches",
            "self.model_executor.initialize_from_config(kv_cache_configs)",
        ),
    ]


def worker_rpc_frames() -> list[Frame]:
    """EngineCore's side of a worker that raised: the collective RPC re-raises as ``RuntimeError``."""
    return [
        *engine_core_frames("kv_alloc"),
        Frame(
            "site",
            "vllm/v1/executor/abstract.py",
            137,
            "initialize_from_config",
            'self.collective_rpc("initialize_from_config", args=(kv_cache_configs,))',
        ),
        Frame(
            "site",
            "vllm/v1/executor/multiproc_executor.py",
            455,
            "collective_rpc",
            "return future if non_block else future.result()",
        ),
        Frame("site", "vllm/v1/executor/multiproc_executor.py", 99, "result", "return super().result()", True),
        Frame("py", "concurrent/futures/_base.py", 449, "result", "return self.__get_result()", True),
        Frame("py", "concurrent/futures/_base.py", 401, "__get_result", "raise self._exception"),
        Frame("site", "vllm/v1/executor/multiproc_executor.py", 444, "get_response", "raise RuntimeError("),
    ]


def worker_frames(stage: str) -> list[Frame]:
    """Frames inside a worker process for a failure at ``stage`` ("worker_init", "load", "kv_alloc", "kernel")."""
    rpc = Frame(
        "site",
        "vllm/v1/executor/multiproc_executor.py",
        1055,
        "_execute_worker_rpc",
        "output = func(*args, **kwargs)",
        True,
    )
    if stage == "worker_init":
        return [
            rpc,
            Frame(
                "site", "vllm/v1/worker/worker_base.py", 322, "init_device", "self.worker.init_device()  # type: ignore"
            ),
            Frame(
                "site", "vllm/v1/worker/gpu_worker.py", 281, "init_device", "self.requested_memory = request_memory("
            ),
            Frame("site", "vllm/v1/worker/utils.py", 760, "request_memory", "raise ValueError("),
        ]
    if stage == "load":
        return [
            rpc,
            Frame("site", "vllm/v1/worker/gpu_worker.py", 331, "load_model", "self.model_runner.load_model()"),
            Frame("site", "vllm/v1/worker/gpu_model_runner.py", 5138, "load_model", "raise e"),
        ]
    return [
        rpc,
        Frame(
            "site",
            "vllm/v1/worker/worker_base.py",
            344,
            "initialize_from_config",
            "self.worker.initialize_from_config(kv_cache_config)  # type: ignore",
        ),
        _otel(),
        Frame(
            "site",
            "vllm/v1/worker/gpu_worker.py",
            894,
            "initialize_from_config",
            "self.model_runner.initialize_kv_cache(",
        ),
        Frame(
            "site",
            "vllm/v1/worker/gpu_model_runner.py",
            7090,
            "initialize_kv_cache",
            "kernel_block_sizes = prepare_kernel_block_sizes(",
            True,
        ),
        Frame("site", "vllm/v1/worker/utils.py", 672, "prepare_kernel_block_sizes", "else select_common_block_size("),
        Frame("site", "vllm/v1/worker/utils.py", 554, "select_common_block_size", "raise ValueError("),
    ]


def process_bootstrap_frames(inner: Sequence[Frame]) -> list[Frame]:
    """``Process EngineCore:`` — multiprocessing's own traceback of the engine process on stderr."""
    return [
        Frame("py", "multiprocessing/process.py", 314, "_bootstrap", "self.run()"),
        Frame("py", "multiprocessing/process.py", 108, "run", "self._target(*self._args, **self._kwargs)"),
        Frame("site", "vllm/v1/engine/core.py", 1514, "run_engine_core", "raise e"),
        *inner,
    ]


def output_handler_frames() -> list[Frame]:
    """``AsyncLLM.output_handler`` noticing that the engine process is gone."""
    return [
        Frame(
            "site",
            "vllm/v1/engine/async_llm.py",
            849,
            "output_handler",
            "outputs = await engine_core.get_output_async()",
            True,
        ),
        Frame(
            "site",
            "vllm/v1/engine/core_client.py",
            1235,
            "get_output_async",
            "raise self._format_exception(outputs) from None",
        ),
    ]


# --- the startup sequence -----------------------------------------------------------------------

_CUDAGRAPH_MODE_REPR: Mapping[str, str] = MappingProxyType(
    {
        "NONE": "<CUDAGraphMode.NONE: 0>",
        "PIECEWISE": "<CUDAGraphMode.PIECEWISE: 1>",
        "FULL": "<CUDAGraphMode.FULL: 2>",
        "FULL_DECODE_ONLY": "<CUDAGraphMode.FULL_DECODE_ONLY: (2, 0)>",
        "FULL_AND_PIECEWISE": "<CUDAGraphMode.FULL_AND_PIECEWISE: (2, 1)>",
    }
)

# Where vLLM logs each configuration warning from (matched on the start of the message).
_WARNING_SOURCES = (
    ("This model does not officially support disabling chunked prefill", "arg_utils.py:3005"),
    ("max_num_batched_tokens (", "scheduler.py:352"),
    ("Your ", "model.py:1812"),
)


@dataclass(frozen=True)
class EngineFacts:
    """The resolved values the engine-config line shows (``core.py:133``)."""

    model: str
    served_model_name: str
    dtype: str
    max_seq_len: int
    load_format: str
    tensor_parallel_size: int
    pipeline_parallel_size: int
    enforce_eager: bool
    kv_cache_dtype: str
    device: str  # "cuda" | "cpu"
    seed: int
    enable_prefix_caching: bool
    enable_chunked_prefill: bool
    optimization_level: int
    cudagraph_mode: str
    capture_sizes: tuple[int, ...]


def engine_config_message(facts: EngineFacts) -> str:
    """``Initializing a V1 LLM engine (v0.32.0) with config: ...`` with the fields a reader looks for."""
    mode = "<CompilationMode.VLLM_COMPILE: 3>" if facts.optimization_level >= 1 else "<CompilationMode.NONE: 0>"
    compilation = (
        f"{{'mode': {mode}, 'backend': 'inductor', 'cudagraph_mode': {_CUDAGRAPH_MODE_REPR[facts.cudagraph_mode]}, "
        f"'cudagraph_capture_sizes': {list(facts.capture_sizes)}, "
        f"'max_cudagraph_capture_size': {max(facts.capture_sizes) if facts.capture_sizes else None}}}"
    )
    return (
        f"Initializing a V1 LLM engine (v{VLLM_VERSION}) with config: model='{facts.model}', speculative_config=None, "
        f"tokenizer='{facts.model}', skip_tokenizer_init=False, tokenizer_mode=auto, revision=None, "
        f"tokenizer_revision=None, trust_remote_code=False, dtype=torch.{facts.dtype}, "
        f"max_seq_len={facts.max_seq_len}, "
        f"download_dir=None, load_format={facts.load_format}, tensor_parallel_size={facts.tensor_parallel_size}, "
        f"pipeline_parallel_size={facts.pipeline_parallel_size}, data_parallel_size=1, "
        f"disable_custom_all_reduce={facts.device == 'cpu'}, quantization=None, enforce_eager={facts.enforce_eager}, "
        f"kv_cache_dtype={facts.kv_cache_dtype}, device_config={facts.device}, seed={facts.seed}, "
        f"served_model_name={facts.served_model_name}, enable_prefix_caching={facts.enable_prefix_caching}, "
        f"enable_chunked_prefill={facts.enable_chunked_prefill}, pooler_config=None, compilation_config={compilation}"
    )


def warning_source(message: str) -> str:
    """The ``file.py:line`` vLLM logs a configuration warning from."""
    for start, where in _WARNING_SOURCES:
        if message.startswith(start):
            return where
    return "config.py:1"


@dataclass(frozen=True)
class StartupLog:
    """Writes the startup and shutdown sequences of one simulated ``vllm serve`` process.

    ``multiproc`` is vLLM's executor choice: a separate worker process (CPU, or more than one GPU)
    whose failures EngineCore re-raises as ``Worker failed with error '...'``; on one GPU the worker
    runs inside EngineCore (``uni`` executor) and its lines carry the EngineCore prefix.
    """

    log: VllmLog
    err: TextIO
    paths: TracebackPaths
    is_cpu: bool
    multiproc: bool

    @property
    def device_word(self) -> str:
        return "CPU" if self.is_cpu else "GPU"

    @property
    def worker(self) -> str:
        if self.is_cpu:
            return "Worker"
        return "Worker_TP0" if self.multiproc else "EngineCore"

    def _stderr(self, text: str) -> None:
        """Write a block to stderr at once (tracebacks are not prefixed log lines)."""
        self.err.write(text if text.endswith("\n") else text + "\n")
        self.err.flush()

    # API server ---------------------------------------------------------------------------------
    def preamble(self, model: str, non_default: dict[str, object], logo: bool = True) -> None:
        for line in logo_lines(model) if logo else [f"vLLM server version {VLLM_VERSION}, serving model {model}"]:
            self.log.info("APIServer", "api_utils.py:347", line)
        self.log.info("APIServer", "api_utils.py:286", f"non-default args: {non_default}")

    def port_in_use(self, exc: OSError) -> None:
        final = f"OSError: [Errno {exc.errno}] {exc.strerror}"
        self._stderr(format_traceback(port_in_use_frames(), final, self.paths))

    def model_config(self, architecture: str, max_model_len: int | None) -> None:
        self.log.info("APIServer", "model.py:733", f"Resolved architecture: {architecture}")
        if max_model_len is not None:
            self.log.info("APIServer", "model.py:2152", f"Using max model len {max_model_len}")

    def config_warnings(self, warnings: Sequence[str], enforce_eager: bool) -> None:
        for message in warnings:
            self.log.warning("APIServer", warning_source(message), message)
        if enforce_eager:
            self.log.warning(
                "APIServer",
                "vllm.py:1703",
                "Enforce eager set, disabling torch.compile, CUDAGraphs, and JIT kernel warmup. This is equivalent "
                "to setting -cc.mode=none -cc.cudagraph_mode=none and --kernel_config.enable_jit_warmup=False",
            )

    def api_server_failure(self, exc_type: str, message: str) -> None:
        """``create_engine_config`` refused the arguments: a plain traceback, no engine lines."""
        config_class = (
            message.split("validation error for ", 1)[1].split("\n", 1)[0] if "validation error for " in message else ""
        )
        frames = config_error_frames(config_class, pydantic=exc_type.startswith("pydantic"))
        self._stderr(format_traceback(frames, f"{exc_type}: {message}", self.paths))

    # engine core ----------------------------------------------------------------------------------
    def engine_started(self, facts: EngineFacts) -> None:
        self.log.info("EngineCore", "core.py:133", engine_config_message(facts))
        if self.multiproc:
            self.log.info(
                "EngineCore",
                "multiproc_executor.py:153",
                "DP group leader: node_rank=0, node_rank_within_dp=0, master_addr=127.0.0.1, "
                f"mq_connect_ip=127.0.0.1 (local), world_size={facts.tensor_parallel_size}, "
                f"local_world_size={facts.tensor_parallel_size}",
            )

    def loading(self, model: str) -> None:
        runner = "cpu_model_runner.py:68" if self.is_cpu else "gpu_model_runner.py:5101"
        self.log.info(self.worker, runner, f"Starting to load model {model}...")

    def loaded(self, weight_bytes: int, load_s: float) -> None:
        if self.is_cpu:
            self.log.info(self.worker, "base_loader.py:82", f"Initializing model took {load_s:.6f} seconds")
        else:
            self.log.info(self.worker, "default_loader.py:502", f"Loading weights took {load_s:.2f} seconds")
            self.log.info(
                self.worker,
                "gpu_model_runner.py:5150",
                f"Model loading took {gib(weight_bytes)} GiB memory and {load_s:.6f} seconds",
            )

    def compiled(self, compile_s: float, max_tokens: int) -> None:
        """torch.compile on GPU (``-O1``+), the warm-up compile on CPU."""
        if self.is_cpu:
            self.log.info(self.worker, "cpu_model_runner.py:87", "Warming up model for the compilation...")
            self.log.info(
                self.worker, "monitor.py:91", f"[backbone] Initial profiling/warmup run took {compile_s:.2f} s"
            )
            self.log.info(self.worker, "cpu_model_runner.py:91", "Warming up done.")
            return
        dynamo = 0.2 * compile_s
        self.log.info(self.worker, "backends.py:1032", f"Dynamo bytecode transform time: {dynamo:.2f} s")
        self.log.info(
            self.worker,
            "backends.py:338",
            f"Compiling a graph for compile range (1, {max_tokens}) takes {compile_s - dynamo:.2f} s",
        )
        self.log.info(self.worker, "monitor.py:48", f"torch.compile takes {compile_s:.2f} s in total")

    def graph_estimate(self, piecewise: Sequence[int], full: Sequence[int], graph_bytes: int) -> None:
        parts = [
            f"{name}={len(sizes)} (largest={max(sizes)})"
            for name, sizes in (("PIECEWISE", piecewise), ("FULL", full))
            if sizes
        ]
        self.log.info(self.worker, "gpu_model_runner.py:6321", f"Profiling CUDA graph memory: {', '.join(parts)}")
        self.log.info(
            self.worker, "gpu_model_runner.py:6390", f"Estimated CUDA graph memory: {gib(graph_bytes)} GiB total"
        )

    def kv_memory(self, kv_bytes: float, total_bytes: int, requested_bytes: int, explicit: bool) -> None:
        if not self.is_cpu:
            self.log.info(self.worker, "gpu_worker.py:760", f"Available KV cache memory: {gib(kv_bytes)} GiB")
        elif explicit:
            self.log.info(
                self.worker,
                "cpu_worker.py:260",
                f"Explicitly set ({gib(kv_bytes)}/{gib(total_bytes)}) GiB for KV cache on node 0.",
            )
        else:
            self.log.info(
                self.worker,
                "cpu_worker.py:260",
                f"Auto set ({gib(kv_bytes)}/{gib(total_bytes)}) GiB for KV cache on node 0, with "
                f"{gib(requested_bytes)} GiB requested memory for the worker. "
                f"{gib(requested_bytes - kv_bytes)} GiB memory was consumed by non-kv usages.",
            )

    def kv_capacity(self, kv_tokens: int, max_model_len: int, concurrency: float) -> None:
        self.log.info(
            "EngineCore",
            "kv_cache_utils.py:2327",
            kv_capacity_message(self.device_word, kv_tokens, max_model_len, concurrency),
        )

    def graphs_captured(self, capture_s: float, graph_bytes: int) -> None:
        self.log.info(
            self.worker,
            "gpu_model_runner.py:6582",
            f"Graph capturing finished in {round(capture_s)} secs, took {gib(graph_bytes)} GiB",
        )

    def kv_suggestion(self, message: str) -> None:
        self.log.info(self.worker, "gpu_worker.py:1017", message)

    def init_done(self, init_s: float, compile_s: float) -> None:
        suffix = f" (compilation: {compile_s:.2f} s)" if compile_s > 0 and not self.is_cpu else ""
        self.log.info(
            "EngineCore",
            "core.py:402",
            f"init engine (profile, create kv cache, warmup model) took {init_s:.2f} s{suffix}",
        )

    def frontend(self, url: str, routes: Sequence[tuple[str, str]]) -> None:
        self.log.info("APIServer", "entry.py:136", "Supported tasks: ['generate']")
        self.log.info("APIServer", "entry.py:140", f"Starting vLLM server on {url}")
        self.log.info("APIServer", "launcher.py:186", "Available routes are:")
        for path, methods in routes:
            self.log.info("APIServer", "launcher.py:195", f"Route: {path}, Methods: {methods}")

    # startup failures inside the engine -------------------------------------------------------
    def engine_failure(self, where: str, stage: str, exc_type: str, message: str) -> None:
        """EngineCore (and worker) error blocks, ``Process EngineCore:``, then the API server's wrapper."""
        final = f"{exc_type}: {message}"
        if where == "worker" and self.multiproc:
            worker_tb = format_traceback(worker_frames(stage), final, self.paths)
            self.log.error(
                self.worker, "multiproc_executor.py:1063", "WorkerProc hit an exception.\n" + worker_tb + "\n"
            )
            final = (
                f"RuntimeError: Worker failed with error '{message}', please check the stack trace above for the "
                "root cause"
            )
            inner = worker_rpc_frames()
        elif where == "worker":
            inner = [
                *engine_core_frames("worker_init" if stage == "worker_init" else "kv_alloc"),
                *worker_frames(stage)[1:],
            ]
        else:
            inner = engine_core_frames(stage)
        self.log.error(
            "EngineCore", "core.py:1510", "EngineCore failed to start.\n" + format_traceback(inner, final, self.paths)
        )
        self._stderr("Process EngineCore:\n" + format_traceback(process_bootstrap_frames(inner), final, self.paths))
        if self.multiproc:
            self.log.error(
                "EngineCore",
                "multiproc_executor.py:315",
                "Worker proc VllmWorker-0 died unexpectedly (exit code: 0), shutting down executor.",
            )
            self.log.info(
                "EngineCore", "multiproc_executor.py:479", "[shutdown] Executor: waiting for worker exit count=0"
            )
            self.log.info(
                "EngineCore", "multiproc_executor.py:486", "[shutdown] Executor: all workers exited gracefully"
            )
        self._stderr(format_traceback(engine_wait_frames(), ENGINE_INIT_FAILED, self.paths))

    # runtime -------------------------------------------------------------------------------------
    def stats(self, message: str) -> None:
        self.log.info("APIServer", "loggers.py:335", message)

    def _output_handler_failed(self) -> None:
        """The EngineDeadError traceback of ``AsyncLLM.output_handler``."""
        tb = format_traceback(
            output_handler_frames(), f"vllm.v1.engine.exceptions.EngineDeadError: {ENGINE_DEAD_MESSAGE}", self.paths
        )
        self.log.error("APIServer", "async_llm.py:906", "AsyncLLM output_handler failed.\n" + tb)

    def _client_cleanup(self, timeout: str) -> None:
        """The MPClient's ``[shutdown]`` lines after its engine is gone."""
        self.log.info("APIServer", "core_client.py:770", f"[shutdown] MPClient: start timeout={timeout}")
        self.log.info("APIServer", "core_client.py:772", "[shutdown] MPClient: stopping engine manager")
        self.log.info("APIServer", "core_client.py:774", "[shutdown] MPClient: engine manager stopped")
        self.log.info("APIServer", "core_client.py:775", "[shutdown] MPClient: cleaning up background resources")
        self.log.info("APIServer", "core_client.py:777", "[shutdown] MPClient: complete")

    def engine_died(self) -> None:
        """The engine process vanished at run time (what ``kill -9`` on EngineCore looks like)."""
        if self.multiproc:
            self.log.info(self.worker, "multiproc_executor.py:843", "Parent process exited, terminating worker queues")
        self.log.warning(
            "APIServer", "core_client.py:817", "[shutdown] MPClient: engine core exited unexpectedly; starting cleanup"
        )
        self._client_cleanup("default")
        self._output_handler_failed()

    def shutdown_triggered(self, signal_name: str) -> None:
        """Graceful shutdown on SIGTERM/SIGINT; vLLM 0.32 logs an EngineDeadError here too (real run)."""
        self.log.info("APIServer", "launcher.py:254", "[shutdown] API server: shutdown triggered")
        self.log.info(
            "APIServer", "launcher.py:270", "[shutdown] API server: stopping engine client mode=abort timeout=0s"
        )
        self.log.info("EngineCore", "core.py:1454", f"[shutdown] EngineCore: trigger received signal={signal_name}")
        self.log.info("EngineCore", "core.py:1635", "[shutdown] EngineCore: start mode=abort timeout=0s")
        self.log.info(
            "EngineCore",
            "core.py:1666",
            "[shutdown] EngineCore: request processing complete; starting resource teardown",
        )
        self.log.info("EngineCore", "core.py:1499", "[shutdown] EngineCore: exiting busy loop")
        self._client_cleanup("0s")
        self._output_handler_failed()
        self.log.info("APIServer", "launcher.py:279", "[shutdown] API server: engine client stopped")
        self.log.info("APIServer", "launcher.py:282", "[shutdown] API server: signalling HTTP server shutdown")
        self.log.info("APIServer", "launcher.py:304", "[shutdown] API server: shutting down FastAPI HTTP server")
