"""The ``vllm-tune`` command line: thin click commands over the library.

Every error a user can cause ends in one line and a non-zero exit: ``SloGuardError`` is mapped to
``Error: <message>`` (exit 1); click's own usage errors exit 2.
"""

from __future__ import annotations

import json
import signal
import sys
from typing import Any

import click

from . import __version__
from .errors import InputError, SloGuardError
from .options import (
    engine_options,
    output_option,
    slo_options,
    slos_from_options,
    storage_option,
    timeout_options,
    timeouts_from_options,
    tune_workload_options,
    workload_from_options,
    workload_options,
)
from .search.registry import DEFAULT_SEARCHER, SEARCHER_NAMES
from .spec import require_sim_gpu
from .units import parse_size

_PASS_THROUGH = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": ["-h", "--help"]}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vllm-tune")
def main() -> None:
    """Find the vLLM engine arguments that meet your latency SLO, then serve with them."""


@main.command(context_settings=_PASS_THROUGH)
@click.argument("model")
@click.option(
    "--gpu",
    envvar="SLO_GUARD_SIM_GPU",
    show_envvar=True,
    required=True,
    help="Simulated GPU, e.g. A100-40GB, H100-80GB, L4-24GB, or cpu (vLLM's CPU backend).",
)
@click.option("--gpu-count", type=int, default=1, show_default=True, help="GPUs on the simulated node.")
@click.option("--gpu-memory-used", default="0", help="Device memory other processes hold, e.g. 10GiB.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the workload and the simulator's noise.")
@workload_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the result table.")
@click.argument("engine_args", nargs=-1, type=click.UNPROCESSED)
def simulate(
    model: str,
    gpu: str,
    gpu_count: int,
    gpu_memory_used: str,
    seed: int,
    as_json: bool,
    engine_args: tuple[str, ...],
    **workload: Any,
) -> None:
    """Benchmark MODEL on the simulated vLLM engine (virtual time, no GPU needed).

    Any other flag is a `vllm serve` engine flag (e.g. --max-num-seqs 8 --enforce-eager) and is
    checked exactly as vLLM 0.32 would. Prints the figures `vllm bench serve` prints; a config that
    vLLM would refuse or that runs out of memory reports vLLM's own error (exit 1; with --json the
    object has status "crash" and the exit status is 0).
    """
    from .engine.sim import simulate as run_simulation

    try:
        spec = workload_from_options(workload, seed)
        result = run_simulation(
            [model, *engine_args], spec, gpu, seed=seed, gpu_count=gpu_count, used_bytes=parse_size(gpu_memory_used)
        )
    except SloGuardError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2, sort_keys=False))
        return
    if result.status == "crash":
        click.echo(f"Simulated `vllm serve` failed to start ({result.crash_category}):", err=True)
        click.echo(result.message or "", err=True)
        sys.exit(1)
    from .bench.summary import format_bench_result

    click.echo(
        f"Simulated {model} on {gpu}: KV cache {result.kv_cache_tokens:,} tokens "
        f"({result.max_concurrency:.2f}x at max_model_len {result.max_model_len}), "
        f"est. startup {result.startup_s:.0f} s, {result.num_preemptions} preemptions"
    )
    click.echo(
        format_bench_result(result.metrics, request_rate=spec.request_rate, max_concurrency=spec.max_concurrency)
    )


