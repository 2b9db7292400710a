"""A startup failure of the simulated engine, carrying vLLM's own wording and exit status.

The simulator raises ``StartupFailure`` wherever vLLM 0.32 would stop: argparse
(``vllm/utils/argparse_utils.py``), config validation in the API server (``vllm/config/scheduler.py``,
``vllm/config/cache.py``, ``vllm/config/model.py``), or the engine's memory and KV-cache checks
(``vllm/v1/worker/gpu_worker.py`` with its free-memory check ``request_memory`` in ``vllm/v1/worker/utils.py``,
``vllm/v1/worker/cpu_worker.py``, ``vllm/v1/core/kv_cache_utils.py``).
The in-process face turns it into a ``crash`` result; the server face prints it the way vLLM's
process that raised it would (argparse usage, a pydantic traceback in the API server, or an
EngineCore/Worker error block) and exits with the same status.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Where = Literal["argparse", "api_server", "engine_core", "worker"]


@dataclass
class StartupFailure(Exception):
    """Why the simulated ``vllm serve`` did not start."""

    category: str  # "oom" | "config_invalid" (the crash taxonomy of docs/architecture.md)
    where: Where
    exc_type: str  # the exception class vLLM raises, e.g. "ValueError"
    message: str  # vLLM's text (may span lines, e.g. pydantic's)
    exit_code: int = 1

    def __str__(self) -> str:
        return f"{self.exc_type}: {self.message}" if self.where != "argparse" else self.message

    @property
    def root_cause(self) -> str:
        """The single most specific line, as a crash classifier would report it."""
        lines = [line.strip() for line in self.message.splitlines() if line.strip()]
        for line in lines:
            if line.startswith(("Value error, ", "Input should be")):
                return line.removeprefix("Value error, ").split(" [type=")[0]
        return lines[0] if lines else self.exc_type


def pydantic_value_error(cls: str, message: str, category: str = "config_invalid") -> StartupFailure:
    """A ``ValueError`` raised in a config ``__post_init__``, as pydantic wraps it (exit 1, API server)."""
    text = (
        f"1 validation error for {cls}\n"
        f"  Value error, {message} [type=value_error, input_value=ArgsKwargs((), {{...}}), input_type=ArgsKwargs]\n"
        f"    For further information visit https://errors.pydantic.dev/2.14/v/value_error"
    )
    return StartupFailure(category, "api_server", "pydantic_core._pydantic_core.ValidationError", text)


def pydantic_field_error(cls: str, field: str, rule: str, kind: str, value: object) -> StartupFailure:
    """A field-constraint violation (e.g. gpu_memory_utilization > 1), as pydantic prints it."""
    text = (
        f"1 validation error for {cls}\n{field}\n"
        f"  Input should be {rule} [type={kind}, input_value={value!r}, input_type={type(value).__name__}]\n"
        f"    For further information visit https://errors.pydantic.dev/2.14/v/{kind}"
    )
    return StartupFailure("config_invalid", "api_server", "pydantic_core._pydantic_core.ValidationError", text)
