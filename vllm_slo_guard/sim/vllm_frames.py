"""The call stacks real vLLM 0.32 prints for each failure the simulator reproduces.

Which frames appear tells a reader (and a crash classifier) which process failed and where, so each
list follows a real vLLM 0.32 traceback: the CPU ones are copied from the real logs in
``tests/data/vllm-cpu-logs/``, the GPU-only ones follow the call path through vLLM 0.32's source, at the
file and line each frame names (e.g. ``vllm/v1/worker/gpu_worker.py``, ``vllm/v1/worker/utils.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

from .tracebacks import Frame


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
