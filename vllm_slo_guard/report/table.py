"""The report's trials table: tune's final table with the root cause and the other SLO metrics added.

Why built on ``progress.result_table`` rather than beside it: the report and ``vllm-tune tune`` can
then never disagree about a trial. In a log or a pipe the table is printed at its natural width, so
one trial is one line and stays greppable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TextIO

from rich.console import Console, RenderableType
from rich.table import Column, Table
from rich.text import Text

from ..progress import PLAIN_WIDTH, primary_label, primary_value, result_table, summary_lines
from ..search.objective import Objective
from ..search.result import TuneResult
from .data import public_url

CAUSE_WIDTH = 60  # a root cause in the terminal table; the HTML page shows it whole
UNBOUNDED_WIDTH = 1000  # for measuring the table's natural width


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
