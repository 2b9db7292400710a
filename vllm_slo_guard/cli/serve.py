"""``serve``: the drop-in for ``vllm serve`` (tune or reuse a result, then serve the winner)."""

from __future__ import annotations

import sys
from typing import Any

import click

from ..errors import SloGuardError
from ..options import (
    slos_from_options,
    timeouts_from_options,
    workload_from_options,
)
from .common import PASS_THROUGH, require_sim_gpu_option, terminate_on_sigterm
from .tuning import tune_option_params


@click.command(context_settings=PASS_THROUGH, params=tune_option_params())
@click.argument("model", required=False)
@click.option(
    "--config", "config_file", type=click.Path(dir_okay=False),
    help="Serve this saved result (`vllm-tune tune -o FILE`, or a cache file) without tuning; MODEL may be omitted.",
)  # fmt: skip
@click.option("--retune", is_flag=True, help="Tune again, in a fresh study, even when a cached result exists.")
@click.option("--no-tune", is_flag=True, help="Never tune: serve the cached (or --config) result, or fail.")
@click.argument("engine_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def serve(
    ctx: click.Context,
    model: str | None,
    config_file: str | None,
    retune: bool,
    no_tune: bool,
    engine_args: tuple[str, ...],
    **options: Any,
) -> None:
    """Tune MODEL's vLLM engine arguments for the SLOs (or reuse a cached result), then serve the winner.

    Every flag that is not listed here is a `vllm serve` flag: pinned while tuning, and forwarded to
    the final server. --host, --port, --api-key and --served-model-name go to the final server only
    (trials run on 127.0.0.1 and a free port) and do not change the cached result's fingerprint.
    A result with a winner is cached under $XDG_CACHE_HOME/vllm-tune/results/, so the same command
    serves at once the next time (--retune tunes again; --no-tune never tunes). If the winner does not
    become healthy, the runner-ups are started, then vLLM's defaults with your flags (each failure is
    a WARNING line with its crash category and root cause). The healthy server runs in the foreground;
    SIGTERM and SIGINT are forwarded to it, and its exit status is ours. Other exits: 1 for an error
    (one line), 2 for usage errors, 130 when interrupted before the server was up.
    """
    from ..serve import ServeRequest
    from ..serve import serve as run_serve
    from ..spec import TuneSpec
    from ..units import parse_duration

    tokens = [*([model] if model is not None else []), *engine_args]  # click takes a leading flag as MODEL
    model, pinned = (tokens[0], tokens[1:]) if tokens and not tokens[0].startswith("-") else (None, tokens)
    o = options
    if retune and (no_tune or config_file):
        raise click.UsageError("--retune tunes; it cannot be combined with --no-tune or --config")
    if not model and not config_file:
        raise click.UsageError("give MODEL (or --config FILE with a saved result)")
    terminate_on_sigterm()
    try:
        slos = slos_from_options(o["slo_texts"], o["slo_p95"])
        if not slos and not config_file:
            raise click.UsageError("at least one SLO is required, e.g. --slo-p95 200ms or --slo ttft:p95=200ms")
        require_sim_gpu_option(o["engine"], o["gpu"])
        objective = o["objective"]
        if objective is None:
            rate_given = ctx.get_parameter_source("request_rate") != click.core.ParameterSource.DEFAULT
            objective = "latency" if rate_given or o["max_concurrency"] is not None else "capacity"
        spec = TuneSpec(
            model=model or "", slos=tuple(slos), workload=workload_from_options(o, o["seed"]), objective=objective,
            budget=o["budget"], time_budget_s=parse_duration(o["time_budget"]) if o["time_budget"] else None,
            engine=o["engine"], gpu=o["gpu"], gpu_count=o["gpu_count"], sim_mode=o["sim_mode"], vllm_cmd=o["vllm_cmd"],
            device=o["device"], pinned_args=tuple(pinned), tune=o["tune_ranges"], fix=o["fixed"], seed=o["seed"],
            searcher=o["searcher"], confirm_top_k=o["confirm_top_k"], endpoint=o["endpoint"],
            study_name=o["study_name"], storage=o["storage"],
            timeouts=timeouts_from_options(o["startup_timeout"], o["request_timeout"], o["trial_timeout"]),
        )  # fmt: skip
        request = ServeRequest(
            spec, config_path=config_file, retune=retune, no_tune=no_tune, quiet=o["quiet"],
            output_file=o["output_file"],
        )  # fmt: skip
        status = run_serve(request)
    except SloGuardError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        click.echo("interrupted: no server was left running; finished trials are stored", err=True)
        sys.exit(130)
    sys.exit(status)
