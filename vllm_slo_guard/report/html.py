"""The report as one self-contained HTML page: summary, figures, every trial.

Why nothing is linked: the figures are embedded as base64 PNG and the CSS inline, so ``index.html``
can be attached to a ticket or kept as a CI artifact as one file. The trials are the terminal table's
rows with the root causes whole and the repair notes added; each row is edged in its outcome's
figure colour (``report.style``).
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from rich.table import Column, Table
from rich.text import Text

from ..bench.workload import WorkloadSpec
from ..export import serve_command
from ..progress import duration_text, primary_label, primary_value, violation_text
from ..search.result import Candidate, TuneResult
from .data import hardware_text, is_winner, public_url, slo_misses
from .figures import MATPLOTLIB_HINT
from .style import STYLES
from .table import shorten, trials_table

_STATUS_CSS = "".join(
    f"tr.{status} td:first-child {{ border-left: 4px solid {style.color}; }}\n" for status, style in STYLES.items()
)
_CSS = f"""
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1500px; }}
h1 {{ font-size: 1.4em; }} h2 {{ font-size: 1.15em; margin-top: 1.6em; }}
table {{ border-collapse: collapse; font-size: 0.85em; }}
th, td {{ border: 1px solid #ddd; padding: 3px 7px; text-align: left; vertical-align: top; }}
th {{ background: #f4f4f4; }}
table.facts th {{ width: 11em; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }}
td.wrap {{ white-space: pre-line; max-width: 32em; }}
{_STATUS_CSS}tr.winner {{ background: #fff7cc; }}
pre {{ background: #f6f8fa; padding: 0.6em; overflow-x: auto; white-space: pre-wrap; }}
img {{ max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }}
.note {{ color: #8a5a00; }}
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
    classes = [f"{r.outcome.status}{' winner' if is_winner(r, result.winner) else ''}" for r in result.trials]
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
        ("hardware", esc(hardware_text(result.hardware))),
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
        f"{slo_misses(result.trials)} SLO misses",
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