@main.command()
@click.argument("logfile")
@click.option(
    "--exit-code",
    type=int,
    default=None,
    help="The server's exit status (negative: killed by that signal). Default: the log's EXIT_CODE=N line.",
)
@click.option("--timed-out", is_flag=True, help="The server missed its deadline (startup or measurement).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of three lines.")
def explain(logfile: str, exit_code: int | None, timed_out: bool, as_json: bool) -> None:
    """Say why a vLLM server failed, from its log LOGFILE (`-` reads standard input).

    Prints the crash category (oom, config_invalid, timeout, engine_error or environment), the
    root-cause line and a one-line repair, or `no failure found`.
    """
    from .engine.crash import CrashReport, classify, exit_code_from_log

    if logfile == "-":
        text = sys.stdin.read()
    else:
        try:
            with open(logfile, encoding="utf-8", errors="replace") as handle:
                text = handle.read()
        except OSError as exc:
            raise click.ClickException(f"cannot read {logfile}: {exc.strerror or exc}") from None
    if exit_code is None:
        exit_code = exit_code_from_log(text)
    report: CrashReport | None = classify(text, exit_code=exit_code, timed_out=timed_out)
    if as_json:
        keys = ("category", "root_cause", "suggestion", "pattern", "phase", "exit_code", "evidence")
        click.echo(json.dumps(report.to_json() if report else dict.fromkeys(keys), indent=2))
    elif report is None:
        click.echo("no failure found")
    else:
        click.echo(f"category: {report.category}\nroot cause: {report.root_cause}\nsuggestion: {report.suggestion}")


def _require_sim_gpu(engine: str, gpu: str | None) -> None:
    """The simulated engine needs a GPU to simulate: a usage error (exit 2), as for a missing option."""
    try:
        require_sim_gpu(engine, gpu)
    except InputError as exc:
        raise click.UsageError(str(exc)) from None


def _terminate_on_sigterm() -> None:
    """Make SIGTERM unwind like Ctrl-C, so every ``finally`` stops its trial server.

    It is delivered as a SIGINT when SIGINT has a handler: inside ``asyncio.run`` (the load generator)
    that handler cancels the main task cleanly, where a KeyboardInterrupt raised in whatever task was
    running left "Task exception was never retrieved" tracebacks behind. Where SIGINT is ignored (a
    background job of a non-interactive shell), KeyboardInterrupt is raised directly.
    """

    def handler(signum: int, frame: Any) -> None:
        if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL, None):
            raise KeyboardInterrupt
        signal.raise_signal(signal.SIGINT)

    signal.signal(signal.SIGTERM, handler)


