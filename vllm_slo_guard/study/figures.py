"""The three figures of ``vllm-tune compare``: how each searcher's regret fell, where it ended, what it tried.

Drawn from the compare report dict alone (nothing re-run), as PNG files:

- ``best_so_far.png``: best-so-far regret by trial, per searcher the median over seeds and the band
  between the 25th and 75th percentile; "nothing feasible yet" counts as 100 % regret, so a searcher
  that finds no feasible config early is drawn as far from the optimum as it is useful;
- ``regret_boxes.png``: the final regret of each searcher across seeds, a box with every seed as a dot;
- ``trial_phases.png``: every trial of every seed coloured by outcome, exploit (TPE) trials dotted, so
  each seed's TBA → TPE handoff and what it cost in crashes and SLO misses is visible at a glance.

The style is ``report.style``, the one ``vllm-tune report`` draws with: the same outcome colours,
fonts and Agg-only figures, matplotlib an optional extra imported lazily. Percent axes are symlog,
linear below 1 %, so a regret of 0.3 % is not drawn on top of 0 % and 100 % still fits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError, SloGuardError
from ..report.data import HANDOFF_PHASE as EXPLOIT_PHASE
from ..report.style import (
    GRID_ALPHA,
    HANDOFF_LABEL,
    LABEL_SIZE,
    MARKER_EDGE,
    MUTED,
    SMALL_SIZE,
    STYLES,
    TEXT_SIZE,
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

BEST_SO_FAR = "best_so_far.png"
REGRET_BOXES = "regret_boxes.png"
TRIAL_PHASES = "trial_phases.png"
FIGURES = (BEST_SO_FAR, REGRET_BOXES, TRIAL_PHASES)

NO_WINNER_REGRET = 1.0  # what a run (or a trial prefix) with no feasible config counts as
NEAR_OPTIMUM = 0.10  # feasible trials within 10 % of the optimum get a colour of their own
TARGET_REGRET = 0.05  # the dashed line of the box plot
LINTHRESH_PERCENT = 1.0  # symlog: linear below 1 %, logarithmic above
# Okabe-Ito: colour-blind safe; a searcher keeps its colour in every figure
SEARCHER_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
JITTER = 0.18  # half-width of the dots' spread around a box
MATPLOTLIB_HINT = matplotlib_hint(FIGURES)


class FiguresUnavailableError(SloGuardError):
    """matplotlib (the optional ``report`` extra) is not installed, so no figure can be drawn."""


@dataclass(frozen=True)
class Cell:
    """One category of the trial strip chart: its legend label and colour."""

    label: str
    color: str


# the strip chart's categories, by code; 0 is "no trial" (a run that stopped early or had none)
CELLS = (
    Cell("no trial", "#ffffff"),
    Cell(f"ok ≤{NEAR_OPTIMUM:.0%} of optimum", "#0b6e4f"),
    Cell("ok", "#9fd8bf"),
    Cell("SLO miss", STYLES["slo_violation"].color),
    Cell("crash", STYLES["crash"].color),
    Cell("guarded", STYLES["guarded"].color),
)
STATUS_CODES = {"slo_violation": 3, "crash": 4, "guarded": 5}


# --- the figures' data (plain functions, no matplotlib) ---------------------------------------------------


def searcher_order(report: Mapping[str, Any]) -> list[str]:
    """``settings.searchers`` first (the order the user asked for), then any other searcher that has runs."""
    names = list(report.get("settings", {}).get("searchers", []))
    for run in report.get("runs", []):
        if run["searcher"] not in names:
            names.append(run["searcher"])
    return names


def runs_by_searcher(report: Mapping[str, Any]) -> dict[str, list[Mapping[str, Any]]]:
    """Each searcher's runs sorted by seed, so row k of every figure is the same seed."""
    groups: dict[str, list[Mapping[str, Any]]] = {name: [] for name in searcher_order(report)}
    for run in report.get("runs", []):
        groups[run["searcher"]].append(run)
    return {name: sorted(runs, key=lambda r: r.get("seed", 0)) for name, runs in groups.items()}


