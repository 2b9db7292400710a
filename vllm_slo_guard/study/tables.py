"""Markdown tables of ``compare`` reports: per scenario, across the suite, and the paper's own table.

Everything printed comes from the report dicts, so ``docs/study.md`` is generated, never typed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .stats import mann_whitney, summarize

KEY_METRICS = ("regret", "heldout_regret", "launched_crashes", "trials_within_10pct")


def fmt_pct(x: float | None) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.1%}"


def _num(x: float | None, digits: int = 1) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def fmt_p(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "–"
    return "<0.0001" if x < 1e-4 else f"{x:.4f}"


def _value(x: float | None, unit: str) -> str:
    if x is None or not math.isfinite(x):
        return "–"
    return f"{x * 1000:.1f} ms" if unit == "s" else f"{x:.2f} req/s"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def optimum_line(report: Mapping[str, Any]) -> str:
    o = report["optimum"]
    return (
        f"optimum {_value(o['value'], o['unit'])} over {o['grid_points']} grid points ({o['feasible_points']} "
        f"feasible) + {o['refined_points']} refinement points (refinement gained {fmt_pct(o['refinement_gain'])})"
    )


def searcher_table(report: Mapping[str, Any]) -> str:
    """One row per searcher: regret, best value, fast regime, crashes, cost."""
    unit = report["optimum"]["unit"]
    budget = report["settings"]["budget"]
    header = (
        "searcher", "regret mean", "median", "within 5%", "held-out regret mean / median", "no winner",
        "best (mean ± std)",
        f"first ≤10% (median; never = {budget + 1})", "trials ≤10%", "post-hit", "post-handoff",
        "launched crashes", "guarded", "sim. time",
    )  # fmt: skip
    rows = []
    for name, s in report["searchers"].items():
        best = f"{_value(s['best_mean'], unit)} ± {_value(s['best_std'], unit)}"
        rows.append([
            name, fmt_pct(s["regret_mean"]), fmt_pct(s["regret_median"]), fmt_pct(s["within_5pct_share"]),
            f"{fmt_pct(s.get('heldout_regret_mean'))} / {fmt_pct(s.get('heldout_regret_median'))}",
            f"{s['no_winner']}/{s['seeds']}", best, _num(s["first_within_10pct_median"]),
            _num(s["trials_within_10pct_mean"]), fmt_pct(s["post_hit_consistency_mean"]),
            fmt_pct(s["post_handoff_consistency_mean"]), _num(s["launched_crashes_mean"]), _num(s["guarded_mean"]),
            f"{_num(s['sim_cost_s_mean'] / 60 if s['sim_cost_s_mean'] is not None else None)} min",
        ])  # fmt: skip
    return _table(header, rows)


def tests_table(report: Mapping[str, Any], metrics: Sequence[str] | None = None) -> str:
    """The candidate against each baseline: test, n, means, effect, p and Holm-corrected p."""
    header = ("metric", "vs", "test", "n", "candidate", "baseline", "effect", "p", "p (Holm)")
    rows = []
    for t in report["tests"]:
        if metrics is not None and t["metric"] not in metrics:
            continue
        rows.append([
            t["metric"], t["pair"][1], t["test"], str(t["n"]), _num(t["candidate_stat"], 3),
            _num(t["baseline_stat"], 3), f"{_num(t['effect'], 2)} ({t['effect_name']})", fmt_p(t["p"]),
            fmt_p(t["p_corrected"]),
        ])  # fmt: skip
    return _table(header, rows)


def find_test(
    report: Mapping[str, Any], metric: str, baseline: str, test: str = "wilcoxon"
) -> Mapping[str, Any] | None:
    for t in report["tests"]:
        if t["metric"] == metric and t["pair"][1] == baseline and t["test"] == test:
            return t
    return None


def verdict(report: Mapping[str, Any], baseline: str, metric: str = "regret") -> str:
    """ "better" / "worse" (paired Wilcoxon, Holm p < 0.05, by the effect's sign) or "n.s."."""
    t = find_test(report, metric, baseline)
    if t is None or t["p_corrected"] is None or t["p_corrected"] >= 0.05:
        return "n.s."
    return "better" if (t["effect"] or 0) < 0 else "worse"


def suite_table(reports: Sequence[Mapping[str, Any]], candidate: str = "slo-guard", metric: str = "regret") -> str:
    """One row per scenario: each searcher's mean / median ``metric`` (``regret`` or ``heldout_regret``),
    and the candidate's paired verdicts on it."""
    names = list(reports[0]["settings"]["searchers"]) if reports else []
    baselines = [n for n in names if n != candidate]
    label = "held-out regret" if metric == "heldout_regret" else "regret"
    reference = "the oracle's config on fresh samples" if metric == "heldout_regret" else "optimum"
    header = ["scenario", reference, *[f"{n} {label} mean / median" for n in names]]
    header += [f"vs {b} (p Holm)" for b in baselines] + ["crashes " + " / ".join(names)]
    rows = []
    for r in reports:
        reference = r["optimum"].get("heldout_value") if metric == "heldout_regret" else r["optimum"]["value"]
        row = [r["scenario"]["name"], _value(reference, r["optimum"]["unit"])]
        for n in names:
            figures = r["searchers"][n]
            row.append(f"{fmt_pct(figures.get(metric + '_mean'))} / {fmt_pct(figures.get(metric + '_median'))}")
        for b in baselines:
            t = find_test(r, metric, b)
            row.append(f"{verdict(r, b, metric)} ({fmt_p(t['p_corrected'] if t else None)})")
        row.append(" / ".join(_num(r["searchers"][n]["launched_crashes_mean"]) for n in names))
        rows.append(row)
    return _table(header, rows)


def paper_table(report: Mapping[str, Any], candidate: str = "slo-guard", baseline: str = "random") -> str:
    """The SLO-Guard paper's table (its §8 definitions) on this report: fast = feasible, i.e. under the SLO.

    The paper's tests are kept for comparability: unpaired Mann-Whitney, one-sided ("greater") for the
    fast count and post-hit consistency, two-sided for the best latency.
    """
    runs = report["runs"]

    def per_seed(name: str, key: str) -> list[float]:
        return [float(r[key]) for r in runs if r["searcher"] == name and r[key] is not None]

    rows = []
    unit = report["optimum"]["unit"]
    for label, key, alternative in (
        ("fast (feasible) trials /" + str(report["settings"]["budget"]), "feasible_trials", "greater"),
        ("post-hit consistency", "post_feasible_consistency", "greater"),
        ("first fast hit (trial)", "first_feasible", None),
        ("best latency", "best", "two-sided"),
    ):
        a, b = per_seed(candidate, key), per_seed(baseline, key)
        scale = 1000.0 if key == "best" and unit == "s" else 1.0
        cell = []
        for values in (b, a):
            figures = summarize(values)
            cell.append(f"{_num(figures['mean'] * scale, 2)} ± {_num(figures['std'] * scale, 2)}" if values else "–")
        p_mw = mann_whitney(key, a, b, (candidate, baseline), alternative=alternative).p if alternative else None
        rows.append([label + (" (ms)" if scale == 1000.0 else ""), *cell, fmt_p(p_mw)])
    header = ("metric", baseline, candidate, "p (Mann-Whitney, as the paper)")
    return _table(header, rows)


def scenario_section(report: Mapping[str, Any]) -> str:
    """A scenario's full Markdown section: description, optimum, searcher table, key tests."""
    s = report["scenario"]
    settings = report["settings"]
    return "\n\n".join([
        f"### {s['name']}",
        f"{s.get('description', '')} {settings['seeds']} seeds, budget {settings['budget']}; {optimum_line(report)}.",
        searcher_table(report),
        tests_table(report, KEY_METRICS),
    ])  # fmt: skip
