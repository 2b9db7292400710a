"""What a person sees while tuning, and the table of every trial at the end.

On a terminal a live status line (trial n/N, phase, best so far, crashes by category, guarded and
reused counts, ETA) sits below one line per trial; in CI logs (stdout not a TTY) the same per-trial
lines are printed plainly, one each, so a log shows the run as it went; ``--quiet`` prints nothing.
The ETA is the mean *wall* time of the counted trials so far times the trials left (in virtual mode
the trial cost is simulated time, which says nothing about how long the run takes).

Crash categories are shown as the study stores them, in one column and in the status line:
``oom``, ``config_invalid``, ``timeout``, ``engine_error`` (the config's) and ``environment`` or
``request_error`` (no config's: the machine, or a workload the server refuses). A trial of one of the
last two stops the run; its line (not stored) is the last one shown, with the whole cause.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .engine.crash import aborts_run
from .outcome import Outcome, TrialPhase, TrialStatus
from .search.objective import Objective

if TYPE_CHECKING:
    from .search.result import Candidate, TrialRecord, TuneResult

PLAIN_WIDTH = 200  # rich's table width when stdout is not a terminal (CI logs)
CAUSE_CHARS = 120  # a failed trial's cause in its line; a run-stopping one is shown whole (up to 400)


@dataclass
class TuneStatus:
    """The loop's running totals, updated by the tuner as each record is stored."""

    budget: int
    objective: Objective
    counted: int = 0
    next_trial: int = 0
    phase: str = TrialPhase.UNSET
    best: TrialRecord | None = None
    crashes: Counter[str] = field(default_factory=Counter)
    guarded: int = 0
    reused: int = 0
    confirmations: int = 0
    cost_s: float = 0.0  # every record, confirmations included
    search_cost_s: float = 0.0  # counted search trials (what the time budget bounds)
    wall_s: float = 0.0  # wall time of the counted search trials

    def eta_s(self) -> float | None:
        if self.counted == 0:
            return None
        return max(self.budget - self.counted, 0) * self.wall_s / self.counted


class Progress(Protocol):
    """Receives the run as it happens (the tuner calls these in this order)."""

    def start(self, status: TuneStatus, *, study_name: str, storage: str, resumed: int) -> None: ...

    def update(self, record: TrialRecord, status: TuneStatus) -> None: ...

    def note(self, text: str) -> None: ...

    def finish(self, result: TuneResult) -> None: ...

    def close(self) -> None: ...


# --- formatting -------------------------------------------------------------------------------------

_SHORT = {
    "max_num_seqs": "seqs",
    "max_num_batched_tokens": "tokens",
    "gpu_memory_utilization": "gmu",
    "kv_cache_memory_bytes": "kv",
    "block_size": "block",
    "max_cudagraph_capture_size": "graphs",
    "kv_cache_dtype": "kv_dtype",
    "enable_chunked_prefill": "chunked",
    "enable_prefix_caching": "prefix",
    "max_model_len": "len",
}


def knobs_text(config: Mapping[str, Any]) -> str:
    """A compact one-line view of a config: ``seqs=64 tokens=2048 gmu=0.9 -O2 +chunked -prefix``."""
    parts = []
    for name, value in config.items():
        short = _SHORT.get(name, name)
        if name == "optimization_level":
            parts.append(f"-O{value}")
        elif isinstance(value, bool):
            parts.append(("+" if value else "-") + short)
        elif name == "kv_cache_memory_bytes":
            parts.append(f"{short}={value / 2**30:.2f}GiB")
        else:
            parts.append(f"{short}={value}")
    return " ".join(parts)


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def primary_label(objective: Objective) -> str:
    slo = objective.primary
    return f"{slo.stat} {slo.metric.upper()} ms"


def primary_value(outcome: Outcome, objective: Objective) -> str:
    value = outcome.metrics.get(objective.primary.result_key)
    return "—" if value is None or outcome.failed else f"{float(value):.1f}"


def capacity_value(outcome: Outcome) -> str:
    return "—" if outcome.objective is None or outcome.failed else f"{outcome.objective:.2f}"


def violation_text(outcome: Outcome) -> str:
    if outcome.failed:
        return "—"
    v = outcome.violation
    return f"{v:+.2f}" if v == v and abs(v) != float("inf") else "—"


def status_text(record: TrialRecord) -> str:
    outcome = record.outcome
    if outcome.reused_from is not None:
        return f"{outcome.status} (=#{outcome.reused_from})"
    return outcome.status


