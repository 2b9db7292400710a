"""The study's statistics: planted effects are found, null effects are not, signs and families are right."""

from __future__ import annotations

import itertools
import json
import math
import warnings

import numpy as np
import pytest

from vllm_slo_guard.study import stats
from vllm_slo_guard.study.stats import (
    brown_forsythe,
    compare_searchers,
    holm_correct,
    mann_whitney,
    paired_wilcoxon,
    summarize,
)

NAMES = ("slo-guard", "random")


def _planted(seed: int = 0, n: int = 20) -> tuple[list[float], list[float]]:
    rng = np.random.default_rng(seed)
    baseline = rng.normal(0.20, 0.05, n)
    candidate = baseline - 0.1 + rng.normal(0.0, 0.01, n)
    return candidate.tolist(), baseline.tolist()


def test_planted_difference_is_detected() -> None:
    cand, base = _planted()
    (w,) = holm_correct([paired_wilcoxon("regret", cand, base, NAMES)])
    assert w.p_corrected < 0.01
    assert w.effect < -0.8
    assert w.n == 20
    assert w.candidate_stat < w.baseline_stat
    assert mann_whitney("regret", cand, base, NAMES).p < 0.01


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_equal_distributions_are_not_flagged(seed: int) -> None:
    rng = np.random.default_rng(seed)
    cand, base = rng.normal(0.2, 0.05, 20).tolist(), rng.normal(0.2, 0.05, 20).tolist()
    # With 5 null draws a real 5% false-positive could appear; these fixed seeds are checked not to.
    assert paired_wilcoxon("regret", cand, base, NAMES).p > 0.05
    assert mann_whitney("regret", cand, base, NAMES).p > 0.05


def test_identical_samples_give_p_one_without_warnings() -> None:
    values = np.random.default_rng(7).normal(0.2, 0.05, 10).tolist()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        w = paired_wilcoxon("regret", values, values, NAMES)
        u = mann_whitney("regret", [0.5] * 8, [0.5] * 8, NAMES)
        bf = brown_forsythe("regret", [0.5] * 8, [0.5] * 8, NAMES)
    assert (w.p, w.statistic, w.effect, w.n) == (1.0, 0.0, 0.0, 0)
    assert (u.p, u.effect) == (1.0, 0.0)
    assert (bf.p, bf.effect) == (1.0, 0.0)


def test_brown_forsythe_detects_planted_spread() -> None:
    rng = np.random.default_rng(11)
    tight, wide = rng.normal(0.2, 0.01, 20).tolist(), rng.normal(0.2, 0.2, 20).tolist()
    res = brown_forsythe("regret", tight, wide, NAMES)
    assert res.p < 0.01
    assert res.effect < 0
    assert res.candidate_stat < res.baseline_stat
    assert res.candidate_stat == pytest.approx(np.std(tight, ddof=1))


def test_brown_forsythe_equal_spread_not_flagged() -> None:
    rng = np.random.default_rng(12)
    res = brown_forsythe("regret", rng.normal(0.2, 0.05, 20).tolist(), rng.normal(0.3, 0.05, 20).tolist(), NAMES)
    assert res.p > 0.05


def test_holm_hand_computed() -> None:
    base = paired_wilcoxon("regret", [1.0, 2.0], [0.0, 0.0], NAMES)
    family = [stats.replace(base, p=p) for p in (0.01, 0.04, 0.03)]
    assert [r.p_corrected for r in holm_correct(family)] == pytest.approx([0.03, 0.06, 0.06])


def test_holm_monotone_capped_and_nan() -> None:
    base = paired_wilcoxon("regret", [1.0, 2.0], [0.0, 0.0], NAMES)
    ps = [0.2, math.nan, 0.001, 0.5, 0.02]
    out = holm_correct([stats.replace(base, p=p) for p in ps])
    assert [r.p for r in out][2:] == ps[2:] and math.isnan(out[1].p)  # originals kept
    # sorted (nan as 1): 0.001*5, 0.02*4, 0.2*3, 0.5*2 -> 1, 1*1
    assert [r.p_corrected for r in out] == pytest.approx([0.6, 1.0, 0.005, 1.0, 0.08])
    by_p = sorted(out, key=lambda r: 1.0 if math.isnan(r.p) else r.p)
    assert all(x.p_corrected <= y.p_corrected for x, y in itertools.pairwise(by_p))
    assert all(r.p_corrected >= r.p for r in out if not math.isnan(r.p))


