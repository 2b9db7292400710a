"""The verdict: which of the facts the scan found explains the failure, in order of trust.

The tuner must tell a configuration vLLM refuses, or that runs out of memory, from a machine where
nothing can work, and must show the operator the line that matters. vLLM makes that hard three
ways: it wraps the real error several times (worker, engine core, API server); its API server exits
with status 0 when the engine dies after startup (``EngineDeadError``, ``vllm/v1/engine/exceptions.py``,
raised through ``vllm/v1/engine/async_llm.py``); and a hung server says nothing at all. So the exit
status alone means little, and the decision is taken in this order:

1. a specific message a rule knows (``rules.py``) decides, even under a timeout or a zero status;
2. an engine death we did not ask for is an engine error, with the innermost exception as its cause;
3. a timeout shows where the server hung (the last progress line) and a repair for that stage;
4. a signal with nothing specific logged is reported as the signal (9: probably the OOM killer);
5. any other failed exit, top-level traceback, or exit after readiness nobody asked for is an engine
   error with the best exception line, the dead process named by ``Engine core initialization
   failed`` (``vllm/v1/engine/utils.py``), or the last line.

A failure after the server became ready is reported in the measurement phase, whatever the caller
says, because that is when the configuration was judged. ``docs/architecture.md`` describes the
taxonomy this produces.
"""

from __future__ import annotations

import signal

from .logtext import PROC_CODE, TRAILER, WORKER_WRAP, clean, strip_log_prefix
from .report import Category, CrashReport, Phase, timeout_suggestion
from .rules import Facts
from .scan import Scan, scan_log

#: The longest evidence line a report keeps (a pydantic dump can be kilobytes on one line).
_EVIDENCE_WIDTH = 400


def _evidence(scan: Scan, index: int, also: int | None = None) -> tuple[str, ...]:
    """The lines around the root cause (and the line that announced the failure, if elsewhere)."""
    wanted = list(range(max(0, index - 2), min(len(scan.lines), index + 3)))
    if also is not None and also not in wanted:
        wanted.insert(0 if also < index else len(wanted), also)
    out: list[str] = []
    for i in wanted:
        text = strip_log_prefix(scan.lines[i]).strip()
        if text and not TRAILER.match(text):
            out.append(text[:_EVIDENCE_WIDTH])
    return tuple(out)


def _tail_evidence(scan: Scan) -> tuple[str, ...]:
    return tuple(text[:_EVIDENCE_WIDTH] for _, text in scan.tail)


def _signal_of(exit_code: int | None) -> int | None:
    """The signal that ended the process: negative codes from Popen, 128+N from a shell."""
    if exit_code is None:
        return None
    if exit_code < 0:
        return -exit_code
    if 128 < exit_code < 128 + 65:
        return exit_code - 128
    return None


def _signal_text(signum: int, exit_code: int | None) -> tuple[str, str]:
    """The root cause and suggestion for a process ended by a signal and nothing in its log."""
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    via = f" (exit code {exit_code})" if exit_code is not None and exit_code > 0 else ""
    if signum == signal.SIGKILL:
        return (
            f"killed by signal 9{via} (the host may have run out of memory)",
            "check the kernel log for the OOM killer (dmesg); if it fired, lower --gpu-memory-utilization, "
            "--kv-cache-memory-bytes or --max-num-seqs",
        )
    return (
        f"killed by signal {signum} ({name}){via}",
        "rerun to check it is reproducible; a native crash (SIGSEGV, SIGABRT) often goes away with --enforce-eager",
    )


def _generic_cause(scan: Scan) -> tuple[int, str] | None:
    """The most specific exception line when no rule matched: inner first, wrappers last."""
    for found in (scan.block_exc, scan.worker_msg, scan.plain_exc, scan.error_exc):
        if found:
            return found[0], clean(found[1])
    return None


def _init_failure_cause(scan: Scan) -> tuple[int, str, str] | None:
    """Turn "Engine core initialization failed ... {'EngineCore': -9}" into what happened to the process."""
    if scan.init_failed is None:
        return None
    index, procs = scan.init_failed
    for m in PROC_CODE.finditer(procs):
        code = int(m.group("code"))
        signum = _signal_of(code)
        if signum is not None:
            cause, suggestion = _signal_text(signum, None)
            return index, f"{m.group('proc')} {cause} during startup", suggestion
        return (
            index,
            f"{m.group('proc')} exited with code {code} during startup without logging an error",
            ("rerun with VLLM_LOGGING_LEVEL=DEBUG to see where the engine stopped"),
        )
    return None


