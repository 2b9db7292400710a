"""The two figures of one study, drawn with matplotlib (an optional extra) in ``report.style``.

- ``best_so_far.png``: the best feasible objective by trial, each trial marked by its outcome, a line
  at the TBA → TPE handoff (the first ``exploit`` trial), the confirmations in a band of their own;
- ``space.png``: max_num_seqs vs max_num_batched_tokens (log axes), coloured by outcome, the winner
  highlighted.

Why those two knobs: they are the scheduler's batch limits (``vllm/config/scheduler.py`` in vLLM),
the axes along which throughput trades against latency and memory. Latency is plotted in ms, the
unit ``vllm bench serve`` reports (``vllm/benchmarks/serve.py``).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..progress import primary_label
from ..search.result import Candidate, TrialRecord, TuneResult
from .data import best_so_far, handoff_trial, hardware_text, is_winner, objective_value, space_point
from .style import (
    BAND_COLOR,
    GRID_ALPHA,
    HANDOFF_COLOR,
    HANDOFF_LABEL,
    MARKER_EDGE,
    MUTED,
    NOTE,
    SMALL_SIZE,
    STYLES,
    TEXT_SIZE,
    WINNER_COLOR,
    bottom_legend,
    matplotlib_available,
    matplotlib_hint,
    new_figure,
    plain_numbers,
    save_png,
    title,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FIGURES = ("best_so_far.png", "space.png")
MATPLOTLIB_HINT = matplotlib_hint(FIGURES)
STRIP_ROWS = {"guarded": 0, "crash": 1}  # failed trials have no value: a strip of their own above the plot


def _scale(result: TuneResult) -> tuple[float, str]:
    """Objective → plotted value and axis label (latency in ms, vLLM's unit; capacity in req/s)."""
    if result.objective.kind == "latency":
        return 1000.0, primary_label(result.objective)
    return 1.0, "capacity (req/s meeting every SLO)"


def _figure_title(result: TuneResult, what: str) -> str:
    """Two lines: what the figure shows, then which run (a figure saved alone still says where it came from)."""
    return f"{what}\n{result.spec.model} · {hardware_text(result.hardware)} · study {result.study_name}"


# --- best so far ----------------------------------------------------------------------------------------


def best_so_far_figure(result: TuneResult) -> Figure:
    """The search as it went: every trial by outcome, the best feasible so far, the handoff, confirmations."""
    fig = new_figure((9.5, 5.8))
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
        ax.text(0.01, 0.97, "no feasible trial", transform=ax.transAxes, ha="left", va="top", color=MUTED)
    if result.objective.kind == "latency":
        ax.axhline(result.objective.primary.threshold_s * 1000, color=MUTED, linestyle=":", linewidth=1.2)
    handoff = handoff_trial(search)
    for axes in (strip, ax):
        if handoff is not None:
            axes.axvline(handoff, color=HANDOFF_COLOR, linestyle="--", linewidth=1.2, zorder=1, gid="handoff")
        if confirms:
            axes.axvspan(end + 0.5, end + len(confirms) + 0.5, color=BAND_COLOR, zorder=0)
    _log_if_wide(ax, [v for _, r in positions if (v := objective_value(r.outcome)) is not None], scale)
    _trial_ticks(ax, search, confirms, end)
    if confirms:
        ax.text(end + 0.5 + len(confirms) / 2, 1.0, "confirmations", transform=ax.get_xaxis_transform(),
                ha="center", va="bottom", fontsize=TEXT_SIZE, color=NOTE)  # fmt: skip
    _strip_axes(strip)
    ax.set_xlabel("trial")
    ax.set_ylabel(label)
    ax.grid(True, axis="y", alpha=GRID_ALPHA)
    title(fig, _figure_title(result, f"best feasible {label} by trial"))
    bottom_legend(fig, _legend_handles(result, handoff, bool(confirms)), ncol=4)
    return fig


def _plot_trials(ax: Axes, strip: Axes, positions: Sequence[tuple[float, TrialRecord]], scale: float) -> None:
    """Measured trials on the main axes at their value; crashed and guarded ones (no value) on the strip."""
    for status, style in STYLES.items():
        for confirm in (False, True):
            chosen = [(x, r) for x, r in positions if r.outcome.status == status and r.is_confirm == confirm]
            if status in STRIP_ROWS:
                target, points = strip, [(x, float(STRIP_ROWS[status])) for x, _ in chosen]
            else:
                target = ax
                points = [(x, v * scale) for x, r in chosen if (v := objective_value(r.outcome)) is not None]
            if points:
                xs, ys = zip(*points, strict=True)
                target.scatter(xs, ys, color=style.color, marker="D" if confirm else style.marker, s=46,
                               edgecolors=MARKER_EDGE, linewidths=0.5, zorder=3)  # fmt: skip


def _star_winner(
    ax: Axes, positions: Sequence[tuple[float, TrialRecord]], winner: Candidate | None, scale: float
) -> None:
    """A star behind the winner's marker: its confirmation when it was confirmed, else its search trial."""
    for x, record in positions:
        if is_winner(record, winner):
            value = objective_value(record.outcome)
            if value is not None:
                ax.scatter([x], [value * scale], marker="*", s=330, color=WINNER_COLOR, edgecolors="black",
                           linewidths=0.8, zorder=2)  # fmt: skip


def _log_if_wide(ax: Axes, values: Sequence[float], scale: float) -> None:
    """A log axis when values span more than 20× (a 60 s SLO miss next to 500 ms trials)."""
    positive = [v * scale for v in values if v > 0]
    if positive and max(positive) / min(positive) > 20:
        ax.set_yscale("log")
        plain_numbers(ax.yaxis)


def _trial_ticks(ax: Axes, search: Sequence[TrialRecord], confirms: Sequence[TrialRecord], end: int) -> None:
    """Trial numbers under the search, ``#n`` under each confirmation (the trial it re-measures)."""
    step = max(1, math.ceil(len(search) / 20))
    ticks = [float(r.number) for r in search][::step]
    labels = [str(int(t)) for t in ticks]
    ticks += [end + 1.0 + i for i in range(len(confirms))]
    labels += [f"#{r.number}" for r in confirms]
    ax.set_xticks(ticks, labels, fontsize=TEXT_SIZE)
    ax.set_xlim(-0.7, end + len(confirms) + 0.7)


def _strip_axes(strip: Axes) -> None:
    strip.set_yticks(list(STRIP_ROWS.values()), list(STRIP_ROWS), fontsize=TEXT_SIZE)
    strip.set_ylim(-0.7, 1.7)
    strip.tick_params(axis="x", labelbottom=False)
    strip.grid(True, axis="y", alpha=GRID_ALPHA)


def _legend_handles(result: TuneResult, handoff: int | None, confirms: bool) -> list[Any]:
    from matplotlib.lines import Line2D

    handles: list[Any] = [
        Line2D([], [], linestyle="", marker=style.marker, color=style.color, label=style.label)
        for style in STYLES.values()
    ]
    handles.append(Line2D([], [], color="black", linewidth=1.6, label="best feasible so far"))
    if result.objective.kind == "latency":
        handles.append(Line2D([], [], color=MUTED, linestyle=":", label=f"SLO {result.objective.primary}"))
    if handoff is not None:
        handles.append(Line2D([], [], color=HANDOFF_COLOR, linestyle="--", label=f"{HANDOFF_LABEL} (trial {handoff})"))
    if confirms:
        handles.append(Line2D([], [], linestyle="", marker="D", color=MUTED, label="confirmation (re-measured)"))
    if result.winner is not None:
        handles.append(_winner_handle(result.winner))
    return handles


def _winner_handle(winner: Candidate) -> Any:
    from matplotlib.lines import Line2D

    return Line2D([], [], linestyle="", marker="*", markersize=14, markerfacecolor=WINNER_COLOR,
                  markeredgecolor="black", label=f"winner (trial {winner.trial})")  # fmt: skip


# --- the explored space ---------------------------------------------------------------------------------


def space_figure(result: TuneResult) -> Figure:
    """Where the search went: max_num_seqs vs max_num_batched_tokens, by outcome, the winner starred."""
    fig = new_figure((8, 6.4))
    ax = fig.subplots()
    groups = _space_groups(result)
    handles: list[Any] = []
    for status, style in STYLES.items():
        points = [p for p, records in groups.items() for r in records if r.outcome.status == status]
        if points:
            xs, ys = zip(*points, strict=True)
            handles.append(ax.scatter(xs, ys, color=style.color, marker=style.marker, s=70, alpha=0.9,
                                      edgecolors=MARKER_EDGE, linewidths=0.6, label=f"{style.label} ({len(points)})",
                                      zorder=3))  # fmt: skip
    winner = _winner_point(result)
    if winner is not None and result.winner is not None:  # behind the markers: the star hides no other trial
        ax.scatter([winner[0]], [winner[1]], marker="*", s=520, color=WINNER_COLOR, edgecolors="black",
                   linewidths=1.0, zorder=2)  # fmt: skip
        handles.append(_winner_handle(result.winner))
    _label_groups(ax, groups, winner)
    if groups:
        _log2_axes(ax)
        bottom_legend(fig, handles, ncol=3)
    else:
        ax.text(0.5, 0.5, "no trial has max_num_seqs and max_num_batched_tokens", transform=ax.transAxes,
                ha="center", color=MUTED)  # fmt: skip
    ax.set_xlabel("max_num_seqs")
    ax.set_ylabel("max_num_batched_tokens")
    ax.grid(True, alpha=GRID_ALPHA)
    title(fig, _figure_title(result, "explored configs (search trials; numbers are trial numbers)"))
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
        ax.annotate(text, (x, y), xytext=(-dx if left else dx, 5), textcoords="offset points", fontsize=SMALL_SIZE,
                    color=NOTE, ha="right" if left else "left")  # fmt: skip


def _close(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Within about half an octave in x and a quarter in y: labels would collide."""
    return abs(math.log2(a[0] / b[0])) < 0.6 and abs(math.log2(a[1] / b[1])) < 0.3


def _log2_axes(ax: Axes) -> None:
    """Powers of two, printed as plain numbers (vLLM's sizes are read as 256, 8192, not 2^8)."""
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    plain_numbers(ax.xaxis)
    plain_numbers(ax.yaxis)
    ax.margins(0.12)


# --- rendering ------------------------------------------------------------------------------------------


def figure_png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    save_png(fig, buffer)
    return buffer.getvalue()


def render_figures(result: TuneResult) -> dict[str, bytes] | None:
    """Both figures as PNG bytes, or None when matplotlib (an optional extra) is not installed."""
    if not matplotlib_available():
        return None
    return {"best_so_far.png": figure_png(best_so_far_figure(result)), "space.png": figure_png(space_figure(result))}