def test_sign_convention_candidate_always_lower() -> None:
    cand, base = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [1.0, 1.5, 2.0, 2.5, 3.0, 3.5]
    assert paired_wilcoxon("regret", cand, base, NAMES).effect == -1.0
    assert mann_whitney("regret", cand, base, NAMES).effect == -1.0
    assert paired_wilcoxon("regret", base, cand, NAMES).effect == 1.0
    assert mann_whitney("regret", base, cand, NAMES).effect == 1.0


def test_non_finite_values_are_dropped() -> None:
    cand, base = _planted(n=10)
    cand[3] = math.inf
    base[5] = math.nan
    w = paired_wilcoxon("regret", cand, base, NAMES)
    assert w.n == 8
    assert math.isfinite(w.candidate_stat) and math.isfinite(w.p)
    u = mann_whitney("regret", cand, base, NAMES)
    assert u.n == 9 and math.isfinite(u.p)
    assert brown_forsythe("regret", cand, base, NAMES).n == 9


def test_paired_lengths_must_match() -> None:
    with pytest.raises(ValueError, match="equal lengths"):
        paired_wilcoxon("regret", [1.0, 2.0], [1.0], NAMES)


def test_compare_searchers_families_are_corrected_separately() -> None:
    rng = np.random.default_rng(3)
    per_seed: dict[str, dict[str, list[float]]] = {}
    for name, shift, spread in [
        ("random", 0.0, 0.05),
        ("slo-guard", -0.1, 0.01),
        ("tpe", -0.02, 0.05),
        ("grid", 0.03, 0.1),
    ]:
        regret = rng.normal(0.2 + shift, spread, 12).tolist()
        per_seed[name] = {"regret": regret, "crashes": rng.integers(0, 4, 12).astype(float).tolist()}
    out = compare_searchers(per_seed, "slo-guard", ["regret"], spread_metrics=["regret"])
    assert len(out) == 9
    assert [r.test for r in out] == ["wilcoxon"] * 3 + ["mannwhitney"] * 3 + ["brown-forsythe"] * 3
    assert [r.pair[1] for r in out] == ["random", "tpe", "grid"] * 3
    assert all(r.pair[0] == "slo-guard" for r in out)
    wilcoxon_alone = holm_correct(
        [
            paired_wilcoxon("regret", per_seed["slo-guard"]["regret"], per_seed[b]["regret"], ("slo-guard", b))
            for b in ("random", "tpe", "grid")
        ]
    )
    assert [r.p_corrected for r in out[:3]] == [r.p_corrected for r in wilcoxon_alone]
    # 9 tests corrected together would give larger p's: the families are separate.
    together = holm_correct(out)
    assert any(t.p_corrected > r.p_corrected for t, r in zip(together, out, strict=True))

    two = compare_searchers(per_seed, "slo-guard", ["regret", "crashes"], spread_metrics=["crashes"])
    assert [(r.metric, r.test) for r in two[::3]] == [
        ("regret", "wilcoxon"), ("regret", "mannwhitney"),
        ("crashes", "wilcoxon"), ("crashes", "mannwhitney"), ("crashes", "brown-forsythe"),
    ]  # fmt: skip


def test_to_dict_is_json_ready() -> None:
    res = mann_whitney("regret", [], [1.0, 2.0], NAMES)
    assert math.isnan(res.p)
    d = res.to_dict()
    assert d["p"] is None and d["statistic"] is None and d["pair"] == ["slo-guard", "random"]
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    cand, base = _planted()
    assert json.dumps(paired_wilcoxon("regret", cand, base, NAMES).to_dict(), allow_nan=False)


def test_summarize() -> None:
    s = summarize([1.0, 2.0, 3.0, 10.0, math.inf])
    assert s == pytest.approx(
        {"mean": 4.0, "median": 2.5, "std": np.std([1, 2, 3, 10], ddof=1), "min": 1.0, "max": 10.0, "n": 4}
    )
    assert summarize([5.0])["std"] == 0.0
    assert summarize([])["n"] == 0
