"""The server face of the simulated engine: ``vllm serve`` in real time, without a GPU.

Command line (the ``--sim-*`` flags are ours, everything else is parsed exactly like ``vllm serve``)::

    python -m vllm_slo_guard.sim.server MODEL [vllm serve flags ...]
        --sim-gpu GPU                 catalog name (A100-40GB, H100-80GB, L4-24GB, cpu, ...); required unless
                                      SLO_GUARD_SIM_GPU is set
        [--sim-gpu-count N]           GPUs in the node (tensor parallelism needs them), default 1
        [--sim-gpu-memory-used SIZE]  device memory held by other processes (8GiB, 512M, ...), default 0
        [--sim-seed N]                seed of the engine's timing noise, default 0 (as ``evaluator.simulate``)
        [--sim-startup-delay SECS]    how long startup really takes; the logged figures are the simulated
                                      estimate, but only this delay is slept (default 0, so tests are fast)

Both ``--sim-gpu X`` and ``--sim-gpu=X`` work. A missing or unknown GPU or model is one error line on
stderr and exit status 1. Argument errors behave like vLLM's: argparse's usage text and status 2.

What it reproduces of vLLM 0.32 (the API server of ``vllm/entrypoints/launchers/api_server/entry.py``, which
``vllm/entrypoints/openai/api_server.py`` re-exports; the socket of ``vllm/entrypoints/launchers/launcher.py``;
the log format of ``vllm/logger.py``; the metrics of ``vllm/v1/metrics/loggers.py``; checked against the real
CPU logs in ``tests/data/vllm-cpu-logs/``):

- the startup sequence on stdout with vLLM's prefixes (GPU or CPU flavour); uvicorn's own lines on
  stderr and its access log on stdout (uvicorn's defaults, which vLLM keeps); ``VLLM_DISABLE_LOG_LOGO``,
  ``VLLM_LOG_STATS_INTERVAL`` and ``VLLM_API_KEY`` are honoured;
- the listening socket is bound before the engine starts (a busy port fails at once with
  ``OSError: [Errno 98] Address already in use``, exit 1) and only listens once startup is complete;
- startup failures printed the way the vLLM process that raised them would print them (a traceback in
  the API server, or the EngineCore / Worker error blocks and ``Engine core initialization failed``);
- ``GET /health``, ``/v1/models``, ``/version``, ``/metrics``, ``/load``, ``/ping``, ``POST /tokenize``,
  ``/detokenize``, ``/v1/completions`` and ``/v1/chat/completions`` (streaming and not);
- a death of the engine at run time: EngineDeadError in the log, HTTP 500, ``/health`` 503, then the
  process exits with status **0** about 1.5 s later;
- SIGTERM / SIGINT: vLLM's ``[shutdown]`` lines (including the EngineDeadError vLLM 0.32 logs on every
  shutdown), in-flight requests end with vLLM's 500 error, exit status 0 within a fraction of a second;
- ``/metrics`` in prometheus_client's exposition, with vLLM's families, labels and histogram buckets;
  ``--disable-log-stats`` removes every ``vllm:`` series (and the periodic stats line), as in vLLM.

The engine runs in real time: one asyncio task owns the :class:`EngineCore`, executes one step, waits
until ``previous deadline + step duration`` (absolute deadlines, so the sleep overshoot never
accumulates), then hands one token to every request that produced one in that step.

Request semantics:

- the simulated model never produces EOS, so every request generates exactly ``max_tokens`` tokens
  (``finish_reason="length"``) whether or not ``ignore_eos`` is set; ``max_tokens`` defaults to the
  rest of ``max_model_len``, as in vLLM; ``n`` must be 1;
- ``prompt`` may be a string, a list of token ids, or a list of strings / token-id lists, of which only
  the **first** is served; chat ``messages`` become the space-joined text of their contents (no chat
  template tokens are added); text is counted by :class:`SimTokenizer` (one word, one token);
- each output token's text is one vocabulary word with a leading space, chosen deterministically from
  the prompt and the token's position;
- a client that disconnects from a stream aborts its request (its KV blocks are freed).

Fault switch: the environment variable ``SLO_GUARD_SIM_FAULT`` holds comma-separated items::

    hang_startup     log the first startup lines, then never become ready (the socket is bound but never
                     listens, so connections are refused); SIGTERM still ends the process
    die_after=N      after N requests completed, the engine process "dies": EngineDeadError in the log,
                     in-flight and new requests get HTTP 500, /health 503, exit status 0 about 1.5 s later
    stall_after=N    after N requests completed, the engine stops stepping: requests hang, /health stays 200
    slow=F           every engine step takes F times as long (F > 0)

for example ``SLO_GUARD_SIM_FAULT=die_after=2`` or ``SLO_GUARD_SIM_FAULT=slow=3,stall_after=10``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from types import FrameType

import uvicorn

from ..errors import SloGuardError
from ..vllm_rules.args import ArgparseExit, non_default_args, unmodelled_flags, unmodelled_text
from ..vllm_rules.failures import StartupFailure
from .api import ROUTES, build_app
from .evaluator import SimulatedServer, start_server
from .exposition import Histogram, _prom_float, bucket_1_2_5
from .faults import Fault, parse_fault
from .launch import Launch, SimFlags, prepare_launch, split_sim_flags
from .log_format import make_vllm_log
from .logs import StartupLog
from .openai_bodies import chunk_templates
from .realtime import EngineRunner
from .request_parsing import completion_prompt
from .startup import log_startup, report_failure
from .tracebacks import TracebackPaths

# The entry point, plus names tests/test_sim_server.py imports from here (they live in the modules above).
__all__ = [
    "Fault",
    "Histogram",
    "SimFlags",
    "_prom_float",
    "bucket_1_2_5",
    "chunk_templates",
    "completion_prompt",
    "main",
    "parse_fault",
    "split_sim_flags",
]

API_KEY_ENV = "VLLM_API_KEY"
NO_LOGO_ENV = "VLLM_DISABLE_LOG_LOGO"


def bind_socket(host: str | None, port: int) -> socket.socket:
    """Bind (not listen) like vLLM's ``create_server_socket``: a busy port fails before the engine starts."""
    address = host or "0.0.0.0"
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
    except OSError:
        sock.close()
        raise
    return sock


