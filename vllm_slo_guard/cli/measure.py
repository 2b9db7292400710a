"""Commands on one configuration: ``simulate`` it, ``bench`` a real server, ``explain`` a failed log."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from ..errors import SloGuardError
from ..options import (
    engine_options,
    slo_options,
    slos_from_options,
    timeout_options,
    timeouts_from_options,
    workload_from_options,
    workload_options,
)
from ..units import parse_size
from .common import PASS_THROUGH, require_sim_gpu_option, terminate_on_sigterm


@click.command(context_settings=PASS_THROUGH)
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
    from ..engine.sim import simulate as run_simulation

    try:
        spec = workload_from_options(workload, seed)
        result = run_simulation(
            [model, *engine_args], spec, gpu, seed=seed, gpu_count=gpu_count, used_bytes=parse_size(gpu_memory_used)
        )
    except SloGuardError as exc:
        raise click.ClickException(str(exc)) from None
    from ..vllm_rules.args import unmodelled_note

    if (note := unmodelled_note(engine_args)) is not None:  # stderr: --json keeps stdout one object
        click.echo(f"note: {note}", err=True)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2, sort_keys=False))
        return
    if result.status == "crash":
        click.echo(f"Simulated `vllm serve` failed to start ({result.crash_category}):", err=True)
        click.echo(result.message or "", err=True)
        sys.exit(1)
    from ..bench.summary import format_bench_result

    click.echo(
        f"Simulated {model} on {gpu}: KV cache {result.kv_cache_tokens:,} tokens "
        f"({result.max_concurrency:.2f}x at max_model_len {result.max_model_len}), "
        f"est. startup {result.startup_s:.0f} s, {result.num_preemptions} preemptions"
    )
    click.echo(
        format_bench_result(result.metrics, request_rate=spec.request_rate, max_concurrency=spec.max_concurrency)
    )


@click.command()
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

    Prints the crash category, the root-cause line and a one-line repair, or `no failure found`. A
    configuration's failures are oom, config_invalid, timeout and engine_error; no configuration
    fixes environment (the machine: vLLM or the model missing, a port taken) or request_error (the
    workload: the running server refused most generation requests with a 4xx, e.g. prompts longer
    than --max-model-len or token ids outside the vocabulary). `vllm-tune tune` stops on both.
    """
    from ..bench.failures import MAX_FAILURE_SHARE
    from ..engine.crash import CrashReport, classify, exit_code_from_log
    from ..engine.crash.requests import refused_requests

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
    if report is None:  # the server ran: did it refuse the workload?
        report = refused_requests(text, max_share=MAX_FAILURE_SHARE)
    if as_json:
        keys = ("category", "root_cause", "suggestion", "pattern", "phase", "exit_code", "evidence")
        click.echo(json.dumps(report.to_json() if report else dict.fromkeys(keys), indent=2))
    elif report is None:
        click.echo("no failure found")
    else:
        click.echo(f"category: {report.category}\nroot cause: {report.root_cause}\nsuggestion: {report.suggestion}")


@click.command(context_settings=PASS_THROUGH)
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
    port and is always stopped, also on Ctrl-C. Exit status: 0 when the server ran and every request
    completed (whether or not the SLOs held; see `status`), 1 when it crashed (the crash category and
    vLLM's root cause are printed; request_error: the server refused the workload's requests) or when
    any request failed (the failure line names the server's message), 2 for usage errors.
    """
    from ..engine.engines import flag_value
    from ..engine.factory import make_engine
    from ..hardware import probe_gpus
    from ..paths import log_dir as default_log_dir
    from ..trial import run_trial

    terminate_on_sigterm()
    try:
        spec = workload_from_options(workload, seed)
        slos = slos_from_options(slo_texts, slo_p95)
        timeouts = timeouts_from_options(startup_timeout, request_timeout, trial_timeout)
        require_sim_gpu_option(engine, gpu)
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
    from ..bench.failures import summary_line

    failures = summary_line(result.metrics)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
        if failures:
            click.echo(failures, err=True)
        sys.exit(1 if result.status == "crash" or failures else 0)
    if result.crash is not None:
        click.echo(f"crash ({result.crash.category}): {result.crash.root_cause}", err=True)
        click.echo(f"suggestion: {result.crash.suggestion}", err=True)
        if failures:
            click.echo(failures, err=True)
        click.echo(f"log: {result.log_path}", err=True)
        sys.exit(1)
    from ..bench.summary import format_bench_result

    click.echo(f"server ready in {result.startup_s:.1f} s; status {result.status}; log: {result.log_path}")
    click.echo(
        format_bench_result(result.metrics, request_rate=spec.request_rate, max_concurrency=spec.max_concurrency)
    )
    if failures:
        click.echo(failures, err=True)
        sys.exit(1)
