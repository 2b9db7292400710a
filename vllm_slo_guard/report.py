"""``vllm-tune report``: a stored study as a table, two figures and one self-contained HTML page.

Why a report reads the study alone: a tuning run may have ended hours ago, on another machine; every
trial's whole Outcome is in the study (see ``search.storage``), so nothing is re-run and no GPU is
needed. The terminal table *is* tune's final table (``progress.result_table``) with the root cause
and the other SLO metrics added as columns, so the two can never disagree about a trial. The figures
need matplotlib, an optional extra (``vllm-slo-guard[report]``): without it the table and
``index.html`` are still written. The HTML embeds the figures as base64 PNG and links nothing, so it
can be attached to a ticket or kept as a CI artifact as one file.

- ``best_so_far.png``: the best feasible objective by trial, each trial marked by its outcome, a line
  at the TBA → TPE handoff (the first ``exploit`` trial), the confirmations in a band of their own;
- ``space.png``: max_num_seqs vs max_num_batched_tokens (log axes), coloured by outcome, the winner
  highlighted.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from rich.console import Console, RenderableType
from rich.table import Column, Table
from rich.text import Text

from .bench.workload import WorkloadSpec
from .engine.engines import flag_value
from .errors import InputError
from .export import result_document, result_from_study, serve_command, write_atomic
from .outcome import Outcome
from .progress import (
    PLAIN_WIDTH,
    duration_text,
    primary_label,
    primary_value,
    result_table,
    summary_lines,
    violation_text,
)
from .search.objective import Objective
from .search.storage import StudyError, TrialRecord, default_storage_url
from .search.tuner import Candidate, TuneResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FIGURES = ("best_so_far.png", "space.png")
MATPLOTLIB_HINT = 'pip install "vllm-slo-guard[report]" gives the figures (best_so_far.png, space.png)'
CAUSE_WIDTH = 60  # a root cause in the terminal table; the HTML page shows it whole
HANDOFF_PHASE = "exploit"  # SLO-Guard's TPE phase: its first trial is the handoff
DPI = 110
UNBOUNDED_WIDTH = 1000  # for measuring the table's natural width


@dataclass(frozen=True)
class OutcomeStyle:
    label: str
    color: str
    marker: str


# colour-blind-safe colours, and a marker per outcome so the figures also read in greyscale
STYLES = {
    "ok": OutcomeStyle("feasible", "#1b9e77", "o"),
    "slo_violation": OutcomeStyle("SLO miss", "#e6a000", "s"),
    "crash": OutcomeStyle("crash", "#d62728", "X"),
    "guarded": OutcomeStyle("guarded (never launched)", "#7b68c8", "v"),
}
WINNER_COLOR = "#ffd700"
STRIP_ROWS = {"guarded": 0, "crash": 1}  # failed trials have no value: a strip of their own above the plot


# --- reading --------------------------------------------------------------------------------------------


def load_result(storage: str | None, study: str) -> TuneResult:
    """The study's result from storage alone; a missing SQLite file is an error, never a new empty database."""
    url = storage or default_storage_url()
    path = _sqlite_path(url)
    if path is not None and not path.exists():
        raise StudyError(
            f"no study named {study!r}: {path} does not exist (run `vllm-tune tune` first or pass --storage)"
        )
    return result_from_study(url, study)


def _sqlite_path(url: str) -> Path | None:
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///") :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def public_url(url: str) -> str:
    """The storage URL without its password: reports get shared, database passwords must not."""
    return re.sub(r"(://[^/:@]+):[^/@]*@", r"\1:***@", url)


def default_out_dir(study: str) -> Path:
    return Path(f"vllm-tune-report-{study}")


# --- the table ------------------------------------------------------------------------------------------


def shorten(text: str | None, width: int | None = CAUSE_WIDTH) -> str:
    """A root cause's first line cut at a word near ``width``; ``None`` keeps the whole text."""
    text = (text or "").strip()
    if width is None or not text:
        return text
    line = text.splitlines()[0].strip()
    if len(line) <= width:
        return line
    cut = line[: width - 1]
    space = cut.rfind(" ")
    if space > width // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:(") + "…"


