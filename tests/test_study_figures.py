"""`vllm-tune compare` figures: drawn from a synthetic compare report, checked as real PNG files."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from vllm_slo_guard.errors import SloGuardError
from vllm_slo_guard.study import figures
from vllm_slo_guard.study.figures import (
    FIGURES,
    FiguresUnavailableError,
    best_so_far_matrix,
    cell_code,
    jitter_offsets,
    phase_grid,
    quartile_bands,
    write_figures,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BUDGET = 6
SEEDS = 4
STATUSES = ("ok", "slo_violation", "crash", "guarded", "ok", "ok")


def _trials(searcher: str, seed: int) -> list[dict[str, Any]]:
    """A mix of statuses; slo-guard explores then exploits, with the handoff moving with the seed."""
    offset = {"slo-guard": 0.0, "random": 0.2, "tpe": 0.08}.get(searcher, 0.0)
    trials = []
    for number in range(BUDGET):
        status = STATUSES[(number + seed) % len(STATUSES)]
        handoff = 2 + seed % 3
        phase = searcher if searcher != "slo-guard" else ("explore" if number < handoff else "exploit")
        regret = 0.02 * (number + 1) + 0.05 * seed + offset if status == "ok" else None
        trials.append({"number": number, "phase": phase, "status": status, "regret": regret})
    return trials


def _best_so_far(trials: list[dict[str, Any]]) -> list[float | None]:
    best: float | None = None
    out: list[float | None] = []
    for trial in trials:
        if trial["regret"] is not None:
            best = trial["regret"] if best is None else min(best, trial["regret"])
        out.append(best)
    return out


def make_report(searchers: tuple[str, ...] = ("slo-guard", "random", "tpe")) -> dict[str, Any]:
    runs = []
    for searcher in searchers:
        for seed in range(SEEDS):
            trials = _trials(searcher, seed)
            best = _best_so_far(trials)
            runs.append({
                "searcher": searcher,
                "seed": seed,
                "regret": best[-1] if best[-1] is not None else 1.0,
                "best_so_far_regret": best,
                "trials": trials,
            })  # fmt: skip
    return {
        "scenario": {"name": "synthetic-latency"},
        "optimum": {"value": 0.412, "unit": "s"},
        "settings": {"budget": BUDGET, "seeds": SEEDS, "searchers": list(searchers)},
        "runs": runs,
    }


def _check_pngs(paths: list[Path], folder: Path) -> None:
    assert [p.name for p in paths] == list(FIGURES)
    for path in paths:
        assert path.parent == folder and path.is_file()
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC), path.name
        assert len(data) > 10_000, f"{path.name} is only {len(data)} bytes"


def test_writes_three_valid_pngs(tmp_path: Path) -> None:
    report = make_report()
    assert any(None in run["best_so_far_regret"] for run in report["runs"])  # the None path is exercised
    folder = tmp_path / "figs" / "nested"  # created on demand
    _check_pngs(write_figures(report, folder), folder)


def test_output_is_deterministic_and_follows_the_data(tmp_path: Path) -> None:
    report = make_report()
    first = write_figures(report, tmp_path / "a")
    again = write_figures(copy.deepcopy(report), tmp_path / "b")
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in again]

    changed = copy.deepcopy(report)
    for run in changed["runs"]:
        if run["searcher"] == "random":
            run["best_so_far_regret"] = [None, 0.9, 0.6, 0.6, 0.3, 0.3]
            run["regret"] = 0.3
            for trial in run["trials"]:
                trial["status"], trial["regret"] = "crash", None
    other = write_figures(changed, tmp_path / "c")
    for before, after in zip(first, other, strict=True):
        assert before.read_bytes() != after.read_bytes(), f"{before.name} did not change with the data"


def test_one_searcher_with_an_empty_run_does_not_crash(tmp_path: Path) -> None:
    report = {
        "scenario": {"name": "tiny"},
        "optimum": {"value": 12.5, "unit": "req/s"},
        "settings": {"budget": BUDGET, "seeds": 2, "searchers": ["slo-guard"]},
        "runs": [
            {"searcher": "slo-guard", "seed": 0, "regret": 1.0, "best_so_far_regret": [], "trials": []},
            {
                "searcher": "slo-guard",
                "seed": 1,
                "regret": 0.0,
                "best_so_far_regret": [None, 0.0],
                "trials": [
                    {"number": 0, "phase": "explore", "status": "crash", "regret": None},
                    {"number": 1, "phase": "exploit", "status": "ok", "regret": 0.0},
                ],
            },
        ],
    }
    _check_pngs(write_figures(report, tmp_path), tmp_path)


def test_a_report_without_runs_still_draws(tmp_path: Path) -> None:
    report = {"scenario": {"name": "empty"}, "optimum": {}, "settings": {"budget": 0, "searchers": []}, "runs": []}
    assert [p.name for p in write_figures(report, tmp_path)] == list(FIGURES)


def test_missing_matplotlib_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(figures, "matplotlib_available", lambda: False)
    with pytest.raises(FiguresUnavailableError, match=r"matplotlib is not installed.*vllm-slo-guard\[report\]"):
        write_figures(make_report(), tmp_path)
    assert issubclass(FiguresUnavailableError, SloGuardError)  # the CLI prints it as one line
    assert not list(tmp_path.iterdir())


def test_best_so_far_counts_none_as_no_winner_and_holds_the_last_value() -> None:
    runs = [
        {"best_so_far_regret": [None, 0.5, 0.2]},
        {"best_so_far_regret": [None, None, None, 0.0]},
        {"best_so_far_regret": []},
        {"best_so_far_regret": [0.4, 0.1, 0.1, 0.1]},
    ]
    matrix = best_so_far_matrix(runs, 4)
    assert matrix.tolist() == [
        [1.0, 0.5, 0.2, 0.2],  # stopped early: the last best holds
        [1.0, 1.0, 1.0, 0.0],
        [1.0, 1.0, 1.0, 1.0],  # no data at all: no winner throughout
        [0.4, 0.1, 0.1, 0.1],
    ]
    low, median, high = quartile_bands(matrix)
    assert median.tolist() == pytest.approx([1.0, 0.75, 0.6, 0.15])
    assert np.all(low <= median) and np.all(median <= high)


def test_cell_codes_and_exploit_mask() -> None:
    assert cell_code({"status": "ok", "regret": 0.10}) == 1  # within 10 % of the optimum
    assert cell_code({"status": "ok", "regret": 0.11}) == 2
    assert cell_code({"status": "ok", "regret": None}) == 2
    assert [cell_code({"status": s}) for s in ("slo_violation", "crash", "guarded", "?")] == [3, 4, 5, 0]
    run = {"trials": [  # out of order on purpose: columns follow the trial number
        {"number": 1, "phase": "exploit", "status": "crash", "regret": None},
        {"number": 0, "phase": "explore", "status": "ok", "regret": 0.0},
    ]}  # fmt: skip
    codes, exploit = phase_grid([run, {"trials": []}], 3)
    assert codes.tolist() == [[1, 4, 0], [0, 0, 0]]
    assert exploit.tolist() == [[False, True, False], [False, False, False]]


def test_jitter_is_deterministic_and_spread() -> None:
    assert jitter_offsets(0).size == 0 and jitter_offsets(1).tolist() == [0.0]
    offsets = jitter_offsets(5)
    assert offsets.tolist() == jitter_offsets(5).tolist()
    assert len(set(offsets.tolist())) == 5 and abs(offsets).max() < 0.3