def classify(
    log_text: str,
    *,
    exit_code: int | None = None,
    phase: str = "startup",
    timed_out: bool = False,
    ready: bool | None = None,
) -> CrashReport | None:
    """Classify a vLLM server's failure, or return None for a clean run.

    ``log_text`` is the server's combined stdout and stderr; ``exit_code`` is None while it still runs
    (negative: killed by that signal); ``timed_out`` says the tuner gave up waiting (startup deadline
    or no progress while measuring); ``ready`` overrides what the log says about readiness (the
    uvicorn ``Application startup complete.`` line). A failure after readiness reports the
    measurement phase whatever ``phase`` says. Linear in the log's size.
    """
    given_phase = Phase(phase)
    scan = scan_log(log_text)
    was_ready = ready if ready is not None else scan.ready_index is not None

    def after_ready(index: int) -> bool:
        if ready is not None:
            return ready
        return scan.ready_index is not None and index > scan.ready_index

    def report(
        category: Category,
        index: int | None,
        cause: str,
        suggestion: str,
        pattern: str,
        also: int | None = None,
        flags: tuple[str, ...] = (),
    ) -> CrashReport:
        late = after_ready(index) if index is not None else was_ready
        evidence = _evidence(scan, index, also) if index is not None else _tail_evidence(scan)
        return CrashReport(
            category=category,
            root_cause=cause,
            suggestion=suggestion,
            pattern=pattern,
            evidence=evidence,
            exit_code=exit_code,
            phase=Phase.MEASUREMENT if late else given_phase,
            flags=flags,
        )

    # 1. A specific message anywhere: it decides, even under a timeout or a zero exit status.
    if scan.hit is not None:
        hit = scan.hit
        facts = Facts(scan.engine_args, hit.stage, after_ready(hit.index), hit.pydantic_field)
        wrapped = WORKER_WRAP.search(hit.line)
        cause = clean(wrapped.group("msg") if wrapped else hit.line)
        if hit.rule.name == "pydantic_field" and hit.pydantic_field:
            cause = f"{hit.pydantic_field}: {cause}"
        suggestion = hit.rule.suggest(hit.match, facts)
        return report(hit.rule.category, hit.index, cause, suggestion, hit.rule.name, flags=hit.rule.flags(hit.match))

    generic = _generic_cause(scan)

    # 2. The engine died (EngineDeadError, a fatal EngineCore error), not because we stopped it.
    if scan.death is not None:
        marker_index, marker = scan.death
        index = marker_index
        if generic:
            index, cause = generic
        elif scan.dead_exc:
            index, cause = scan.dead_exc
        else:
            cause = clean(marker)
        return report(
            Category.ENGINE_ERROR,
            index,
            cause,
            "the engine process died (killed or crashed): check the kernel log for the OOM killer (dmesg) and rerun "
            "to see whether it is reproducible",
            "engine_dead",
            also=marker_index,
        )

    # 3. The tuner gave up waiting: show where it hung.
    if timed_out:
        last = scan.tail[-1] if scan.tail else None
        cause = clean(last[1]) if last else "no output before the deadline"
        return report(Category.TIMEOUT, None, cause, timeout_suggestion(cause, given_phase, was_ready), "timeout")

    # 4. Killed by a signal with nothing specific logged.
    signum = _signal_of(exit_code)
    if signum is not None:
        cause, suggestion = _signal_text(signum, exit_code)
        return report(Category.ENGINE_ERROR, None, cause, suggestion, "signal")

    # 5. Any other failed exit, a top-level traceback, or an exit after readiness we did not ask for.
    unasked_exit = was_ready and exit_code == 0 and scan.shutdown_index is None
    if (exit_code not in (None, 0)) or scan.plain_traceback or unasked_exit:
        init = _init_failure_cause(scan)
        if generic:
            index, cause = generic
            suggestion = "rerun once to see whether it is reproducible; if it is, the last changed option is to blame"
        elif init:
            index, cause, suggestion = init
        elif scan.tail:
            index, cause = scan.tail[-1][0], clean(scan.tail[-1][1])
            suggestion = "rerun once to see whether it is reproducible; the log names no specific error"
        else:
            return report(
                Category.ENGINE_ERROR,
                None,
                f"exited with code {exit_code} without any output",
                "run the server by hand with the same arguments to see why it stops",
                "exit_without_output",
            )
        if was_ready and not generic and not init:
            cause = f"the server exited with code {exit_code} after it was ready; last line: {cause}"
        return report(Category.ENGINE_ERROR, index, cause, suggestion, "unrecognized_failure")
    return None


def startup_crash(log_text: str, exit_code: int | None, *, timed_out: bool, deadline_s: float) -> CrashReport:
    """Why a server never became ready: the log's own cause, else the deadline, else its exit status."""
    report = classify(log_text, exit_code=exit_code, phase="startup", timed_out=timed_out, ready=False)
    if report is not None:
        return report
    if timed_out:
        return CrashReport.startup_timeout(deadline_s)
    return CrashReport.engine_died(f"the server exited with status {exit_code} before it became ready", exit_code)
