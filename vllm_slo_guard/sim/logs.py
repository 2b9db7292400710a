"""The lines one simulated ``vllm serve`` process writes at startup, at run time and at shutdown.

A crash classifier and a human reading a trial log should not be able to tell the simulated server
from ``vllm serve`` by the shape of its output, so every event here writes what real vLLM 0.32 writes
(as in the real logs in ``tests/data/vllm-cpu-logs/``, and for GPU-only lines the vLLM source that logs them,
e.g. ``vllm/v1/worker/gpu_worker.py``, ``vllm/v1/core/kv_cache_utils.py``): vLLM's own log lines on **stdout**
(``VLLM_LOGGING_STREAM`` defaults to stdout in ``vllm/envs.py``; the format of ``vllm/logger.py``, see
:mod:`.log_format`), plain Python tracebacks (the API server's own crash, ``Process EngineCore:``)
on **stderr**.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from .log_format import VllmLog
from .messages import (
    ENGINE_DEAD_MESSAGE,
    ENGINE_INIT_FAILED,
    VLLM_VERSION,
    EngineFacts,
    engine_config_message,
    gib,
    kv_capacity_message,
    logo_lines,
    warning_source,
)
from .tracebacks import TracebackPaths, format_traceback
from .vllm_frames import (
    config_error_frames,
    engine_core_frames,
    engine_wait_frames,
    output_handler_frames,
    port_in_use_frames,
    process_bootstrap_frames,
    worker_frames,
    worker_rpc_frames,
)


@dataclass(frozen=True)
class StartupLog:
    """Writes the lines of one simulated ``vllm serve`` process: startup, run-time stats and death, shutdown.

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

    def auto_fit(self, model_limit: int, max_model_len: int) -> None:
        """``--max-model-len -1``: vLLM shrank the length to what the KV cache holds."""
        self.log.info(
            "EngineCore",
            "kv_cache_utils.py:2454",
            f"Auto-fit max_model_len: reduced from {model_limit} to {max_model_len}",
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

    def engine_crashed(self, traceback_text: str) -> None:
        """An exception inside an engine step (a simulator bug) is logged as EngineCore's fatal error."""
        self.log.error("EngineCore", "core.py:1512", "EngineCore encountered a fatal error.\n" + traceback_text)

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
