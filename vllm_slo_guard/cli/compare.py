"""``compare``: the multi-seed study of the searchers on scenario files."""

from __future__ import annotations

import sys
from typing import Any

import click

from ..errors import InputError, SloGuardError


@click.command("compare")
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

    from ..files import write_atomic
    from ..paths import cache_dir
    from ..study.compare import compare as run_compare
    from ..study.compare import report_json, worker_count
    from ..study.oracle import find_optimum
    from ..study.scenario import load_scenario
    from ..study.tables import KEY_METRICS, optimum_line, searcher_table, tests_table

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
            from ..study.figures import write_figures

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
