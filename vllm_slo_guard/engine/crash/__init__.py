"""Why a vLLM server failed: a category, the one line that explains it, and a repair.

The tuner must tell a configuration that vLLM refuses or that runs out of memory (a data point for
the optimizer) from an environment that can never work (abort the run), and must show the operator
the line that matters. ``classify`` reads the exit code, the timeout flag and the whole log and
returns a ``CrashReport``; ``startup_crash`` is the same for a server that never became ready, with
the deadline or the exit status as the last resort. ``docs/architecture.md`` describes the taxonomy.

One job per module:

- ``report``: the vocabulary (``Category``, ``Phase``, ``CONFIG_CATEGORIES``, ``RUN_ABORTS``) and
  ``CrashReport``;
- ``logtext``: how vLLM's log lines are built (``vllm/logger.py``) and the lines that mark its
  lifecycle and wrap its errors;
- ``rules``: the messages vLLM prints when it refuses a configuration (``vllm/engine/arg_utils.py``,
  ``vllm/config/scheduler.py``, ``vllm/v1/core/kv_cache_utils.py``, ``vllm/v1/worker/gpu_worker.py``, ...)
  and the repair for each;
- ``scan``: the single pass over the log that gathers what the verdict needs;
- ``verdict``: ``classify`` and ``startup_crash``, and the order in which the facts are trusted (not
  named ``classify.py``, so that the function exported here does not shadow its own module).
"""

from __future__ import annotations

from .logtext import exit_code_from_log, strip_log_prefix
from .report import CONFIG_CATEGORIES, RUN_ABORTS, Category, CrashReport, Phase, aborts_run
from .verdict import classify, startup_crash

__all__ = [
    "CONFIG_CATEGORIES",
    "RUN_ABORTS",
    "Category",
    "CrashReport",
    "Phase",
    "aborts_run",
    "classify",
    "exit_code_from_log",
    "startup_crash",
    "strip_log_prefix",
]