@main.command(context_settings=_PASS_THROUGH)
@click.argument("model")
@engine_options
@slo_options
@timeout_options
@click.option(
    "--log-dir", type=click.Path(file_okay=False), help="Where the server log goes (default: the cache folder)."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the workload (and the simulator).")
@workload_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the result table.")
@click.argument("engine_args", nargs=-1, type=click.UNPROCESSED)
def bench(
    model: str,
    engine: str,
    gpu: str | None,
    gpu_count: int,
    vllm_cmd: str | None,
    device: str,
    slo_texts: tuple[str, ...],
    slo_p95: str | None,
    endpoint: str,
    startup_timeout: str,
    request_timeout: str,
    trial_timeout: str,
    log_dir: str | None,
    seed: int,
    as_json: bool,
    engine_args: tuple[str, ...],
    **workload: Any,
) -> None:
    """Measure one configuration of MODEL end to end: start, wait, load, measure, stop.

    Any other flag is a `vllm serve` flag, forwarded unchanged. The server binds 127.0.0.1 on a free
    port and is always stopped, also on Ctrl-C. Exit status: 0 when the server ran (whether or not
    the SLOs held; see `status`), 1 when it crashed (the crash category and vLLM's root cause are
    printed), 2 for usage errors.
    """
    from .engine.engines import flag_value
    from .engine.factory import make_engine
    from .hardware import probe_gpus
    from .paths import log_dir as default_log_dir
    from .trial import run_trial

    _terminate_on_sigterm()
    try:
        spec = workload_from_options(workload, seed)
        slos = slos_from_options(slo_texts, slo_p95)
        timeouts = timeouts_from_options(startup_timeout, request_timeout, trial_timeout)
        _require_sim_gpu(engine, gpu)
        on_cpu = engine != "sim" and (device == "cpu" or (device == "auto" and not probe_gpus()))
        runner = make_engine(engine, gpu=gpu, gpu_count=gpu_count, seed=seed, vllm_cmd=vllm_cmd, on_cpu=on_cpu)
        result = run_trial(
            runner, model, list(engine_args), spec, slos=slos, timeouts=timeouts,
            log_dir=log_dir or default_log_dir(), endpoint=endpoint,  # type: ignore[arg-type]
            served_model_name=flag_value(engine_args, "--served-model-name"),
            api_key=flag_value(engine_args, "--api-key") or "EMPTY",
            name="bench",
        )  # fmt: skip
    except SloGuardError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        click.echo("interrupted: the trial server was stopped", err=True)
        sys.exit(130)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
        sys.exit(1 if result.status == "crash" else 0)
    if result.crash is not None:
        click.echo(f"crash ({result.crash.category}): {result.crash.root_cause}", err=True)
        click.echo(f"suggestion: {result.crash.suggestion}", err=True)
        click.echo(f"log: {result.log_path}", err=True)
        sys.exit(1)
    from .bench.summary import format_bench_result

    click.echo(f"server ready in {result.startup_s:.1f} s; status {result.status}; log: {result.log_path}")
    click.echo(
        format_bench_result(result.metrics, request_rate=spec.request_rate, max_concurrency=spec.max_concurrency)
    )


SEARCHERS = SEARCHER_NAMES


@main.command(context_settings=_PASS_THROUGH)
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

    from .export import to_toml
    from .files import write_atomic
    from .progress import make_progress
    from .search.preflight import tune_checked as run_tune  # tune, stopped at once when vLLM refuses pinned flags
    from .spec import TuneSpec
    from .units import parse_duration

    _terminate_on_sigterm()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        slos = slos_from_options(slo_texts, slo_p95)
        if not slos:
            raise click.UsageError("at least one SLO is required, e.g. --slo-p95 200ms or --slo ttft:p95=200ms")
        _require_sim_gpu(engine, gpu)
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


@main.command("export")
@click.argument("study")
@storage_option
@click.option(
    "--format", "fmt", type=click.Choice(["toml", "yaml", "args"]), default="toml", show_default=True,
    help="toml: the whole result; yaml: the winner as a `vllm serve --config` file; args: the winner's flags.",
)  # fmt: skip
@output_option
def export(study: str, storage: str | None, fmt: str, output_file: str | None) -> None:
    """Write the result of the stored tuning study STUDY (no re-run, no GPU needed)."""
    from .export import export_study
    from .files import write_atomic

    try:
        text = export_study(storage, study, fmt)
        if output_file:
            write_atomic(output_file, text)
        else:
            click.echo(text, nl=False)
    except SloGuardError as exc:
        raise click.ClickException(str(exc)) from None


@main.command("report")
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
    from .report import MATPLOTLIB_HINT, default_out_dir, json_text, load_result, print_table, write_report

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


@main.command("compare")
@click.option(
    "--scenario",
    "scenario_file",
    required=True,
    type=click.Path(dir_okay=False),
    help="A scenario TOML file (see benchmarks/scenarios/).",
)
@click.option(
    "--searchers",
    default="slo-guard,random,tpe,grid",
    show_default=True,
    help="Comma-separated searchers; the first is the candidate the tests compare with the others.",
)
@click.option(
    "--seeds",
    type=click.IntRange(min=2),
    default=20,
    show_default=True,
    help="Seeds 0..N-1, the same for every searcher.",
)
@click.option("--budget", type=click.IntRange(min=1), default=15, show_default=True, help="Trials per run.")
@click.option(
    "--confirm-top-k",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Each run re-measures its best K configs on fresh, longer samples before choosing its winner, as "
    "`vllm-tune tune` does (off by default: the study measures the search on one fixed sample).",
)
@click.option("--jobs", type=click.IntRange(min=1), help="Worker processes (default: one per CPU).")
@click.option(
    "--json", "json_file", type=click.Path(dir_okay=False), help="Write the whole report as JSON to this file."
)
@click.option(
    "--figures", "figures_dir", type=click.Path(file_okay=False), help="Write the three figures into this folder."
)
@click.option(
    "--oracle-cache",
    type=click.Path(file_okay=False),
    help="Where optima are cached (default: the oracle folder in the vllm-tune cache).",
)
@click.option("--quiet", is_flag=True, help="No progress line.")
def compare(
    scenario_file: str, searchers: str, seeds: int, budget: int, confirm_top_k: int, jobs: int | None,
    json_file: str | None, figures_dir: str | None, oracle_cache: str | None, quiet: bool,
) -> None:  # fmt: skip
    """Run every searcher on every seed of a scenario (simulated engine, in virtual time) and compare them.

    Runs are paired by seed. Every trial replays one workload sample, the one the optimum was found on
    by an exhaustive simulation of a discretized space (cached); winners are also judged on fresh
    samples (held-out regret). Prints per searcher the regret, the fast regime, crashes and cost, then paired Wilcoxon,
    Mann-Whitney and Brown-Forsythe tests of the first searcher against each other one, Holm-corrected.
    """
    from pathlib import Path

    from .errors import InputError
    from .files import write_atomic
    from .paths import cache_dir
    from .study.compare import compare as run_compare
    from .study.compare import report_json, worker_count
    from .study.oracle import find_optimum
    from .study.scenario import load_scenario
    from .study.tables import KEY_METRICS, optimum_line, searcher_table, tests_table

    names = [n.strip() for n in searchers.split(",") if n.strip()]
    try:
        scenario = load_scenario(scenario_file)
        if len(set(names)) != len(names) or not names:
            raise InputError(f"--searchers {searchers!r}: name each searcher once")
        if not quiet:
            click.echo(f"{scenario.name}: computing the optimum (cached after the first time) ...", err=True)
        cache = Path(oracle_cache) if oracle_cache else cache_dir() / "oracle"
        oracle = find_optimum(scenario, cache_dir=cache, jobs=worker_count(jobs))

        def progress(run: dict[str, Any], done: int, total: int) -> None:
            if not quiet and sys.stderr.isatty():
                click.echo(f"\r{scenario.name}: {done}/{total} runs", nl=done == total, err=True)

        report = run_compare(
            scenario, oracle, searchers=names, seeds=seeds, budget=budget, candidate=names[0], jobs=jobs,
            confirm_top_k=confirm_top_k, on_run=progress,
        )  # fmt: skip
        if json_file:
            write_atomic(json_file, report_json(report))
        figures = []
        if figures_dir:
            from .study.figures import write_figures

            figures = write_figures(report, Path(figures_dir))
    except SloGuardError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{scenario.name}: {optimum_line(report)}\n")
    click.echo(searcher_table(report) + "\n")
    click.echo(tests_table(report, KEY_METRICS))
    click.echo(f"\n{len(report['runs'])} runs in {report['wall_s']:.0f} s", err=True)
    if json_file:
        click.echo(f"report written to {json_file}", err=True)
    if figures:
        click.echo(f"figures written to {figures_dir}/: {', '.join(p.name for p in figures)}", err=True)


def _tune_option_params() -> list[click.Parameter]:
    """Every option of `tune`, the same objects: serve's spelling, defaults and help can never drift from it."""
    return [param for param in tune.params if isinstance(param, click.Option)]


@main.command(context_settings=_PASS_THROUGH, params=_tune_option_params())
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
    from .serve import ServeRequest
    from .serve import serve as run_serve
    from .spec import TuneSpec
    from .units import parse_duration

    tokens = [*([model] if model is not None else []), *engine_args]  # click takes a leading flag as MODEL
    model, pinned = (tokens[0], tokens[1:]) if tokens and not tokens[0].startswith("-") else (None, tokens)
    o = options
    if retune and (no_tune or config_file):
        raise click.UsageError("--retune tunes; it cannot be combined with --no-tune or --config")
    if not model and not config_file:
        raise click.UsageError("give MODEL (or --config FILE with a saved result)")
    _terminate_on_sigterm()
    try:
        slos = slos_from_options(o["slo_texts"], o["slo_p95"])
        if not slos and not config_file:
            raise click.UsageError("at least one SLO is required, e.g. --slo-p95 200ms or --slo ttft:p95=200ms")
        _require_sim_gpu(o["engine"], o["gpu"])
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


if __name__ == "__main__":  # pragma: no cover
    main()
