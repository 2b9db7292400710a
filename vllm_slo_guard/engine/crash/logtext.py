"""How vLLM's log lines are built, and the lines that mark its lifecycle.

vLLM's logger (``vllm/logger.py``) starts every line with ``(Proc pid=N) LEVEL MM-DD hh:mm:ss
[file:line]`` and may colour it (``vllm/logging_utils/formatter.py``); a subprocess's own prints carry
only the ``(Proc pid=N)`` half, and older versions print no process at all. The message after the
prefix is what the operator needs, so root causes and evidence are shown without it.

Root causes are reported as vLLM printed them, minus the prefix, ANSI colours and pydantic's
``[type=...]`` trailer. The class prefix is dropped only for the builtin exceptions vLLM uses to carry
its own messages (``ValueError``, ``RuntimeError``, ``NotImplementedError``, ``AssertionError``,
``TypeError``) and for pydantic's ``Value error,`` (how a ``ValueError`` raised while a config class
validates itself, as in ``vllm/config/scheduler.py``, reaches the log); other classes (``OSError``,
``torch.OutOfMemoryError``, ``EngineDeadError``, ...) say something and are kept.

vLLM wraps the real error several times: the worker's exception is re-raised as ``Worker failed with
error '...'`` (``vllm/v1/executor/multiproc_executor.py``), the engine core's as ``EngineCore failed
to start`` (``vllm/v1/engine/core.py``), and the API server ends with ``Engine core initialization
failed. See root cause above`` (``vllm/v1/engine/utils.py``) or ``EngineDeadError``
(``vllm/v1/engine/exceptions.py``). Those wrapper lines only point elsewhere, so they are listed here
for the classifier never to report them while anything better exists.
"""

from __future__ import annotations

import re

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
# `(EngineCore pid=N) ERROR 11-30 16:33:46 [core.py:1510] msg`; either half may be missing: old vLLM
# prints no process, and a subprocess's own prints carry only the `(Proc pid=N)` decoration.
PREFIX = re.compile(
    r"^(?:\((?P<proc>[\w-]+) pid=\d+\) ?)?"
    r"(?:(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) \d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? \[?[^\]\s]+\] ?)?"
)
TRAILER = re.compile(r"^EXIT_CODE=(?P<code>-?\d+)\s*$")
FRAME = re.compile(r'^File "[^"]*", line \d+')
CARETS = re.compile(r"^[\^~ ]+$")
ACCESS_LOG = re.compile(r'^INFO: +\S+:\d+ - "')
EXC_LINE = re.compile(r"^(?:[A-Za-z_]\w*\.)*(?P<cls>[A-Za-z_]\w*(?:Error|Exception))(?::\s*(?P<msg>.*))?$")
_BUILTIN_CLASS = re.compile(
    r"^(?:builtins\.)?(?:ValueError|RuntimeError|NotImplementedError|AssertionError|TypeError): "
)
PYD_HEADER = re.compile(r"\d+ validation errors? for (?P<cls>\w+)\s*$")
PYD_FIELD = re.compile(r"^[A-Za-z_][\w.\[\]-]*$")
_PYD_TRAILER = re.compile(r"\s*\[type=\w+(?:,.*)?\]?\s*$")

# --- lifecycle markers --------------------------------------------------------------------------------
READY = "Application startup complete"
ENGINE_ARGS = "non-default args: "
# The tuner (or an operator) asked the API server to stop: engine "deaths" after this are the shutdown.
SHUTDOWN = re.compile(r"\[shutdown\] API server: shutdown triggered")
DEATH = re.compile(
    r"EngineDeadError|EngineCore encountered a fatal error|engine core exited unexpectedly"
    r"|(?:Worker|Engine core) proc \S+ died unexpectedly"
)
# Lines that only say "something failed, see above": never a root cause while anything better exists.
WRAPPER = re.compile(
    r"Engine core initialization failed|Worker failed with error '|EngineCore failed to start"
    r"|WorkerProc hit an exception|EngineDeadError|EngineCore encountered (?:a fatal error|an issue)"
    r"|AsyncLLM output_handler failed|died unexpectedly|engine core exited unexpectedly"
    r"|\d+ validation errors? for \w+\s*$"
)
WORKER_WRAP = re.compile(r"Worker failed with error '(?P<msg>.+?)', please check the stack trace above")
INIT_FAILED = re.compile(
    r"Engine core initialization failed\. See root cause above\. Failed core proc\(s\): \{(?P<procs>[^}]*)\}"
)
PROC_CODE = re.compile(r"'(?P<proc>[\w-]+)': (?P<code>-?\d+)")


def strip_log_prefix(line: str) -> str:
    """``line`` without ANSI colours and vLLM's ``(Proc pid=N) LEVEL MM-DD hh:mm:ss [file:line]`` prefix."""
    line = ANSI.sub("", line)
    m = PREFIX.match(line)
    return line[m.end() :] if m else line


def exit_code_from_log(log_text: str) -> int | None:
    """The status in an ``EXIT_CODE=N`` trailer line (as the reference logs end), else None."""
    for line in reversed(log_text.rstrip().splitlines()[-5:]):
        m = TRAILER.match(line.strip())
        if m:
            return int(m.group("code"))
    return None


def clean(line: str) -> str:
    """The message as vLLM printed it, without noise: pydantic's trailer, a generic class prefix."""
    line = _PYD_TRAILER.sub("", line).strip()
    line = line.removeprefix("Value error, ")
    return _BUILTIN_CLASS.sub("", line, count=1)