def trial_line(record: TrialRecord, status: TuneStatus) -> str:
    """One plain line per trial (CI logs, and above the live status on a terminal)."""
    outcome = record.outcome
    objective = status.objective
    if record.is_confirm:
        head = f"confirm #{record.number:<3}"
    else:
        head = f"trial {record.number:>3} [{status.counted}/{status.budget}]"
    figures = f"{primary_label(objective)} {primary_value(outcome, objective)}"
    if objective.kind == "capacity":
        figures += f", capacity {capacity_value(outcome)} req/s"
    if outcome.failed:
        limit = 400 if aborts_run(outcome.category) else CAUSE_CHARS
        figures = (outcome.root_cause or "").strip().splitlines()[0][:limit] if outcome.root_cause else ""
    category = f" {outcome.category}" if outcome.category else ""
    cost = "" if not record.counted and not record.is_confirm else f" cost {duration_text(record.cost_s)}"
    return (
        f"{head} {outcome.phase:<8} {status_text(record)}{category}: {figures}"
        f" | violation {violation_text(outcome)} | {knobs_text(outcome.config)}{cost}"
    )


def status_line(status: TuneStatus) -> Text:
    """The live summary: trial n/N, phase, best so far, crashes, guarded, reused, ETA."""
    text = Text()
    text.append(f"trial {min(status.counted + 1, status.budget)}/{status.budget}", style="bold")
    text.append(f" · {status.phase or 'starting'}")
    best = status.best
    if best is not None and not best.outcome.failed:
        label = "best" if best.outcome.feasible else "closest"
        value = primary_value(best.outcome, status.objective)
        text.append(f" · {label}: #{best.number} {primary_label(status.objective)} {value}", style="green")
        if status.objective.kind == "capacity":
            text.append(f" ({capacity_value(best.outcome)} req/s)", style="green")
    if status.crashes:
        crashes = ", ".join(f"{cat} {n}" for cat, n in sorted(status.crashes.items()))
        text.append(f" · crashes: {crashes}", style="red")
    if status.guarded:
        text.append(f" · guarded {status.guarded}", style="yellow")
    if status.reused:
        text.append(f" · reused {status.reused}")
    text.append(f" · ETA {duration_text(status.eta_s())}")
    return text


def result_table(result: TuneResult) -> Table:
    """Every trial: number, phase, status, category, the primary metric, violation, knobs, cost."""
    objective = result.objective
    winner = result.winner
    table = Table(title=f"study {result.study_name}", title_justify="left", show_lines=False)
    table.add_column("trial", justify="right")
    table.add_column("phase")
    table.add_column("status")
    table.add_column("category")
    table.add_column(primary_label(objective), justify="right")
    if objective.kind == "capacity":
        table.add_column("req/s", justify="right")
    table.add_column("violation", justify="right")
    table.add_column("knobs", overflow="fold")
    table.add_column("cost", justify="right")
    styles = {"ok": "green", "slo_violation": "yellow", "crash": "red", "guarded": "magenta"}
    for record in result.trials:
        outcome = record.outcome
        mark = ""
        if winner is not None and record.number == winner.trial and record.is_confirm == winner.confirmed:
            mark = " *"
        row: list[str | Text] = [
            f"{record.number}{mark}",
            outcome.phase,
            Text(status_text(record), style=styles.get(outcome.status, "")),
            Text(outcome.category or "", style="bold red" if aborts_run(outcome.category) else ""),
            primary_value(outcome, objective),
        ]
        if objective.kind == "capacity":
            row.append(capacity_value(outcome))
        row += [violation_text(outcome), knobs_text(outcome.config), duration_text(record.cost_s)]
        table.add_row(*row)
    return table


