"""Commands on a tuning study: ``tune`` it, ``export`` its result, ``report`` on it."""

from __future__ import annotations

import sys
from typing import Any

import click

from ..errors import SloGuardError
from ..options import (
    engine_options,
    output_option,
    slo_options,
    slos_from_options,
    storage_option,
    timeout_options,
    timeouts_from_options,
    tune_workload_options,
    workload_from_options,
)
from ..search.registry import DEFAULT_SEARCHER, SEARCHER_NAMES
from .common import PASS_THROUGH, require_sim_gpu_option, terminate_on_sigterm

SEARCHERS = SEARCHER_NAMES


@click.command(context_settings=PASS_THROUGH)
@click.argument("model")
@slo_options
@click.option(
    "--objective", type=click.Choice(["latency", "capacity"]), default=None,
    help="latency: minimize the first SLO's metric at the given load; capacity: maximize the request rate "
    "that meets every SLO. Default: latency with --request-rate or --max-concurrency, else capacity.",
)  # fmt: skip
@tune_workload_options
@engine_options
@click.option(
    "--sim-mode", type=click.Choice(["virtual", "server"]), default="virtual", show_default=True,
    help="With --engine sim: in-process in virtual time (fast), or the simulated server in real time.",
)  # fmt: skip
@timeout_options
@click.option(
    "--budget", type=click.IntRange(min=1), default=15, show_default=True,
    help="Trials of the whole study (guarded ones count, reused ones do not); a larger budget continues a study.",
)  # fmt: skip
@click.option(
    "--time-budget", default=None,
    help="Also stop once the trials' summed cost reaches this, e.g. 30m (simulated time with --sim-mode virtual).",
)  # fmt: skip
@click.option(
    "--searcher", type=click.Choice(SEARCHERS), default=DEFAULT_SEARCHER, show_default=True,
    help="slo-guard: feasible-first annealing, then constrained TPE; random; grid (vLLM's auto_tune); tpe (cold).",
)  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the searcher and every trial's workload.")
@click.option(
    "--confirm-top-k", type=click.IntRange(min=0), default=2, show_default=True,
    help="Re-measure the best K configs (longer, another seed) and pick the winner on those figures; 0 skips.",
)  # fmt: skip
@click.option(
    "--tune", "tune_ranges", multiple=True, metavar="KNOB=RANGE",
    help="Set a knob's range, e.g. gpu_memory_utilization=0.5:0.97 or block_size=16,32; may be used more than once.",
)  # fmt: skip
@click.option(
    "--fix", "fixed", multiple=True, metavar="KNOB=VALUE",
    help="Hold a knob at one value, e.g. enable_prefix_caching=false; may be used more than once.",
)  # fmt: skip
@storage_option
@click.option("--study-name", help="Default: the model's name and a hash of every setting that defines the study.")
@click.option("--quiet", is_flag=True, help="Print nothing but errors.")
@output_option
@click.argument("engine_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def tune(
    ctx: click.Context,
    model: str,
    slo_texts: tuple[str, ...],
    slo_p95: str | None,
    objective: str | None,
    engine: str,
    gpu: str | None,
    gpu_count: int,
    vllm_cmd: str | None,
    device: str,
    endpoint: str,
    sim_mode: str,
    startup_timeout: str,
    request_timeout: str,
    trial_timeout: str,
    budget: int,
    time_budget: str | None,
    searcher: str,
    seed: int,
    confirm_top_k: int,
    tune_ranges: tuple[str, ...],
    fixed: tuple[str, ...],
    storage: str | None,
    study_name: str | None,
    quiet: bool,
    output_file: str | None,
    engine_args: tuple[str, ...],
    **workload: Any,
) -> None:
    """Search the vLLM engine arguments of MODEL that best meet the SLOs, then confirm the winner.

    Any other flag is a `vllm serve` flag: pinned (never tuned) and forwarded to every trial. Every
    trial is stored in an Optuna study as it finishes; re-running the same command resumes it (a
    larger --budget extends it). Prints one line per trial, then a table of all trials and the
    winner's `vllm serve` command. Exit status: 0 with a winner, 1 when no configuration met every
    SLO or on an error (one line), 2 for usage errors.
    """
    import optuna

    from ..export import to_toml
    from ..files import write_atomic
    from ..progress import make_progress
    from ..search.preflight import tune_checked as run_tune  # tune, stopped at once when vLLM refuses pinned flags
    from ..spec import TuneSpec
    from ..units import parse_duration

    terminate_on_sigterm()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        slos = slos_from_options(slo_texts, slo_p95)
        if not slos:
            raise click.UsageError("at least one SLO is required, e.g. --slo-p95 200ms or --slo ttft:p95=200ms")
        require_sim_gpu_option(engine, gpu)
        if objective is None:
            rate_given = ctx.get_parameter_source("request_rate") != click.core.ParameterSource.DEFAULT
            objective = "latency" if rate_given or workload["max_concurrency"] is not None else "capacity"
        spec = TuneSpec(
            model=model, slos=tuple(slos), workload=workload_from_options(workload, seed), objective=objective,
            budget=budget, time_budget_s=parse_duration(time_budget) if time_budget else None, engine=engine,
            gpu=gpu, gpu_count=gpu_count, sim_mode=sim_mode, vllm_cmd=vllm_cmd, device=device,
            pinned_args=tuple(engine_args), tune=tune_ranges, fix=fixed, seed=seed, searcher=searcher,
            confirm_top_k=confirm_top_k, endpoint=endpoint, study_name=study_name, storage=storage,
            timeouts=timeouts_from_options(startup_timeout, request_timeout, trial_timeout),
        )  # fmt: skip
        result = run_tune(spec, progress=make_progress(quiet))
        if output_file:
            write_atomic(output_file, to_toml(result))
            if not quiet:
                click.echo(f"wrote {output_file}")
    except SloGuardError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        click.echo("interrupted: the trial server was stopped; finished trials are stored (re-run to resume)", err=True)
        sys.exit(130)
    if result.winner is None:
        click.echo("Error: no configuration met every SLO (the closest miss is in the study)", err=True)
        sys.exit(1)


