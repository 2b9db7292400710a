"""Command-line options shared by several ``vllm-tune`` commands, each defined once.

Workload flags keep ``vllm bench serve``'s names so an operator's benchmark command line carries over.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import click

from .bench.workload import WorkloadSpec

F = TypeVar("F", bound=Callable[..., Any])


def _rate(ctx: click.Context, param: click.Parameter, value: str) -> float:
    try:
        rate = float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number (use inf for all requests at once)") from None
    if math.isnan(rate) or rate <= 0:
        raise click.BadParameter("must be a positive number of requests per second, or inf")
    return rate


_WORKLOAD_OPTIONS = [
    click.option("--num-prompts", type=int, default=1000, show_default=True, help="Requests in the benchmark."),
    click.option(
        "--request-rate",
        default="inf",
        show_default=True,
        callback=_rate,
        help="Requests per second (inf: all at once).",
    ),
    click.option(
        "--burstiness",
        type=float,
        default=1.0,
        show_default=True,
        help="Gamma shape of arrival gaps (1 = Poisson).",
    ),
    click.option("--max-concurrency", type=int, default=None, help="Client-side limit of requests in flight."),
    click.option("--random-input-len", type=int, default=1024, show_default=True, help="Prompt tokens."),
    click.option("--random-output-len", type=int, default=128, show_default=True, help="Output tokens."),
    click.option(
        "--random-range-ratio",
        type=float,
        default=0.0,
        show_default=True,
        help="Lengths vary uniformly by ± this fraction.",
    ),
    click.option("--random-prefix-len", type=int, default=0, show_default=True, help="Shared prefix tokens."),
    click.option(
        "--dataset-path",
        type=click.Path(dir_okay=False),
        default=None,
        help="ShareGPT-format JSON file instead of random prompts.",
    ),
]


def workload_options(func: F) -> F:
    """Add the ``vllm bench serve`` workload flags to a command."""
    for option in reversed(_WORKLOAD_OPTIONS):
        func = option(func)
    return func


def workload_from_options(options: dict[str, Any], seed: int) -> WorkloadSpec:
    """Build (and validate) the workload from parsed workload flags."""
    spec = WorkloadSpec(
        num_prompts=options["num_prompts"],
        request_rate=options["request_rate"],
        burstiness=options["burstiness"],
        max_concurrency=options["max_concurrency"],
        random_input_len=options["random_input_len"],
        random_output_len=options["random_output_len"],
        random_range_ratio=options["random_range_ratio"],
        random_prefix_len=options["random_prefix_len"],
        dataset_path=options["dataset_path"],
        seed=seed,
    )
    spec.validate()
    return spec
