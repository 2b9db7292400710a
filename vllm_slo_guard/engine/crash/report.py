"""The vocabulary of a failed server: its category, its phase, and the report the tuner records.

The tuner needs one answer per failure: does it blame the configuration (a data point the optimizer
learns from), the machine, or the workload (no configuration can work, so the run stops)?
``Category`` is that taxonomy, ``CONFIG_CATEGORIES`` the side of it the optimizer records and
``RUN_ABORTS`` the other side; ``docs/architecture.md`` describes it. A ``CrashReport`` carries the
category with the one line that explains it, a repair in terms of the flags ``vllm serve`` accepts,
and the name of the rule that decided, so that a wrong verdict can be traced to the rule in
``rules.py`` (or to the failed requests of a measurement: ``request_error``, ``request_failures``,
``request_timeouts``).

Timeouts get a report here even without a log line to match: the tuner's own deadlines (startup,
measurement) end a server that vLLM's handshake deadline (``VLLM_ENGINE_READY_TIMEOUT_S`` in
``vllm/v1/engine/core_client.py``) has not yet ended, and where it hung decides the repair.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


class Category(str, Enum):
    """The crash taxonomy: four ways a configuration fails, and two ways no configuration can help.

    ``ENVIRONMENT``: the machine (vLLM or the model missing, a port taken, a pinned flag refused).
    ``REQUEST_ERROR``: the workload. The server started and answered, but refused the requests
    themselves with a 4xx (vLLM's ``VLLMValidationError``: a prompt longer than ``max_model_len``,
    a token id outside the model's vocabulary), so every configuration would see the same answers.
    Failed requests that are the configuration's fault (5xx, dropped streams) are ``ENGINE_ERROR``,
    requests that time out ``TIMEOUT``.
    """

    OOM = "oom"
    CONFIG_INVALID = "config_invalid"
    TIMEOUT = "timeout"
    ENGINE_ERROR = "engine_error"
    ENVIRONMENT = "environment"
    REQUEST_ERROR = "request_error"

    def __str__(self) -> str:  # the value on every Python version, for f-strings and click.echo
        return self.value


#: Categories that blame the configuration: the optimizer records them.
CONFIG_CATEGORIES = frozenset({Category.OOM, Category.CONFIG_INVALID, Category.TIMEOUT, Category.ENGINE_ERROR})
#: Categories no configuration can fix: the tuner stops the run with one line (stored trials are kept).
RUN_ABORTS = frozenset({Category.ENVIRONMENT, Category.REQUEST_ERROR})
_RUN_ABORT_VALUES = frozenset(category.value for category in RUN_ABORTS)


def aborts_run(category: str | None) -> bool:
    """Whether a category (an enum member or the plain string a study stores) is one no config can fix."""
    return category is not None and str(category) in _RUN_ABORT_VALUES


REQUEST_ERROR_SUGGESTION = (
    "make the workload fit the model: prompts plus outputs within --max-model-len (or a larger one), "
    "token ids from the model's own tokenizer; the message is the server's"
)


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
    # the flags an argparse refusal names, as vLLM printed them (e.g. ("--swap-space",)); else empty
    flags: tuple[str, ...] = ()

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
            timeout_suggestion("", Phase.STARTUP, was_ready=False),
            "timeout",
        )

    @classmethod
    def measurement_timeout(cls, deadline_s: float) -> CrashReport:
        """No request finished within the measurement deadline."""
        return cls(
            Category.TIMEOUT,
            f"no request finished within the {deadline_s:g} s measurement deadline",
            timeout_suggestion("", Phase.MEASUREMENT, was_ready=True),
            "timeout",
            phase=Phase.MEASUREMENT,
        )

    @classmethod
    def requests_refused(cls, root_cause: str) -> CrashReport:
        """The server refused most requests with a 4xx: the workload does not fit the model (``REQUEST_ERROR``)."""
        return cls(
            Category.REQUEST_ERROR, root_cause, REQUEST_ERROR_SUGGESTION, "request_error", phase=Phase.MEASUREMENT
        )

    @classmethod
    def requests_failed(cls, root_cause: str) -> CrashReport:
        """Requests failed with 5xx answers or dropped streams while the log names no cause (``ENGINE_ERROR``)."""
        return cls(
            Category.ENGINE_ERROR,
            root_cause,
            "the server failed requests under this configuration (5xx answers, dropped streams): lower "
            "--max-num-seqs or --max-num-batched-tokens, and read the server log for the first error",
            "request_failures",
            phase=Phase.MEASUREMENT,
        )

    @classmethod
    def requests_timed_out(cls, root_cause: str) -> CrashReport:
        """Too many requests outlived the request timeout while the server stayed up (``TIMEOUT``)."""
        return cls(
            Category.TIMEOUT,
            root_cause,
            timeout_suggestion("", Phase.MEASUREMENT, was_ready=True),
            "request_timeouts",
            phase=Phase.MEASUREMENT,
        )

    @property
    def aborts_run(self) -> bool:
        """True when no configuration can succeed (the machine or the workload): the tuner stops."""
        return aborts_run(self.category)

    @property
    def is_environment(self) -> bool:
        """True when no configuration can succeed here, so the tuner must stop."""
        return self.category is Category.ENVIRONMENT

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (plain strings, lists and ints); ``flags`` only when the report names any."""
        data: dict[str, Any] = {
            "category": self.category.value,
            "root_cause": self.root_cause,
            "suggestion": self.suggestion,
            "pattern": self.pattern,
            "phase": self.phase.value,
            "exit_code": self.exit_code,
            "evidence": list(self.evidence),
        }
        if self.flags:
            data["flags"] = list(self.flags)
        return data


def timeout_suggestion(last_line: str, phase: Phase, was_ready: bool) -> str:
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