def tune_option_params() -> list[click.Parameter]:
    """Every option of `tune`, the same objects: serve's spelling, defaults and help can never drift from it."""
    return [param for param in tune.params if isinstance(param, click.Option)]


@click.command("export")
@click.argument("study")
@storage_option
@click.option(
    "--format", "fmt", type=click.Choice(["toml", "yaml", "args"]), default="toml", show_default=True,
    help="toml: the whole result; yaml: the winner as a `vllm serve --config` file; args: the winner's flags.",
)  # fmt: skip
@output_option
def export(study: str, storage: str | None, fmt: str, output_file: str | None) -> None:
    """Write the result of the stored tuning study STUDY (no re-run, no GPU needed)."""
    from ..export import export_study
    from ..files import write_atomic

    try:
        text = export_study(storage, study, fmt)
        if output_file:
            write_atomic(output_file, text)
        else:
            click.echo(text, nl=False)
    except SloGuardError as exc:
        raise click.ClickException(str(exc)) from None


@click.command("report")
@click.argument("study")
@storage_option
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False), default=None,
    help="Folder for index.html, best_so_far.png and space.png (default: ./vllm-tune-report-STUDY; "
    "with --json: no files unless given).",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (spec, winner, trials, counts) instead.")
def report(study: str, storage: str | None, out_dir: str | None, as_json: bool) -> None:
    """Report the stored tuning study STUDY: every trial, two figures and a self-contained index.html.

    No re-run, no GPU needed. The figures need matplotlib (pip install "vllm-slo-guard[report]");
    without it the table and index.html are still written.
    """
    from ..report import MATPLOTLIB_HINT, default_out_dir, json_text, load_result, print_table, write_report

    try:
        result = load_result(storage, study)
        if as_json:
            click.echo(json_text(result))
        else:
            print_table(result, sys.stdout)
        files = write_report(result, out_dir or default_out_dir(result.study_name)) if out_dir or not as_json else None
    except SloGuardError as exc:
        raise click.ClickException(str(exc)) from None
    if files is not None:
        if files.figures_skipped:
            click.echo(f"note: matplotlib is not installed, so no figures; {MATPLOTLIB_HINT}", err=True)
        written = ", ".join(p.name for p in [*files.figures, files.index])
        click.echo(f"report written to {files.folder}/: {written}", err=as_json)
