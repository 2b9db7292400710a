"""Writing a report folder: the figures when matplotlib is there, then ``index.html``.

Why the page is written last and atomically: a reader (a CI artifact upload, a browser left open)
never sees a half-written ``index.html``, and a missing matplotlib costs the PNGs, never the page.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..files import write_atomic
from ..search.result import TuneResult
from .figures import render_figures
from .html import render_html


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
