"""The single pass over a server's log: the first rule that matches, and what surrounds the failure.

A log can be a megabyte of access lines before the one that matters, so it is read once, line by
line, and every fact the classifier may need is noted on the way: the first line a rule in
``rules.py`` matches, when the server became ready (uvicorn's ``Application startup complete``), when
it was told to stop (``[shutdown] API server: shutdown triggered``, printed by
``vllm/entrypoints/launchers/launcher.py``), whether the engine died, the ``non-default args`` line
(``vllm/entrypoints/serve/utils/api_utils.py``) that the repairs read flag values from, and the last
progress line, which tells where a hung server stopped.

Exceptions are sorted by who printed them. The first error from an engine-core or worker process
(named ``EngineCore`` in ``vllm/v1/engine/core.py``, ``Worker``/``VllmWorker-N`` in
``vllm/v1/executor/multiproc_executor.py``) is the most likely root cause, because the API server only
re-raises it; an exception line that is a wrapper (``logtext.WRAPPER``) is never kept as one. Python
frames and their source lines are skipped: they are code, not messages. Lines after the shutdown
request are teardown: they may mention dead engines without anything having failed.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field

from .logtext import (
    ACCESS_LOG,
    ANSI,
    CARETS,
    DEATH,
    ENGINE_ARGS,
    EXC_LINE,
    FRAME,
    INIT_FAILED,
    PREFIX,
    PYD_FIELD,
    PYD_HEADER,
    READY,
    SHUTDOWN,
    TRAILER,
    WORKER_WRAP,
    WRAPPER,
)
from .rules import ANY_RULE, RULES, Rule

#: How many of the last lines a report shows when no single line explains the failure.
EVIDENCE_LINES = 5


@dataclass(frozen=True)
class Hit:
    """The first line a rule matched, with what the repair needs to know about its context."""

    index: int
    rule: Rule
    match: re.Match[str]
    line: str
    pydantic_field: str | None
    stage: str


@dataclass
class Scan:
    """What one pass over the log found (mutable while scanning, read-only afterwards)."""

    lines: list[str]
    hit: Hit | None = None
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
    tail: deque[tuple[int, str]] = field(default_factory=lambda: deque(maxlen=EVIDENCE_LINES))


def _is_block_proc(proc: str | None) -> bool:
    return proc is not None and proc.startswith(("EngineCore", "Worker", "VllmWorker"))


def scan_log(text: str) -> Scan:
    """Read the log once and note everything the classification may use."""
    if "\x1b" in text:
        text = ANSI.sub("", text)
    scan = Scan(lines=text.splitlines())
    after_frame: dict[str, bool] = {}
    pyd_index, pyd_field = -100, None
    for i, raw in enumerate(scan.lines):
        m = PREFIX.match(raw)
        proc, level = (m.group("proc"), m.group("level")) if m else (None, None)
        msg = raw[m.end() :] if m else raw
        line = msg.strip()
        if not line:
            continue
        key = proc or ""
        if FRAME.match(line):
            after_frame[key] = True
            continue
        if after_frame.get(key):
            after_frame[key] = False
            if msg[:1].isspace():  # the source line of the frame above: code, not a message
                continue
        if CARETS.match(line) or TRAILER.match(line):
            continue
        errorish = level is None or level in ("ERROR", "CRITICAL")
        plain_stream = level is None
        if plain_stream and line == "Traceback (most recent call last):" and scan.shutdown_index is None:
            scan.plain_traceback = True
        if scan.ready_index is None and READY in line:
            scan.ready_index = i
        if not scan.engine_args and ENGINE_ARGS in line:
            scan.engine_args = line
        if scan.shutdown_index is None and SHUTDOWN.search(line):
            scan.shutdown_index = i
        live = scan.shutdown_index is None
        if live and scan.death is None and DEATH.search(line):
            scan.death = (i, line)
        if PYD_HEADER.search(line):
            pyd_index, pyd_field = i, None
        elif i - pyd_index < 12 and not msg[:1].isspace() and PYD_FIELD.match(line):
            pyd_field = line
        if scan.hit is None and errorish and not line.startswith("INFO:") and ANY_RULE.search(line):
            for rule in RULES:
                hit = rule.regex.search(line)
                if hit:
                    field_name = pyd_field if i - pyd_index < 12 else None
                    scan.hit = Hit(i, rule, hit, line, field_name, scan.last_progress)
                    break
        if errorish and live:
            _note_exception(scan, i, proc, line)
        if "[shutdown]" in line and scan.stopping_index is None:
            scan.stopping_index = i
        if scan.stopping_index is None and not ACCESS_LOG.match(line):
            scan.tail.append((i, line))
            if level in ("INFO", "WARNING", "DEBUG") or (plain_stream and not EXC_LINE.match(line)):
                scan.last_progress = line
    return scan


def _note_exception(scan: Scan, i: int, proc: str | None, line: str) -> None:
    """Remember the exception lines a root cause may come from, wrappers apart."""
    wrapped = WORKER_WRAP.search(line)
    if wrapped and scan.worker_msg is None:
        scan.worker_msg = (i, wrapped.group("msg"))
    failed = INIT_FAILED.search(line)
    if failed and scan.init_failed is None:
        scan.init_failed = (i, failed.group("procs"))
    if not EXC_LINE.match(line):
        return
    if WRAPPER.search(line):
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
