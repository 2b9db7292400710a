"""What every command shares: vLLM's pass-through flags, the sim-GPU usage error, SIGTERM as Ctrl-C."""

from __future__ import annotations

import signal
from typing import Any

import click

from ..errors import InputError
from ..spec import require_sim_gpu

PASS_THROUGH = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": ["-h", "--help"]}


def require_sim_gpu_option(engine: str, gpu: str | None) -> None:
    """The simulated engine needs a GPU to simulate: a usage error (exit 2), as for a missing option."""
    try:
        require_sim_gpu(engine, gpu)
    except InputError as exc:
        raise click.UsageError(str(exc)) from None


def terminate_on_sigterm() -> None:
    """Make SIGTERM unwind like Ctrl-C, so every ``finally`` stops its trial server.

    It is delivered as a SIGINT when SIGINT has a handler: inside ``asyncio.run`` (the load generator)
    that handler cancels the main task cleanly, where a KeyboardInterrupt raised in whatever task was
    running left "Task exception was never retrieved" tracebacks behind. Where SIGINT is ignored (a
    background job of a non-interactive shell), KeyboardInterrupt is raised directly.
    """

    def handler(signum: int, frame: Any) -> None:
        if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL, None):
            raise KeyboardInterrupt
        signal.raise_signal(signal.SIGINT)

    signal.signal(signal.SIGTERM, handler)
