"""Honest statistics for a multi-seed comparison of searchers (e.g. ``slo-guard`` vs ``random``/``tpe``/``grid``).

Every searcher ran on the same seeds 0..n-1, so the per-seed samples are *paired*: seed k of the
candidate and seed k of a baseline share the scenario's randomness. Which test answers which claim:

- **paired Wilcoxon signed-rank** (``paired_wilcoxon``) — "is the candidate better on the same
  seeds?". The primary test: pairing removes the seed-to-seed variation both arms share, so it is
  more powerful than an unpaired test and asks the question the study is built for. Effect size:
  the matched-pairs rank-biserial correlation.
- **Mann-Whitney U** (``mann_whitney``) — unpaired, as in the SLO-Guard paper. Reported only so our
  numbers can be set next to the paper's; it ignores the pairing. Effect size: rank-biserial.
- **Brown-Forsythe** (``brown_forsythe``, Levene's test centred on the median) — the paper's
  "tighter spread across seeds" claim. The median centring keeps it robust to non-normal,
  skewed per-seed metrics (regret is bounded below by 0). Effect size: log of the std ratio.
- **Holm-Bonferroni** (``holm_correct``) within a family — one (metric, test) across all baselines —
  so that "better than at least one baseline" is not found by chance in multiple comparisons.

Sign convention of every effect: negative means the candidate's value is lower than the baseline's
(for regret or crashes: the candidate is better). Non-finite inputs (nan, ±inf, e.g. a run that
never found a feasible config) are dropped — the whole pair for the paired test, per arm for the
unpaired ones — and ``n`` reports what was actually tested; callers that want such runs counted
must encode them as a finite metric first.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar

import numpy as np
from scipy import stats as sps

WILCOXON = "wilcoxon"
MANN_WHITNEY = "mannwhitney"
BROWN_FORSYTHE = "brown-forsythe"
_TEST_ORDER = (WILCOXON, MANN_WHITNEY, BROWN_FORSYTHE)
_EPS = 1e-12  # guards log(std_a / std_b) when a std is 0


@dataclass(frozen=True)
class TestResult:
    """One test of one metric between a candidate and one baseline, with its family-corrected p."""

    __test__: ClassVar[bool] = False  # not a pytest test class, despite the name

    metric: str  # e.g. "regret"
    pair: tuple[str, str]  # (candidate, baseline)
    test: str  # "wilcoxon" | "mannwhitney" | "brown-forsythe"
    claim: str  # the claim this test answers, in one sentence
    n: int  # wilcoxon: non-zero differences; unpaired tests: the smaller arm's size
    statistic: float
    p: float  # two-sided; nan when undefined (counted as 1.0 by holm_correct)
    p_corrected: float  # Holm within its family; equal to p until holm_correct runs
    effect: float  # negative = candidate lower than baseline
    effect_name: str
    candidate_stat: float  # mean (wilcoxon / mannwhitney) or sample std (brown-forsythe)
    baseline_stat: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: strict JSON has no nan/inf, so non-finite floats become None; pair is a list."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            elif isinstance(value, tuple):
                value = list(value)
            out[key] = value
        return out


def _finite(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    return arr[np.isfinite(arr)]


def _mean(arr: np.ndarray) -> float:
    return float(np.mean(arr)) if arr.size else math.nan


def _std(arr: np.ndarray) -> float:
    return float(np.std(arr, ddof=1)) if arr.size >= 2 else 0.0


def paired_wilcoxon(metric: str, a: Sequence[float], b: Sequence[float], names: tuple[str, str]) -> TestResult:
    """Wilcoxon signed-rank test of a − b, a and b paired by seed: the study's primary test.

    Pairs with a non-finite value on either side are dropped; zero differences are dropped too
    (``zero_method="wilcox"``), so ``n`` is the number of non-zero differences tested.
    """
    if len(a) != len(b):
        raise ValueError(f"paired test needs equal lengths (same seeds), got {len(a)} and {len(b)}")
    candidate, baseline = names
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = np.isfinite(xa) & np.isfinite(xb)
    xa, xb = xa[keep], xb[keep]
    d = xa - xb
    nonzero = d != 0
    n = int(nonzero.sum())
    if n < 1:  # no information; scipy would raise or warn
        statistic, p, effect = 0.0, 1.0, 0.0
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = sps.wilcoxon(xa, xb, zero_method="wilcox", alternative="two-sided")
        statistic, p = float(res.statistic), float(res.pvalue)
        dn = d[nonzero]
        ranks = sps.rankdata(np.abs(dn))  # average ranks for ties
        w_plus, w_minus = float(ranks[dn > 0].sum()), float(ranks[dn < 0].sum())
        effect = (w_plus - w_minus) / (w_plus + w_minus)
    return TestResult(
        metric=metric,
        pair=(candidate, baseline),
        test=WILCOXON,
        claim=f"{candidate} has a different {metric} than {baseline} on the same seeds (paired)",
        n=n,
        statistic=statistic,
        p=p,
        p_corrected=p,
        effect=effect,
        effect_name="matched-pairs rank-biserial",
        candidate_stat=_mean(xa),
        baseline_stat=_mean(xb),
    )


def mann_whitney(
    metric: str, a: Sequence[float], b: Sequence[float], names: tuple[str, str], *, alternative: str = "two-sided"
) -> TestResult:
    """Mann-Whitney U test, unpaired: only to compare with the SLO-Guard paper's numbers.

    Non-finite values are dropped per arm; an empty arm gives p = nan (undefined). ``alternative``
    is scipy's; the paper used "greater" for its fast count and post-hit consistency.
    """
    candidate, baseline = names
    xa, xb = _finite(a), _finite(b)
    n1, n2 = xa.size, xb.size
    if n1 == 0 or n2 == 0:
        statistic, p, effect = math.nan, math.nan, math.nan
    elif np.unique(np.concatenate([xa, xb])).size == 1:  # all values tied: no evidence either way
        statistic, p, effect = n1 * n2 / 2.0, 1.0, 0.0
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = sps.mannwhitneyu(xa, xb, alternative=alternative)
        statistic, p = float(res.statistic), float(res.pvalue)
        # scipy's U is a's: the number of (a_i, b_j) with a_i > b_j (ties count ½), so
        # 2U/(n1·n2) − 1 = P(a > b) − P(a < b) is already −1 when a is always lower: no negation.
        effect = 2.0 * statistic / (n1 * n2) - 1.0
    return TestResult(
        metric=metric,
        pair=(candidate, baseline),
        test=MANN_WHITNEY,
        claim=(
            f"{candidate} has a different {metric} distribution than {baseline} (unpaired, as in the SLO-Guard paper)"
        ),
        n=int(min(n1, n2)),
        statistic=statistic,
        p=p,
        p_corrected=p,
        effect=effect,
        effect_name="rank-biserial",
        candidate_stat=_mean(xa),
        baseline_stat=_mean(xb),
    )


def brown_forsythe(metric: str, a: Sequence[float], b: Sequence[float], names: tuple[str, str]) -> TestResult:
    """Brown-Forsythe test of equal spread (Levene, median-centred): the "tighter across seeds" claim.

    Non-finite values are dropped per arm; an arm with fewer than 2 values gives p = nan.
    """
    candidate, baseline = names
    xa, xb = _finite(a), _finite(b)
    sa, sb = _std(xa), _std(xb)
    if xa.size < 2 or xb.size < 2:
        statistic, p = math.nan, math.nan
    elif np.ptp(xa) == 0 and np.ptp(xb) == 0:  # both constant: Levene's F would be 0/0
        statistic, p = 0.0, 1.0
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = sps.levene(xa, xb, center="median")
        statistic, p = float(res.statistic), float(res.pvalue)
    return TestResult(
        metric=metric,
        pair=(candidate, baseline),
        test=BROWN_FORSYTHE,
        claim=f"{candidate}'s {metric} has a different spread across seeds than {baseline}'s",
        n=int(min(xa.size, xb.size)),
        statistic=statistic,
        p=p,
        p_corrected=p,
        effect=math.log((sa + _EPS) / (sb + _EPS)),
        effect_name="log std ratio",
        candidate_stat=sa,
        baseline_stat=sb,
    )


def holm_correct(results: Sequence[TestResult]) -> list[TestResult]:
    """Holm-Bonferroni step-down over one family: controls the family-wise error across baselines.

    Returns new objects in the input order; a nan p counts as 1.0.
    """
    m = len(results)
    ps = [1.0 if math.isnan(r.p) else r.p for r in results]
    order = sorted(range(m), key=lambda i: ps[i])
    adjusted = [1.0] * m
    running = 0.0
    for j, i in enumerate(order):
        running = max(running, min(1.0, (m - j) * ps[i]))
        adjusted[i] = running
    return [replace(r, p_corrected=adj) for r, adj in zip(results, adjusted, strict=True)]


def compare_searchers(
    per_seed: Mapping[str, Mapping[str, Sequence[float]]],
    candidate: str,
    metrics: Sequence[str],
    *,
    spread_metrics: Sequence[str] = (),
) -> list[TestResult]:
    """The candidate against every other searcher, each (metric, test) family Holm-corrected.

    ``per_seed[searcher][metric]`` lists the metric by seed, in the same seed order for every searcher.
    Location tests (Wilcoxon, Mann-Whitney) run for ``metrics``, Brown-Forsythe for ``spread_metrics``.
    Order: metric, then test (wilcoxon, mannwhitney, brown-forsythe), then baseline in mapping order.
    """
    if candidate not in per_seed:
        raise KeyError(f"candidate {candidate!r} not in per_seed (have {sorted(per_seed)})")
    baselines = [name for name in per_seed if name != candidate]
    tests = {WILCOXON: paired_wilcoxon, MANN_WHITNEY: mann_whitney, BROWN_FORSYTHE: brown_forsythe}
    all_metrics = list(dict.fromkeys([*metrics, *spread_metrics]))
    out: list[TestResult] = []
    for metric in all_metrics:
        wanted = [WILCOXON, MANN_WHITNEY] if metric in metrics else []
        if metric in spread_metrics:
            wanted.append(BROWN_FORSYTHE)
        for test in _TEST_ORDER:
            if test not in wanted:
                continue
            family = [
                tests[test](metric, per_seed[candidate][metric], per_seed[base][metric], (candidate, base))
                for base in baselines
            ]
            out.extend(holm_correct(family))
    return out


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Mean, median, sample std (ddof=1; 0 for n<2), min, max and n of the finite values.

    Non-finite values are dropped, like in the tests, so ``n`` may be below ``len(values)``.
    """
    arr = _finite(values)
    if arr.size == 0:
        return {"mean": math.nan, "median": math.nan, "std": 0.0, "min": math.nan, "max": math.nan, "n": 0.0}
    return {
        "mean": float(np.mean(arr)),
        "median": float(np.median(arr)),
        "std": _std(arr),
        "min": float(np.min(arr)),
        "max": float(np.max(arr)),
        "n": float(arr.size),
    }