def trials_table(result: TuneResult, *, cause_width: int | None = CAUSE_WIDTH, repair_notes: bool = False) -> Table:
    """Tune's final table plus the root cause and the other SLO metrics (and, for HTML, the repair notes)."""
    records = result.trials
    causes: list[RenderableType] = [Text(shorten(r.outcome.root_cause, cause_width)) for r in records]
    inserts: dict[str, list[tuple[Column, list[RenderableType]]]] = {
        "category": [(Column("root cause", overflow="fold"), causes)],
        primary_label(result.objective): _other_slo_columns(result),
    }
    if repair_notes:
        notes: list[RenderableType] = [Text("\n".join(r.outcome.repair_notes)) for r in records]
        inserts["knobs"] = [(Column("repair notes", overflow="fold"), notes)]
    return _with_columns(result_table(result), inserts)


def _other_slo_columns(result: TuneResult) -> list[tuple[Column, list[RenderableType]]]:
    """One column per SLO after the primary one (a metric already shown is not repeated)."""
    seen = {result.objective.primary.result_key}
    columns: list[tuple[Column, list[RenderableType]]] = []
    for slo in result.spec.slos[1:]:
        if slo.result_key in seen:
            continue
        seen.add(slo.result_key)
        single = Objective("latency", (slo,))  # primary_* read only the first SLO: reuse them per SLO
        values: list[RenderableType] = [primary_value(r.outcome, single) for r in result.trials]
        columns.append((Column(primary_label(single), justify="right"), values))
    return columns


def _with_columns(base: Table, inserts: Mapping[str, Sequence[tuple[Column, Sequence[RenderableType]]]]) -> Table:
    """A copy of ``base`` with extra columns after the named ones (at the end when the name is gone)."""
    plan: list[tuple[Column, Sequence[RenderableType]]] = []
    for column in base.columns:
        plan.append((column, list(column.cells)))
        plan.extend(inserts.get(str(column.header), ()))
    headers = {str(c.header) for c in base.columns}
    plan.extend(extra for name, extras in inserts.items() if name not in headers for extra in extras)
    table = Table(title=base.title, title_justify=base.title_justify, show_lines=base.show_lines)
    for column, _ in plan:
        table.add_column(
            column.header, justify=column.justify, overflow=column.overflow, style=column.style, no_wrap=column.no_wrap
        )
    for i, row in enumerate(base.rows):
        table.add_row(*(cells[i] for _, cells in plan), style=row.style, end_section=row.end_section)
    return table


def print_table(result: TuneResult, stream: TextIO) -> None:
    """The table and tune's verdict lines; in a log or a pipe, rows are never wrapped."""
    table = trials_table(result)
    if stream.isatty():
        console = Console(file=stream)
    else:
        console = Console(file=stream, width=UNBOUNDED_WIDTH, no_color=True, highlight=False, force_terminal=False)
        console.width = max(PLAIN_WIDTH, console.measure(table).maximum)  # its natural width: no folded rows
    console.print(table)
    for line in summary_lines(result):
        if not line.startswith("study: "):  # tune's "re-run to resume" hint; said below for a report
            print(line, file=stream)
    print(f"study: {result.study_name} in {public_url(result.storage)}", file=stream, flush=True)


# --- JSON -----------------------------------------------------------------------------------------------


def trial_json(record: TrialRecord) -> dict[str, Any]:
    """One trial exactly as the study stores it (its user attrs), so ``--json`` round-trips with Optuna's."""
    data: dict[str, Any] = {
        "outcome": record.outcome.to_attrs(),
        "trial_number": record.number,
        "phase": record.phase,
        "counted": record.counted,
        "cost_s": record.cost_s,
        "wall_s": record.wall_s,
    }
    if record.confirm_after is not None:
        data["confirm_after"] = record.confirm_after
    return data


def report_json(result: TuneResult) -> dict[str, Any]:
    """The study, its spec, the winner (as ``export`` writes it), every trial and the counts."""
    doc = result_document(result)
    data = {
        "study": result.study_name,
        "storage": public_url(result.storage),
        "spec": result.spec.to_dict(),
        "vllm_version": result.vllm_version,
        "hardware": result.hardware,
        "fixed": result.fixed,
        "winner": doc.get("winner"),
        "runner_ups": doc.get("runner_up", []),
        "best_miss": doc.get("best_miss"),
        "handoff_trial": handoff_trial(result.trials),
        "counts": {**asdict(result.counts), "slo_misses": _slo_misses(result.trials)},
        "total_cost_s": result.total_cost_s,
        "notes": list(result.notes),
        "trials": [trial_json(r) for r in result.trials],
    }
    return _json_safe(data)


