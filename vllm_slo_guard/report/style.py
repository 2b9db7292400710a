"""The one figure style of ``vllm-tune report`` and ``vllm-tune compare`` (``study.figures``).

Why one module: a crash is the same red, a feasible trial the same green and the TBA → TPE handoff
the same words in every figure either command draws, so figures from both can sit side by side.
matplotlib is an optional extra (``vllm-slo-guard[report]``) and is imported only inside the
helpers. Figures are ``matplotlib.figure.Figure`` objects on an Agg canvas, never pyplot: no global
state, no GUI backend, nothing to close, and the same PNG whatever ``MPLBACKEND`` says.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axis import Axis
    from matplotlib.figure import Figure

DPI = 110

# a type scale, in points
TITLE_SIZE = 10  # the two-line title of every figure
LABEL_SIZE = 9  # searcher names beside panels and boxes
TEXT_SIZE = 8  # legends, tick labels, notes inside the axes
SMALL_SIZE = 7  # trial numbers beside points, seed ticks

GRID_ALPHA = 0.3
MUTED = "grey"  # reference lines (SLO, target regret) and "nothing to draw" notes
NOTE = "dimgrey"  # text labels inside the axes
MARKER_EDGE = "white"  # separates overlapping markers
WINNER_COLOR = "#ffd700"
HANDOFF_LABEL = "TBA → TPE handoff"
HANDOFF_COLOR = "#3060c0"  # report's handoff line (compare marks the handoff with black bars on its colour grid)
BAND_COLOR = "#eeeeee"  # report's band behind the confirmations


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


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def matplotlib_hint(figures: Iterable[str]) -> str:
    """How to get the figures a command skipped without matplotlib."""
    return f'pip install "vllm-slo-guard[report]" gives the figures ({", ".join(figures)})'


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A constrained-layout figure (legends placed "outside" need it) on its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def title(fig: Figure, text: str) -> None:
    fig.suptitle(text, fontsize=TITLE_SIZE)


def bottom_legend(fig: Figure, handles: Sequence[Any], ncol: int) -> None:
    """The legend under the axes, so it never hides a point."""
    fig.legend(handles=handles, loc="outside lower center", ncol=ncol, fontsize=TEXT_SIZE, frameon=False)


def plain_numbers(axis: Axis, suffix: str = "") -> None:
    """Major ticks as plain numbers (256, 8192, 30%), not 2^8 or 10^3; no labels on minor ticks."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}{suffix}"))
    axis.set_minor_formatter(NullFormatter())


def save_png(fig: Figure, target: str | Path | IO[bytes]) -> None:
    fig.savefig(target, format="png", dpi=DPI)
