"""The ``vllm-tune`` command line: thin click commands over the library.

Every error a user can cause ends in one line and a non-zero exit: ``SloGuardError`` is mapped to
``Error: <message>`` (exit 1); click's own usage errors exit 2. One module per group of commands:
``measure`` (simulate, explain, bench), ``tuning`` (tune, export, report), ``compare``, ``serve``.
"""

from __future__ import annotations

import click

from .. import __version__
from .compare import compare
from .measure import bench, explain, simulate
from .serve import serve
from .tuning import SEARCHERS, export, report, tune

__all__ = ["SEARCHERS", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vllm-tune")
def main() -> None:
    """Find the vLLM engine arguments that meet your latency SLO, then serve with them."""


for _command in (simulate, explain, bench, tune, export, report, compare, serve):
    main.add_command(_command)
