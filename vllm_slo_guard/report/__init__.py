"""``vllm-tune report``: a stored study as a table, two figures and one self-contained HTML page.

Why a report reads the study alone: a tuning run may have ended hours ago, on another machine; every
trial's whole Outcome is in the study (see ``search.storage``), so nothing is re-run and no GPU is
needed. The figures need matplotlib, an optional extra (``vllm-slo-guard[report]``): without it the
table and ``index.html`` are still written.

One job per module: ``data`` (the study read back, the facts drawn from it, the JSON), ``table``
(the terminal table), ``figures`` (the two PNGs), ``html`` (the page), ``write`` (the folder) and
``style`` (the figure style shared with ``study.figures``).
"""

from .data import (
    HANDOFF_PHASE,
    best_so_far,
    default_out_dir,
    handoff_trial,
    json_text,
    load_result,
    public_url,
    report_json,
    space_point,
    trial_json,
)
from .figures import FIGURES, MATPLOTLIB_HINT, best_so_far_figure, figure_png, render_figures, space_figure
from .html import render_html, table_html
from .style import DPI, STYLES, WINNER_COLOR, OutcomeStyle, matplotlib_available
from .table import CAUSE_WIDTH, print_table, shorten, trials_table
from .write import ReportFiles, write_report

__all__ = [
    "CAUSE_WIDTH",
    "DPI",
    "FIGURES",
    "HANDOFF_PHASE",
    "MATPLOTLIB_HINT",
    "STYLES",
    "WINNER_COLOR",
    "OutcomeStyle",
    "ReportFiles",
    "best_so_far",
    "best_so_far_figure",
    "default_out_dir",
    "figure_png",
    "handoff_trial",
    "json_text",
    "load_result",
    "matplotlib_available",
    "print_table",
    "public_url",
    "render_figures",
    "render_html",
    "report_json",
    "shorten",
    "space_figure",
    "space_point",
    "table_html",
    "trial_json",
    "trials_table",
    "write_report",
]