def _server_url(host: str | None, sock: socket.socket) -> str:
    """The URL vLLM logs; the bound socket knows the real port (``--port 0`` works)."""
    shown = host or "0.0.0.0"
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{sock.getsockname()[1]}"


class HttpServer(uvicorn.Server):
    """uvicorn, with vLLM's signal handling: a signal starts a graceful shutdown and the exit status is 0.

    (Plain uvicorn re-raises the signal after shutting down, which would end the process *by* SIGTERM.)
    """

    def __init__(self, config: uvicorn.Config, on_signal: Callable[[str], None]) -> None:
        super().__init__(config)
        self._on_signal = on_signal

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Install our handler for SIGINT/SIGTERM and restore the old ones afterwards, no re-raise."""
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """First signal: uvicorn's graceful exit plus vLLM's shutdown of the engine."""
        first = not self.should_exit
        super().handle_exit(sig, frame)
        if first:
            self._on_signal(signal.Signals(sig).name)


async def _serve(launch: Launch, sim: SimulatedServer, out: StartupLog, sock: socket.socket) -> int:
    """Run uvicorn on the already bound socket until a signal or the engine's death."""
    ns = launch.ns
    served = list(ns.served_model_name or [ns.model])
    runner = EngineRunner(sim, out, seed=launch.flags.seed, fault=launch.fault, model_name=served[0])
    app = build_app(runner, served, ns.model, ns.api_key or os.environ.get(API_KEY_ENV) or None)
    config = uvicorn.Config(
        app,
        loop="asyncio",
        http="h11",
        ws="none",
        lifespan="on",
        log_level=str(ns.uvicorn_log_level).lower(),
        access_log=not ns.disable_uvicorn_access_log,
        use_colors=False,
        timeout_graceful_shutdown=1,
    )
    loop = asyncio.get_running_loop()

    def on_signal(name: str) -> None:  # runs in the signal handler: hand over to the event loop
        loop.call_soon_threadsafe(runner.shutdown, name)

    server = HttpServer(config, on_signal)

    def exit_now() -> None:
        server.should_exit = True

    runner.on_exit = exit_now
    await server.serve(sockets=[sock])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m vllm_slo_guard.sim.server``: returns the process exit status."""
    try:
        launch = prepare_launch(list(sys.argv[1:] if argv is None else argv), os.environ)
    except ArgparseExit as exc:
        sys.stderr.write(exc.text)
        return exc.status
    except SloGuardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    ns = launch.ns
    multiproc = launch.gpu.is_cpu or ns.tensor_parallel_size * ns.pipeline_parallel_size > 1
    out = StartupLog(make_vllm_log(sys.stdout), sys.stderr, TracebackPaths.here(), launch.gpu.is_cpu, multiproc)
    out.preamble(ns.model, non_default_args(ns), logo=os.environ.get(NO_LOGO_ENV, "0") in ("", "0"))
    if unmodelled := unmodelled_flags(ns):  # the one line that says what this simulation ignores
        out.log.warning("APIServer", "server.py:1", unmodelled_text(unmodelled))
    try:
        sock = bind_socket(ns.host, ns.port)
    except OSError as exc:
        out.port_in_use(exc)
        return 1
    try:
        sim = start_server(
            launch.engine_argv, launch.gpu, gpu_count=launch.flags.gpu_count, used_bytes=launch.flags.used_bytes
        )
    except StartupFailure as failure:
        sock.close()
        return report_failure(out, launch, failure)
    log_startup(out, launch, sim)
    out.frontend(_server_url(ns.host, sock), ROUTES)
    gc.freeze()  # the startup objects live forever: keep them out of every later collection
    return asyncio.run(_serve(launch, sim, out, sock))


if __name__ == "__main__":
    sys.exit(main())