def summary_lines(result: TuneResult) -> list[str]:
    """The verdict under the table: the winner and its command, or the closest miss; crashes; the study."""
    from .export import serve_command

    objective = result.objective
    lines: list[str] = []
    n_search = sum(1 for r in result.trials if not r.is_confirm)
    if result.winner is not None:
        lines.append(f"winner: {_candidate_text(result.winner, objective)}")
        lines.append(f"  {serve_command(result.spec.model, result.winner.argv)}")
        if result.runner_ups:
            lines.append("runner-ups: " + ", ".join(f"#{c.trial}" for c in result.runner_ups))
    else:
        lines.append(f"no configuration met every SLO in {n_search} trials")
        if result.best_miss is not None:
            lines.append(f"closest: {_candidate_text(result.best_miss, objective)}")
    counts = result.counts
    if counts.crashes:
        lines.append("crashes: " + ", ".join(f"{cat} {n}" for cat, n in sorted(counts.crashes.items())))
        for cat in sorted(counts.crashes):
            causes = (
                r.outcome.root_cause
                for r in result.trials
                if r.outcome.status == TrialStatus.CRASH and r.outcome.category == cat
            )
            cause = next((c for c in causes if c), None)
            if cause:
                lines.append(f"  {cat}: {cause.strip().splitlines()[0][:200]}")
    if counts.guarded:
        by_cat = ", ".join(f"{cat} {n}" for cat, n in sorted(counts.guarded_by_category.items()))
        lines.append(f"guarded (never launched): {counts.guarded} ({by_cat})")
    if counts.reused:
        lines.append(f"reused (already evaluated, not counted): {counts.reused}")
    lines.extend(f"note: {note}" for note in result.notes)
    lines.append(f"total trial cost: {duration_text(result.total_cost_s)}")
    lines.append(f"study: {result.study_name} in {result.storage} (re-run the same command to resume or extend it)")
    return lines


def _candidate_text(candidate: Candidate, objective: Objective) -> str:
    outcome = candidate.outcome
    if outcome.feasible:
        tag = "confirmed" if candidate.confirmed else "not confirmed"
    else:
        tag = "re-measured" if candidate.confirmed else "search trial"
    figures = f"{primary_label(objective)} {primary_value(outcome, objective)}"
    text = f"trial {candidate.trial} ({tag}, {outcome.status}): {figures}"
    if objective.kind == "capacity":
        text += f", capacity {capacity_value(outcome)} req/s"
    if not outcome.feasible:
        text += f", violation {violation_text(outcome)}"
        if outcome.failed and outcome.root_cause:
            text += f" ({outcome.category}: {outcome.root_cause.strip().splitlines()[0][:160]})"
    return text


def _console(stream: TextIO) -> Console:
    if stream.isatty():
        return Console(file=stream)
    return Console(file=stream, width=PLAIN_WIDTH, no_color=True, highlight=False, force_terminal=False)


def _start_text(status: TuneStatus, study_name: str, storage: str, resumed: int) -> str:
    head = f"study {study_name} ({storage})"
    if resumed:
        return f"{head}: resuming after {resumed} stored trials ({status.counted}/{status.budget} counted)"
    return f"{head}: {status.objective.describe()}; budget {status.budget} trials"


# --- the three faces --------------------------------------------------------------------------------


class NullProgress:
    """``--quiet``: nothing at all."""

    def start(self, status: TuneStatus, *, study_name: str, storage: str, resumed: int) -> None:
        pass

    def update(self, record: TrialRecord, status: TuneStatus) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def finish(self, result: TuneResult) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class PlainProgress:
    """One line per trial, for logs; the final table rendered without colour."""

    stream: TextIO

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def start(self, status: TuneStatus, *, study_name: str, storage: str, resumed: int) -> None:
        self._print(_start_text(status, study_name, storage, resumed))

    def update(self, record: TrialRecord, status: TuneStatus) -> None:
        self._print(trial_line(record, status))

    def note(self, text: str) -> None:
        self._print(f"note: {text}")

    def finish(self, result: TuneResult) -> None:
        _console(self.stream).print(result_table(result))
        for line in summary_lines(result):  # plain prints: a command line must never be wrapped
            self._print(line)

    def close(self) -> None:
        pass


@dataclass
class LiveProgress:
    """A terminal: trial lines scroll above a live status line."""

    console: Console
    live: Live | None = None

    def start(self, status: TuneStatus, *, study_name: str, storage: str, resumed: int) -> None:
        self.console.print(_start_text(status, study_name, storage, resumed), markup=False, highlight=False)
        self.live = Live(status_line(status), console=self.console, refresh_per_second=4, transient=True)
        self.live.start()

    def update(self, record: TrialRecord, status: TuneStatus) -> None:
        self.console.print(trial_line(record, status), markup=False, highlight=False, soft_wrap=True)
        if self.live is not None:
            self.live.update(status_line(status), refresh=True)

    def note(self, text: str) -> None:
        self.console.print(f"note: {text}", markup=False, highlight=False)

    def finish(self, result: TuneResult) -> None:
        self.close()
        self.console.print(result_table(result))
        for line in summary_lines(result):
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


def make_progress(quiet: bool = False, stream: TextIO | None = None) -> Progress:
    """Silent with ``quiet``; live on a terminal; plain lines otherwise."""
    if quiet:
        return NullProgress()
    stream = stream or sys.stdout
    if stream.isatty():
        return LiveProgress(_console(stream))
    return PlainProgress(stream)
