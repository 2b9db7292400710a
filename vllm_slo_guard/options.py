"""Command-line options shared by several ``vllm-tune`` commands, each defined once.

Workload flags keep ``vllm bench serve``'s names so an operator's benchmark command line carries over;
SLO, engine, timeout and storage flags are spelled and explained the same in ``bench`` and ``tune``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import click

from .bench.workload import DATASETS, WorkloadSpec
from .spec import Slo, Timeouts, parse_slo
from .units import parse_duration

F = TypeVar("F", bound=Callable[..., Any])


def _rate(ctx: click.Context, param: click.Parameter, value: str) -> float:
    try:
        rate = float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number (use inf for all requests at once)") from None
    if math.isnan(rate) or rate <= 0:
        raise click.BadParameter("must be a positive number of requests per second, or inf")
    return rate


TUNE_NUM_PROMPTS = 300  # per trial: a few hundred requests give a usable p95; vllm bench's 1000 per trial is slow

_WORKLOAD_OPTIONS = [
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
        "--dataset-name",
        type=click.Choice(DATASETS),
        default=None,
        help="vLLM bench's dataset: random, or sharegpt when --dataset-path is given; custom is a JSONL "
        "file of prompt (and output_tokens) lines; prefix_repetition shares a few random prefixes.",
    ),
    click.option(
        "--dataset-path",
        type=click.Path(dir_okay=False),
        default=None,
        help="The dataset file: ShareGPT-format JSON (the default with a path), or JSONL for custom.",
    ),
    click.option(
        "--custom-output-len",
        type=int,
        default=None,
        help="Output tokens of every custom request (default 256); -1 takes each line's output_tokens.",
    ),
    click.option(
        "--skip-chat-template",
        is_flag=True,
        default=False,
        help="custom with --endpoint completions: send each prompt as it is, not in the model's chat template.",
    ),
    click.option("--prefix-repetition-prefix-len", type=int, default=256, show_default=True, help="Prefix tokens."),
    click.option(
        "--prefix-repetition-suffix-len", type=int, default=256, show_default=True, help="Suffix tokens per request."
    ),
    click.option(
        "--prefix-repetition-num-prefixes", type=int, default=10, show_default=True, help="Distinct prefixes."
    ),
    click.option("--prefix-repetition-output-len", type=int, default=128, show_default=True, help="Output tokens."),
]


def workload_options(func: F) -> F:
    """Add the ``vllm bench serve`` workload flags to a command."""
    num_prompts = click.option(
        "--num-prompts", type=int, default=1000, show_default=True, help="Requests in the benchmark."
    )
    for option in reversed([num_prompts, *_WORKLOAD_OPTIONS]):
        func = option(func)
    return func


def tune_workload_options(func: F) -> F:
    """The workload flags for tuning: the same, with fewer requests per trial by default."""
    num_prompts = click.option(
        "--num-prompts",
        type=int,
        default=TUNE_NUM_PROMPTS,
        show_default=True,
        help="Requests per trial (confirmations send twice as many).",
    )
    for option in reversed([num_prompts, *_WORKLOAD_OPTIONS]):
        func = option(func)
    return func


_PREFIX_REPETITION = (
    "prefix_repetition_prefix_len",
    "prefix_repetition_suffix_len",
    "prefix_repetition_num_prefixes",
    "prefix_repetition_output_len",
)


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
        dataset_name=options.get("dataset_name"),
        custom_output_len=options.get("custom_output_len"),
        skip_chat_template=bool(options.get("skip_chat_template")),
        **{name: options[name] for name in _PREFIX_REPETITION if options.get(name) is not None},
    )
    spec.validate()
    return spec


# --- SLOs, engines, timeouts, storage: shared by bench and tune ----------------------------------------

_SLO_OPTIONS = [
    click.option(
        "--slo", "slo_texts", multiple=True, help="An SLO such as ttft:p95=200ms; may be used more than once."
    ),
    click.option("--slo-p95", help="Short for --slo ttft:p95=VALUE."),
]

_ENGINE_OPTIONS = [
    click.option(
        "--engine",
        type=click.Choice(["vllm", "sim"]),
        default="vllm",
        show_default=True,
        help="The real vLLM, or the built-in simulated engine.",
    ),
    click.option("--gpu", envvar="SLO_GUARD_SIM_GPU", show_envvar=True, help="Simulated GPU (with --engine sim)."),
    click.option("--gpu-count", type=int, default=1, show_default=True, help="Simulated GPUs (with --engine sim)."),
    click.option(
        "--vllm-cmd",
        help="How to start vLLM, split as a shell would, e.g. "
        "'/venv/bin/python -m vllm.entrypoints.openai.api_server'.",
    ),
    click.option(
        "--device",
        type=click.Choice(["auto", "cuda", "cpu"]),
        default="auto",
        show_default=True,
        help="Where the real vLLM runs; cpu adds --kv-cache-memory-bytes unless given.",
    ),
    click.option(
        "--endpoint",
        type=click.Choice(["completions", "chat"]),
        default="completions",
        show_default=True,
        help="The OpenAI API the requests use.",
    ),
]

_TIMEOUT_OPTIONS = [
    click.option("--startup-timeout", default="15m", show_default=True, help="Deadline for the server to be healthy."),
    click.option("--request-timeout", default="120s", show_default=True, help="Deadline of one request."),
    click.option("--trial-timeout", default="30m", show_default=True, help="Deadline of the whole measurement."),
]

storage_option = click.option(
    "--storage",
    envvar="SLO_GUARD_STORAGE",
    show_envvar=True,
    help="Optuna storage URL of the study, e.g. postgresql://host/db (default: SQLite in the cache folder).",
)
output_option = click.option(
    "-o", "--output-file", type=click.Path(dir_okay=False), help="Write the result to FILE (atomically)."
)


def _stack(options: list[Callable[[F], F]]) -> Callable[[F], F]:
    def decorate(func: F) -> F:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


slo_options = _stack(_SLO_OPTIONS)
engine_options = _stack(_ENGINE_OPTIONS)
timeout_options = _stack(_TIMEOUT_OPTIONS)


def slos_from_options(slo_texts: tuple[str, ...], slo_p95: str | None) -> list[Slo]:
    """The SLOs of ``--slo`` (in order) and ``--slo-p95`` (TTFT p95)."""
    slos = [parse_slo(text) for text in slo_texts]
    if slo_p95:
        slos.append(parse_slo(slo_p95, default_metric="ttft", default_stat="p95"))
    return slos


def timeouts_from_options(startup_timeout: str, request_timeout: str, trial_timeout: str) -> Timeouts:
    return Timeouts(
        startup_s=parse_duration(startup_timeout),
        request_s=parse_duration(request_timeout),
        trial_s=parse_duration(trial_timeout),
    )