def as_regret(value: float | None) -> float:
    """A regret to plot: None (nothing feasible) and non-finite values count as no winner."""
    if value is None or not math.isfinite(value):
        return NO_WINNER_REGRET
    return float(value)


def trial_count(report: Mapping[str, Any]) -> int:
    """The x extent: the budget, or more when some run has more counted trials than it."""
    runs = report.get("runs", [])
    longest = max((max(len(r.get("best_so_far_regret", [])), len(r.get("trials", []))) for r in runs), default=0)
    return max(int(report.get("settings", {}).get("budget", 0)), longest)


def best_so_far_matrix(runs: Sequence[Mapping[str, Any]], length: int) -> np.ndarray:
    """Seeds × trials of best-so-far regret; a run that stopped early keeps its last value to the end."""
    matrix = np.full((len(runs), length), NO_WINNER_REGRET)
    for row, run in enumerate(runs):
        series = [as_regret(v) for v in run.get("best_so_far_regret", [])][:length]
        if series:
            matrix[row, : len(series)] = series
            matrix[row, len(series) :] = series[-1]
    return matrix


def quartile_bands(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """25th percentile, median and 75th percentile over seeds (rows), per trial."""
    low, median, high = np.percentile(matrix, [25, 50, 75], axis=0)
    return low, median, high


def jitter_offsets(count: int) -> np.ndarray:
    """Evenly spread x offsets, seed order: deterministic, unlike random jitter, and never overlapping."""
    if count <= 1:
        return np.zeros(count)
    return np.linspace(-JITTER, JITTER, count)


def cell_code(trial: Mapping[str, Any]) -> int:
    """A trial's strip-chart category (an index into ``CELLS``)."""
    status = trial.get("status")
    if status == "ok":
        regret = trial.get("regret")
        near = regret is not None and math.isfinite(regret) and regret <= NEAR_OPTIMUM
        return 1 if near else 2
    return STATUS_CODES.get(str(status), 0)


def ordered_trials(run: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """A run's trials by trial number: column k of the strip chart is its k-th counted trial."""
    return sorted(run.get("trials", []), key=lambda t: t.get("number", 0))


def phase_grid(runs: Sequence[Mapping[str, Any]], length: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeds × trials of cell codes, and a same-shaped mask of exploit-phase trials."""
    codes = np.zeros((len(runs), length), dtype=int)
    exploit = np.zeros((len(runs), length), dtype=bool)
    for row, run in enumerate(runs):
        for col, trial in enumerate(ordered_trials(run)[:length]):
            codes[row, col] = cell_code(trial)
            exploit[row, col] = trial.get("phase") == EXPLOIT_PHASE
    return codes, exploit


def scenario_title(report: Mapping[str, Any], what: str) -> str:
    """Two lines: what the figure shows, then the scenario and its optimum (a PNG alone still says its source)."""
    name = report.get("scenario", {}).get("name", "?")
    optimum = report.get("optimum", {})
    value = optimum.get("value")
    best = f"optimum {value:.4g} {optimum.get('unit', '')}".rstrip() if value is not None else "optimum unknown"
    seeds = report.get("settings", {}).get("seeds")
    seeds_text = f" · {seeds} seeds" if seeds is not None else ""
    return f"{what}\nscenario {name} · {best}{seeds_text}"


def searcher_color(index: int) -> str:
    return SEARCHER_COLORS[index % len(SEARCHER_COLORS)]


# --- the figures ------------------------------------------------------------------------------------------


def _percent_axis(ax: Axes) -> None:
    """A symlog percent y axis: 0.3 % is visibly above 0 %, 100 % still fits."""
    ax.set_yscale("symlog", linthresh=LINTHRESH_PERCENT)
    plain_numbers(ax.yaxis, "%")
    ax.set_ylim(-0.1, 100 * NO_WINNER_REGRET * 1.6)
    ax.grid(True, axis="y", which="major", alpha=GRID_ALPHA)


def _no_data(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color=MUTED)


def best_so_far_figure(report: Mapping[str, Any]) -> Figure:
    """Median best-so-far regret per searcher with its interquartile band: speed and reliability at once."""
    fig = new_figure((9, 5.5))
    ax = fig.subplots()
    length = trial_count(report)
    x = np.arange(1, length + 1)
    drawn = False
    for index, (name, runs) in enumerate(runs_by_searcher(report).items()):
        if not runs or length == 0:
            continue
        low, median, high = (100 * band for band in quartile_bands(best_so_far_matrix(runs, length)))
        color = searcher_color(index)
        ax.fill_between(x, low, high, step="post", color=color, alpha=0.18, linewidth=0)
        ax.plot(x, median, drawstyle="steps-post", color=color, linewidth=1.8, label=f"{name} (n={len(runs)})")
        drawn = True
    _percent_axis(ax)
    if drawn:
        ax.set_xlim(1, max(length, 2))
        ax.legend(fontsize=TEXT_SIZE, title="median, band = 25th–75th percentile", title_fontsize=TEXT_SIZE)
    else:
        _no_data(ax, "no runs")
    ax.set_xlabel("trial (counted)")
    ax.set_ylabel("best-so-far regret (no feasible config yet = 100%)")
    title(fig, scenario_title(report, "best-so-far regret by trial"))
    return fig


def regret_boxes_figure(report: Mapping[str, Any]) -> Figure:
    """Final regret per searcher across seeds: the box for the spread, the dots so no seed hides in it."""
    groups = runs_by_searcher(report)
    fig = new_figure((max(5.0, 1.5 * len(groups) + 2.5), 5.2))
    ax = fig.subplots()
    for index, runs in enumerate(groups.values()):
        values = 100 * np.array([as_regret(r.get("regret")) for r in runs])
        if values.size:
            _box(ax, index + 1, values, searcher_color(index))
    ax.axhline(100 * TARGET_REGRET, color=MUTED, linestyle="--", linewidth=1.1, label=f"{TARGET_REGRET:.0%} regret")
    _percent_axis(ax)
    ax.set_xticks(range(1, len(groups) + 1), [f"{n}\n(n={len(r)})" for n, r in groups.items()], fontsize=LABEL_SIZE)
    ax.set_xlim(0.4, len(groups) + 0.6)
    ax.set_ylabel("final regret of the best config (no winner = 100%)")
    ax.legend(fontsize=TEXT_SIZE, loc="upper right")
    if not groups:
        _no_data(ax, "no runs")
    title(fig, scenario_title(report, "final regret across seeds"))
    return fig


def _box(ax: Axes, position: int, values: np.ndarray, color: str) -> None:
    ax.boxplot([values], positions=[position], widths=0.55, showfliers=False, patch_artist=True,
               boxprops={"facecolor": color, "alpha": 0.25}, medianprops={"color": color, "linewidth": 2})  # fmt: skip
    ax.scatter(position + jitter_offsets(values.size), values, s=22, color=color, edgecolors=MARKER_EDGE,
               linewidths=0.5, zorder=3)  # fmt: skip


def trial_phases_figure(report: Mapping[str, Any]) -> Figure:
    """Every trial of every seed by outcome, exploit trials dotted: the handoff and its cost per seed."""
    groups = runs_by_searcher(report) or {"(no searcher)": []}
    length = max(trial_count(report), 1)
    heights = [0.6 + min(0.22 * max(len(runs), 1), 4.0) for runs in groups.values()]  # inches; 30 seeds still fit
    fig = new_figure((10, 1.2 + sum(heights)))
    axes = fig.subplots(len(groups), 1, sharex=True, squeeze=False, height_ratios=heights)[:, 0]
    for ax, (name, runs) in zip(axes, groups.items(), strict=True):
        _phase_panel(ax, name, runs, length)
    axes[-1].set_xlabel("trial (counted)")
    bottom_legend(fig, _phase_legend(), ncol=4)
    title(fig, scenario_title(report, "trials by outcome (rows: seeds; dots: exploit / TPE phase)"))
    return fig


def _phase_panel(ax: Axes, name: str, runs: Sequence[Mapping[str, Any]], length: int) -> None:
    """One searcher: a seeds × trials grid of outcome colours, a dot in each exploit cell, a bar at the handoff."""
    from matplotlib.colors import BoundaryNorm, ListedColormap

    codes, exploit = phase_grid(runs, length)
    cmap = ListedColormap([c.color for c in CELLS])
    norm = BoundaryNorm(np.arange(len(CELLS) + 1) - 0.5, len(CELLS))
    if runs:
        ax.pcolormesh(np.arange(length + 1) + 0.5, np.arange(len(runs) + 1) - 0.5, codes, cmap=cmap, norm=norm,
                      edgecolors="#dddddd", linewidth=0.3)  # fmt: skip
        seeds_y, trials_x = np.nonzero(exploit)
        dot = min(10.0, 400 / length)  # smaller in narrow cells
        ax.scatter(trials_x + 1, seeds_y, s=dot, color="white", edgecolors="black", linewidths=0.7, zorder=3)
        _handoff_bars(ax, exploit)
    else:
        _no_data(ax, "no runs")
    ax.set_xlim(0.5, length + 0.5)
    ax.set_ylim(max(len(runs), 1) - 0.5, -0.5)  # seed 0 on top
    _seed_ticks(ax, [r.get("seed", i) for i, r in enumerate(runs)])
    ax.set_ylabel(f"{name}\nseed", fontsize=LABEL_SIZE)


def _handoff_bars(ax: Axes, exploit: np.ndarray) -> None:
    """A black bar at the left edge of each seed's first exploit trial: where TBA handed over to TPE."""
    for row, mask in enumerate(exploit):
        if mask.any():
            first = int(np.argmax(mask)) + 1
            ax.plot([first - 0.5, first - 0.5], [row - 0.5, row + 0.5], color="black", linewidth=2.2, zorder=4)


def _seed_ticks(ax: Axes, seeds: Sequence[int]) -> None:
    """Every seed labelled when they fit, about ten labels otherwise."""
    step = max(1, math.ceil(len(seeds) / 10))
    positions = list(range(0, len(seeds), step))
    ax.set_yticks(positions, [str(seeds[i]) for i in positions], fontsize=SMALL_SIZE)


def _phase_legend() -> list[Any]:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles: list[Any] = [Patch(facecolor=c.color, edgecolor="#999999", label=c.label) for c in CELLS[1:]]
    handles.append(Line2D([], [], linestyle="", marker="o", markersize=3.5, markerfacecolor="white",
                          markeredgecolor="black", label="exploit (TPE) trial"))  # fmt: skip
    handles.append(Line2D([], [], color="black", linewidth=2.2, label=HANDOFF_LABEL))
    return handles


# --- writing ----------------------------------------------------------------------------------------------


def render_figures(report: Mapping[str, Any]) -> Iterable[tuple[str, Figure]]:
    """The figures by file name, one at a time (each is saved before the next is drawn)."""
    yield BEST_SO_FAR, best_so_far_figure(report)
    yield REGRET_BOXES, regret_boxes_figure(report)
    yield TRIAL_PHASES, trial_phases_figure(report)


def write_figures(report: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """Write the three PNG figures of a compare report into ``out_dir``; their paths, in ``FIGURES`` order.

    Raises ``FiguresUnavailableError`` (one clear line) when matplotlib is not installed and
    ``InputError`` when the folder cannot be written.
    """
    if not matplotlib_available():
        raise FiguresUnavailableError(f"matplotlib is not installed, so no figures; {MATPLOTLIB_HINT}")
    folder = Path(out_dir)
    written: list[Path] = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, fig in render_figures(report):
            save_png(fig, folder / name)
            written.append(folder / name)
    except OSError as exc:
        raise InputError(f"cannot write the figures to {folder}: {exc.strerror or exc}") from None
    return written