def _json_safe(value: Any) -> Any:
    """Strict JSON: NaN and infinities become null (a stored metric may be NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _slo_misses(records: Iterable[TrialRecord]) -> int:
    """Distinct search configs that ran and missed an SLO (TrialCounts has no such count)."""
    return sum(
        1 for r in records if not r.is_confirm and r.outcome.reused_from is None and r.outcome.status == "slo_violation"
    )


# --- the figures' data (plain functions, tested without matplotlib) --------------------------------------


def handoff_trial(records: Iterable[TrialRecord]) -> int | None:
    """The first TPE (``exploit``) trial of an SLO-Guard search; None for other searchers or before it."""
    return min((r.number for r in records if not r.is_confirm and r.phase == HANDOFF_PHASE), default=None)


def best_so_far(records: Iterable[TrialRecord], minimize: bool) -> list[tuple[int, float | None]]:
    """Per search trial, in order: the best feasible objective up to it (None before the first feasible)."""
    best: float | None = None
    out: list[tuple[int, float | None]] = []
    for record in sorted((r for r in records if not r.is_confirm), key=lambda r: r.number):
        value = _objective(record.outcome)
        better = value is not None and (best is None or (value < best if minimize else value > best))
        if record.outcome.feasible and better:
            best = value
        out.append((record.number, best))
    return out


def _objective(outcome: Outcome) -> float | None:
    value = outcome.objective
    return value if value is not None and math.isfinite(value) and not outcome.failed else None


def _scale(result: TuneResult) -> tuple[float, str]:
    """Objective → plotted value and axis label (latency in ms, vLLM's unit; capacity in req/s)."""
    if result.objective.kind == "latency":
        return 1000.0, primary_label(result.objective)
    return 1.0, "capacity (req/s meeting every SLO)"


def space_point(record: TrialRecord, fixed: Mapping[str, Any]) -> tuple[float, float] | None:
    """(max_num_seqs, max_num_batched_tokens) of a trial: tuned, ``--fix``-ed or pinned on the command line."""
    values = []
    for name in ("max_num_seqs", "max_num_batched_tokens"):
        value = record.outcome.config.get(name, fixed.get(name))
        if value is None:
            value = flag_value(record.outcome.argv, "--" + name.replace("_", "-"))
        try:
            number = float(value) if value is not None else math.nan
        except ValueError:
            number = math.nan
        if not number > 0:
            return None
        values.append(number)
    return values[0], values[1]


# --- the figures ----------------------------------------------------------------------------------------


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _is_winner(record: TrialRecord, winner: Candidate | None) -> bool:
    return winner is not None and record.number == winner.trial and record.is_confirm == winner.confirmed


def best_so_far_figure(result: TuneResult) -> Figure:
    """The search as it went: every trial by outcome, the best feasible so far, the handoff, confirmations."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.5, 5.8), layout="constrained")
    strip, ax = fig.subplots(2, 1, sharex=True, height_ratios=[1, 5])
    scale, label = _scale(result)
    search = sorted((r for r in result.trials if not r.is_confirm), key=lambda r: r.number)
    confirms = [r for r in result.trials if r.is_confirm]
    end = search[-1].number if search else -1
    positions = [(float(r.number), r) for r in search] + [(end + 1.0 + i, r) for i, r in enumerate(confirms)]
    _plot_trials(ax, strip, positions, scale)
    _star_winner(ax, positions, result.winner, scale)
    steps = [(n, value * scale) for n, value in best_so_far(search, result.spec.minimize) if value is not None]
    if steps:
        xs, ys = zip(*steps, strict=True)
        ax.step(xs, ys, where="post", color="black", linewidth=1.6, zorder=2)
    else:
        ax.text(0.01, 0.97, "no feasible trial", transform=ax.transAxes, ha="left", va="top", color="grey")
    if result.objective.kind == "latency":
        ax.axhline(result.objective.primary.threshold_s * 1000, color="grey", linestyle=":", linewidth=1.2)
    handoff = handoff_trial(search)
    for axes in (strip, ax):
        if handoff is not None:
            axes.axvline(handoff, color="#3060c0", linestyle="--", linewidth=1.2, zorder=1, gid="handoff")
        if confirms:
            axes.axvspan(end + 0.5, end + len(confirms) + 0.5, color="#eeeeee", zorder=0)
    _log_if_wide(ax, [v for _, r in positions if (v := _objective(r.outcome)) is not None], scale)
    _trial_ticks(ax, search, confirms, end)
    if confirms:
        ax.text(end + 0.5 + len(confirms) / 2, 1.0, "confirmations", transform=ax.get_xaxis_transform(),
                ha="center", va="bottom", fontsize=8, color="dimgrey")  # fmt: skip
    _strip_axes(strip)
    ax.set_xlabel("trial")
    ax.set_ylabel(label)
    ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(_figure_title(result, f"best feasible {label} by trial"), fontsize=10)
    fig.legend(handles=_legend_handles(result, handoff, bool(confirms)), loc="outside lower center", ncol=4,
               fontsize=8, frameon=False)  # fmt: skip
    return fig


def _plot_trials(ax: Axes, strip: Axes, positions: Sequence[tuple[float, TrialRecord]], scale: float) -> None:
    """Measured trials on the main axes at their value; crashed and guarded ones (no value) on the strip."""
    for status, style in STYLES.items():
        for confirm in (False, True):
            chosen = [(x, r) for x, r in positions if r.outcome.status == status and r.is_confirm == confirm]
            if status in STRIP_ROWS:
                target, points = strip, [(x, float(STRIP_ROWS[status])) for x, _ in chosen]
            else:
                target, points = ax, [(x, v * scale) for x, r in chosen if (v := _objective(r.outcome)) is not None]
            if points:
                xs, ys = zip(*points, strict=True)
                target.scatter(xs, ys, color=style.color, marker="D" if confirm else style.marker, s=46,
                               edgecolors="white", linewidths=0.5, zorder=3)  # fmt: skip


def _star_winner(
    ax: Axes, positions: Sequence[tuple[float, TrialRecord]], winner: Candidate | None, scale: float
) -> None:
    """A star behind the winner's marker: its confirmation when it was confirmed, else its search trial."""
    for x, record in positions:
        if _is_winner(record, winner):
            value = _objective(record.outcome)
            if value is not None:
                ax.scatter([x], [value * scale], marker="*", s=330, color=WINNER_COLOR, edgecolors="black",
                           linewidths=0.8, zorder=2)  # fmt: skip


def _log_if_wide(ax: Axes, values: Sequence[float], scale: float) -> None:
    """A log axis when values span more than 20× (a 60 s SLO miss next to 500 ms trials)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    positive = [v * scale for v in values if v > 0]
    if positive and max(positive) / min(positive) > 20:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())


def _trial_ticks(ax: Axes, search: Sequence[TrialRecord], confirms: Sequence[TrialRecord], end: int) -> None:
    """Trial numbers under the search, ``#n`` under each confirmation (the trial it re-measures)."""
    step = max(1, math.ceil(len(search) / 20))
    ticks = [float(r.number) for r in search][::step]
    labels = [str(int(t)) for t in ticks]
    ticks += [end + 1.0 + i for i in range(len(confirms))]
    labels += [f"#{r.number}" for r in confirms]
    ax.set_xticks(ticks, labels, fontsize=8)
    ax.set_xlim(-0.7, end + len(confirms) + 0.7)


def _strip_axes(strip: Axes) -> None:
    strip.set_yticks(list(STRIP_ROWS.values()), list(STRIP_ROWS), fontsize=8)
    strip.set_ylim(-0.7, 1.7)
    strip.tick_params(axis="x", labelbottom=False)
    strip.grid(True, axis="y", alpha=0.3)


def _legend_handles(result: TuneResult, handoff: int | None, confirms: bool) -> list[Any]:
    from matplotlib.lines import Line2D

    handles: list[Any] = [
        Line2D([], [], linestyle="", marker=style.marker, color=style.color, label=style.label)
        for style in STYLES.values()
    ]
    handles.append(Line2D([], [], color="black", linewidth=1.6, label="best feasible so far"))
    if result.objective.kind == "latency":
        handles.append(Line2D([], [], color="grey", linestyle=":", label=f"SLO {result.objective.primary}"))
    if handoff is not None:
        handles.append(Line2D([], [], color="#3060c0", linestyle="--", label=f"TBA → TPE handoff (trial {handoff})"))
    if confirms:
        handles.append(Line2D([], [], linestyle="", marker="D", color="grey", label="confirmation (re-measured)"))
    if result.winner is not None:
        handles.append(_winner_handle(result.winner))
    return handles


def _winner_handle(winner: Candidate) -> Any:
    from matplotlib.lines import Line2D

    return Line2D([], [], linestyle="", marker="*", markersize=14, markerfacecolor=WINNER_COLOR,
                  markeredgecolor="black", label=f"winner (trial {winner.trial})")  # fmt: skip


def _figure_title(result: TuneResult, what: str) -> str:
    """Two lines: what the figure shows, then which run (a figure saved alone still says where it came from)."""
    return f"{what}\n{result.spec.model} · {_hardware_text(result.hardware)} · study {result.study_name}"


def space_figure(result: TuneResult) -> Figure:
    """Where the search went: max_num_seqs vs max_num_batched_tokens, by outcome, the winner starred."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 6.4), layout="constrained")
    ax = fig.subplots()
    groups = _space_groups(result)
    handles: list[Any] = []
    for status, style in STYLES.items():
        points = [p for p, records in groups.items() for r in records if r.outcome.status == status]
        if points:
            xs, ys = zip(*points, strict=True)
            handles.append(ax.scatter(xs, ys, color=style.color, marker=style.marker, s=70, alpha=0.9,
                                      edgecolors="white", linewidths=0.6, label=f"{style.label} ({len(points)})",
                                      zorder=3))  # fmt: skip
    winner = _winner_point(result)
    if winner is not None and result.winner is not None:  # behind the markers: the star hides no other trial
        ax.scatter([winner[0]], [winner[1]], marker="*", s=520, color=WINNER_COLOR, edgecolors="black",
                   linewidths=1.0, zorder=2)  # fmt: skip
        handles.append(_winner_handle(result.winner))
    _label_groups(ax, groups, winner)
    if groups:
        _log2_axes(ax)
        fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    else:
        ax.text(0.5, 0.5, "no trial has max_num_seqs and max_num_batched_tokens", transform=ax.transAxes,
                ha="center", color="grey")  # fmt: skip
    ax.set_xlabel("max_num_seqs")
    ax.set_ylabel("max_num_batched_tokens")
    ax.grid(True, alpha=0.3)
    fig.suptitle(_figure_title(result, "explored configs (search trials; numbers are trial numbers)"), fontsize=10)
    return fig


def _space_groups(result: TuneResult) -> dict[tuple[float, float], list[TrialRecord]]:
    """Search trials that ran a config of their own, grouped by their point (several may share one)."""
    groups: dict[tuple[float, float], list[TrialRecord]] = {}
    for record in result.trials:
        point = space_point(record, result.fixed)
        if point is not None and not record.is_confirm and record.outcome.reused_from is None:
            groups.setdefault(point, []).append(record)
    return groups


def _winner_point(result: TuneResult) -> tuple[float, float] | None:
    winner = result.winner
    if winner is None:
        return None
    source = next((r for r in result.trials if r.number == winner.trial and not r.is_confirm), None)
    return space_point(source, result.fixed) if source is not None else None


def _label_groups(
    ax: Axes, groups: Mapping[tuple[float, float], Sequence[TrialRecord]], winner: tuple[float, float] | None
) -> None:
    """Trial numbers beside each point: on the left when a neighbour (or the winner's star) sits right of it."""
    points = list(groups)
    for (x, y), records in groups.items():
        numbers = [str(r.number) for r in records]
        text = ",".join(numbers[:4]) + (f",+{len(numbers) - 4}" if len(numbers) > 4 else "")
        neighbours = [p for p in [*points, *([winner] if winner else [])] if p != (x, y) and _close(p, (x, y))]
        left = any(px > x for px, _ in neighbours)
        dx = 12 if (x, y) == winner else 7
        ax.annotate(text, (x, y), xytext=(-dx if left else dx, 5), textcoords="offset points", fontsize=7,
                    color="dimgrey", ha="right" if left else "left")  # fmt: skip


def _close(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Within about half an octave in x and a quarter in y: labels would collide."""
    return abs(math.log2(a[0] / b[0])) < 0.6 and abs(math.log2(a[1] / b[1])) < 0.3


def _log2_axes(ax: Axes) -> None:
    """Powers of two, printed as plain numbers (vLLM's sizes are read as 256, 8192, not 2^8)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(NullFormatter())
    ax.margins(0.12)


def figure_png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def render_figures(result: TuneResult) -> dict[str, bytes] | None:
    """Both figures as PNG bytes, or None when matplotlib (an optional extra) is not installed."""
    if not matplotlib_available():
        return None
    return {"best_so_far.png": figure_png(best_so_far_figure(result)), "space.png": figure_png(space_figure(result))}


# --- the HTML page --------------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1500px; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
table.facts th { width: 11em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.wrap { white-space: pre-line; max-width: 32em; }
tr.ok td:first-child { border-left: 4px solid #1b9e77; }
tr.slo_violation td:first-child { border-left: 4px solid #e6a000; }
tr.crash td:first-child { border-left: 4px solid #d62728; }
tr.guarded td:first-child { border-left: 4px solid #7b68c8; }
tr.winner { background: #fff7cc; }
pre { background: #f6f8fa; padding: 0.6em; overflow-x: auto; white-space: pre-wrap; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.note { color: #8a5a00; }
"""


def render_html(result: TuneResult, images: Mapping[str, bytes] | None) -> str:
    """One page with no outside resource: summary, the figures (base64 PNG) and every trial."""
    esc = html.escape
    figures = (
        "".join(
            f'<img src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}" alt="{esc(name)}">'
            for name, data in images.items()
        )
        if images is not None
        else f'<p class="note">Figures skipped: matplotlib is not installed; {esc(MATPLOTLIB_HINT)}.</p>'
    )
    table = trials_table(result, cause_width=None, repair_notes=True)
    classes = [f"{r.outcome.status}{' winner' if _is_winner(r, result.winner) else ''}" for r in result.trials]
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>vllm-tune report: {esc(result.study_name)}</title><style>{_CSS}</style></head><body>\n"
        f"<h1>vllm-tune report: {esc(result.study_name)}</h1>\n{_summary_html(result)}\n"
        f"<h2>Figures</h2>\n{figures}\n<h2>Trials</h2>\n{table_html(table, classes)}\n</body></html>\n"
    )


def table_html(table: Table, row_classes: Sequence[str]) -> str:
    """A rich table as an HTML table (plain text cells; right-justified columns stay numeric)."""
    esc = html.escape
    columns = [(c, list(c.cells)) for c in table.columns]
    head = "".join(f"<th>{esc(str(c.header))}</th>" for c, _ in columns)
    rows = []
    for i, css in enumerate(row_classes):
        tds = "".join(f'<td class="{_css(c)}">{esc(_plain(cells[i]))}</td>' for c, cells in columns)
        rows.append(f'<tr class="{esc(css)}">{tds}</tr>')
    return f'<table class="trials"><thead><tr>{head}</tr></thead><tbody>\n' + "\n".join(rows) + "\n</tbody></table>"


def _css(column: Column) -> str:
    return "num" if column.justify == "right" else "wrap"


def _plain(cell: Any) -> str:
    return cell.plain if isinstance(cell, Text) else str(cell)


def _summary_html(result: TuneResult) -> str:
    esc = html.escape
    spec = result.spec
    rows = [
        ("model", esc(spec.model)),
        ("vLLM", esc(result.vllm_version)),
        ("hardware", esc(_hardware_text(result.hardware))),
        ("SLOs", esc(", ".join(str(s) for s in spec.slos))),
        ("workload", esc(_workload_text(spec.workload))),
        ("objective", esc(result.objective.describe())),
        (
            "searcher",
            esc(f"{spec.searcher} (seed {spec.seed}, budget {spec.budget}, confirm top {spec.confirm_top_k})"),
        ),
        ("winner", _winner_html(result)),
        ("trials", esc(_counts_text(result))),
        ("total trial cost", esc(duration_text(result.total_cost_s))),
        ("study", esc(f"{result.study_name} in {public_url(result.storage)}")),
    ]
    if spec.pinned_args:
        rows.insert(5, ("pinned flags", f"<code>{esc(' '.join(spec.pinned_args))}</code>"))
    rows += [("note", esc(note)) for note in result.notes]
    body = "".join(f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in rows)
    return f'<table class="facts">{body}</table>'


def _winner_html(result: TuneResult) -> str:
    esc = html.escape
    winner = result.winner
    if winner is None:
        miss = result.best_miss
        closest = f"; closest: {_candidate_text(miss, result)}" if miss is not None else ""
        return esc(f"no configuration met every SLO{closest}")
    command = serve_command(result.spec.model, winner.argv)
    return f"{esc(_candidate_text(winner, result))}<pre>{esc(command)}</pre>"


def _candidate_text(candidate: Candidate, result: TuneResult) -> str:
    outcome = candidate.outcome
    tag = "confirmed" if candidate.confirmed else "search trial"
    text = f"trial {candidate.trial} ({tag}, {outcome.status}): "
    text += f"{primary_label(result.objective)} {primary_value(outcome, result.objective)}"
    if result.objective.kind == "capacity" and outcome.objective is not None:
        text += f", capacity {outcome.objective:.2f} req/s"
    if not outcome.feasible:
        text += f", violation {violation_text(outcome)}"
    if outcome.category:
        text += f", {outcome.category}: {shorten(outcome.root_cause, 160)}"
    return text


def _counts_text(result: TuneResult) -> str:
    counts = result.counts
    parts = [
        f"{counts.evaluated + counts.guarded} counted ({counts.evaluated} run, {counts.guarded} guarded)",
        f"{counts.feasible} feasible",
        f"{_slo_misses(result.trials)} SLO misses",
    ]
    if counts.crashes:
        parts.append("crashes: " + ", ".join(f"{cat} {n}" for cat, n in sorted(counts.crashes.items())))
    if counts.guarded_by_category:
        by_cat = ", ".join(f"{cat} {n}" for cat, n in sorted(counts.guarded_by_category.items()))
        parts.append(f"guarded: {by_cat}")
    if counts.reused:
        parts.append(f"{counts.reused} reused (not counted)")
    parts.append(f"{counts.confirmations} confirmations")
    return "; ".join(parts)


def _hardware_text(hardware: Mapping[str, Any]) -> str:
    """``1 × A100-40GB (39.4 GiB, sim)`` from the study's hardware record (other keys as key=value)."""
    hw = dict(hardware)
    if "gpu" not in hw:
        return ", ".join(f"{k}={v}" for k, v in hw.items()) or "unknown"
    text = f"{hw.pop('count', 1)} × {hw.pop('gpu')}"
    details = []
    memory = hw.pop("memory_bytes", None)
    if isinstance(memory, (int, float)):
        details.append(f"{memory / 2**30:.1f} GiB")
    details += [str(v) if k == "kind" else f"{k}={v}" for k, v in hw.items()]
    return f"{text} ({', '.join(details)})" if details else text


def _workload_text(workload: WorkloadSpec) -> str:
    """The workload in ``vllm bench serve`` terms, one line."""
    rate = "all at once" if math.isinf(workload.request_rate) else f"{workload.request_rate:g} req/s"
    parts = [f"{workload.num_prompts} prompts per trial", f"request rate {rate}"]
    if workload.burstiness != 1.0:
        parts.append(f"burstiness {workload.burstiness:g}")
    if workload.max_concurrency is not None:
        parts.append(f"max concurrency {workload.max_concurrency}")
    if workload.dataset_path:
        parts.append(f"dataset {workload.dataset_path}")
    else:
        spread = f" (±{workload.random_range_ratio:.0%})" if workload.random_range_ratio else ""
        parts.append(f"input {workload.random_input_len} / output {workload.random_output_len} tokens{spread}")
        if workload.random_prefix_len:
            parts.append(f"shared prefix {workload.random_prefix_len} tokens")
    return ", ".join(parts)


# --- writing --------------------------------------------------------------------------------------------


@dataclass
class ReportFiles:
    """What ``write_report`` wrote; ``figures_skipped`` when matplotlib is missing."""

    folder: Path
    index: Path
    figures: list[Path]
    figures_skipped: bool


def write_report(result: TuneResult, out_dir: str | Path) -> ReportFiles:
    """Write the figures (when matplotlib is there) and index.html into ``out_dir``."""
    folder = Path(out_dir)
    images = render_figures(result)
    written = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in (images or {}).items():
            (folder / name).write_bytes(data)
            written.append(folder / name)
    except OSError as exc:
        raise InputError(f"cannot write the report to {folder}: {exc.strerror or exc}") from None
    index = write_atomic(folder / "index.html", render_html(result, images))
    return ReportFiles(folder, index, written, figures_skipped=images is None)


def json_text(result: TuneResult) -> str:
    return json.dumps(report_json(result), indent=2, allow_nan=False)
