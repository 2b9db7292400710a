"""Scenario files, the oracle, and `vllm-tune compare` as a user runs it (a real subprocess)."""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from vllm_slo_guard.errors import InputError
from vllm_slo_guard.space import vllm_defaults
from vllm_slo_guard.study.compare import RunJob, run_one, statistical_tests
from vllm_slo_guard.study.oracle import (
    HELDOUT_SEEDS,
    ORACLE_SEED,
    find_optimum,
    grid_configs,
    measure,
    measure_heldout,
    regret,
    scenario_problem,
)
from vllm_slo_guard.study.scenario import Scenario, load_scenario

ROOT = Path(__file__).resolve().parent.parent
SUITE = sorted((ROOT / "benchmarks" / "scenarios").glob("*.toml"))
PAPER = ROOT / "benchmarks" / "scenarios" / "paper-qwen2-1.5b-a100.toml"

SMALL = """
name = "small"
model = "Qwen/Qwen2-1.5B"
gpu = "A100-40GB"

[slo]
e2el_mean = "1s"

[workload]
num_prompts = 5
random_input_len = 300
random_output_len = 100

[pinned]
max_model_len = 4096

[space]
max_num_seqs = "2:64"
max_num_batched_tokens = "4096:8192"
optimization_level = [0, 2]
gpu_memory_utilization = 0.9
enable_prefix_caching = false
block_size = 16
"""


def write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def vllm_tune(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cwd / "cache")}
    return subprocess.run(
        [sys.executable, "-m", "vllm_slo_guard.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=cwd,
    )


def test_suite_has_the_required_scenarios() -> None:
    scenarios = [load_scenario(p) for p in SUITE]
    assert len(scenarios) >= 6
    names = {s.name for s in scenarios}
    assert {"paper-qwen2-1.5b-a100", "memory-tight-llama8b-l4"} <= names
    assert any(s.gpu.startswith(("H100", "H200")) for s in scenarios)
    assert any(s.workload.random_input_len >= 4096 and s.slos[0].metric == "ttft" for s in scenarios)  # RAG
    assert any(slo.metric == "tpot" for s in scenarios for slo in s.slos)
    assert len({s.key() for s in scenarios}) == len(scenarios)
    paper = load_scenario(PAPER)
    assert (paper.workload.num_prompts, paper.workload.random_output_len, paper.workload.request_rate) == (
        5, 100, math.inf,
    )  # fmt: skip


def test_the_example_scenario_loads() -> None:
    s = load_scenario(ROOT / "examples" / "my-scenario.toml")
    assert (s.gpu, s.tune, s.fix) == ("L40S-48GB", ("max_num_seqs=8:256",), ("enable_prefix_caching=true",))


def test_scenario_fields_become_the_tuning_spec(tmp_path: Path) -> None:
    s = load_scenario(write(tmp_path, SMALL))
    assert [str(slo) for slo in s.slos] == ["e2el:mean=1000ms"]
    assert s.pinned == ("--max-model-len", "4096")
    assert "max_num_seqs=2:64" in s.tune and "optimization_level=0,2" in s.tune
    assert "enable_prefix_caching=false" in s.fix and "block_size=16" in s.fix
    spec = s.tune_spec(searcher="random", seed=3, budget=5, storage="memory:")
    assert (spec.engine, spec.seed, spec.searcher, spec.gpu) == ("sim", 3, "random", "A100-40GB")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model = 'Qwen/Qwen2-1.5B'\ngpu = 'A100-40GB'\n[workload]\nnum_prompts = 5\n", "[slo] needs at least one SLO"),
        (SMALL.replace('e2el_mean = "1s"', 'e2el_mean = "fast"'), "not a duration"),
        (SMALL.replace('e2el_mean = "1s"', 'latency = "1s"'), "expected <metric>_<stat>"),
        (SMALL.replace('gpu = "A100-40GB"', 'gpu = "B300"'), "unknown GPU 'B300'"),
        (SMALL.replace("num_prompts = 5", "num_promts = 5"), "[workload] unknown key 'num_promts'"),
        (SMALL.replace("max_model_len = 4096", "max_model_lenn = 4096"), "unrecognized arguments: --max-model-lenn"),
        (SMALL.replace('max_num_seqs = "2:64"', 'max_num_seq = "2:64"'), "did you mean max_num_seqs"),
        (SMALL.replace('gpu = "A100-40GB"', 'gpu = "A100-40GB"\nengine = "vllm"'), "simulated engine only"),
        ("bogus = 1\n" + SMALL, "unknown key 'bogus'"),
        ("model = [", "is not valid TOML"),
        (SMALL.replace("Qwen/Qwen2-1.5B", "org/no-such-model"), "model 'org/no-such-model' not found"),
    ],
)
def test_bad_scenario_files_are_one_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InputError) as info:
        load_scenario(write(tmp_path, text))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_oracle_is_the_best_grid_point_and_is_cached(tmp_path: Path) -> None:
    s = load_scenario(write(tmp_path, SMALL))
    result = find_optimum(s, cache_dir=tmp_path / "oracle")
    assert result.value is not None and result.unit == "s"
    configs = grid_configs(scenario_problem(s))
    assert result.grid_points == len(configs) > 5
    # exhaustive: no grid point is better than the optimum
    values = [measure(s, _argv(s, c)) for c in configs]
    assert min(v for v in values if v is not None) >= result.value - 1e-12
    assert result.refinement_gain >= 0
    # the paper's concurrency cliff is in it: 4 sequences queue the fifth request, 8 do not
    assert result.config["max_num_seqs"] >= 5
    cached = find_optimum(s, cache_dir=tmp_path / "oracle")
    assert cached.value == result.value and cached.seconds == result.seconds  # read back, not recomputed
    assert len(list((tmp_path / "oracle").glob("*.json"))) == 1


def _argv(scenario: Scenario, config: dict[str, object]) -> list[str]:
    return scenario_problem(scenario).argv(config)


def test_heldout_judges_a_config_on_the_average_of_fresh_samples(tmp_path: Path) -> None:
    s = load_scenario(write(tmp_path, SMALL))
    problem = scenario_problem(s)
    fast = problem.repaired({**vllm_defaults(problem.space), "optimization_level": 2, "max_num_seqs": 8})
    argv = problem.argv(fast)
    per_sample = [measure(s, argv, seed) for seed in HELDOUT_SEEDS]
    assert None not in per_sample and len(set(per_sample)) > 1  # the samples differ
    assert measure_heldout(s, argv) == pytest.approx(statistics.fmean(per_sample))  # type: ignore[arg-type]
    eager = problem.argv({**fast, "optimization_level": 0})  # about 2 s of mean E2E against a 1 s SLO
    assert measure_heldout(s, eager) is None


def test_regret_both_directions() -> None:
    assert regret(0.55, 0.5, minimize=True) == pytest.approx(0.1)
    assert regret(9.0, 10.0, minimize=False) == pytest.approx(0.1)
    assert regret(None, 0.5, minimize=True) == 1.0


def test_one_run_is_measured_against_the_optimum(tmp_path: Path) -> None:
    s = load_scenario(write(tmp_path, SMALL))
    optimum = find_optimum(s, cache_dir=tmp_path / "oracle")
    assert optimum.value is not None
    heldout_optimum = measure_heldout(s, optimum.argv)
    assert heldout_optimum is not None
    run = run_one(RunJob(s, "slo-guard", 0, 6, optimum.value, 1, heldout_optimum))
    assert len(run["trials"]) == 6 and len(run["best_so_far_regret"]) == 6
    assert run["trials"][0]["phase"] == "explore"
    assert run["best"] is not None and run["best"] == measure(s, run["winner_argv"], ORACLE_SEED)
    # the search trials replay the oracle's sample: the winner's trial value is its reference value
    assert run["best"] == min(t["value"] for t in run["trials"] if t["value"] is not None)
    assert run["heldout_best"] == measure_heldout(s, run["winner_argv"])
    assert run["heldout_regret"] == pytest.approx((run["heldout_best"] - heldout_optimum) / heldout_optimum)
    assert run["regret"] == pytest.approx((run["best"] - optimum.value) / optimum.value)
    assert run["regret"] > -0.05  # the search cannot beat the refined grid by much
    regrets = [r for r in run["best_so_far_regret"] if r is not None]
    assert regrets == sorted(regrets, reverse=True)  # best so far never gets worse


def test_statistical_tests_cover_every_baseline_and_metric() -> None:
    runs = [
        {"searcher": name, "seed": seed, "regret": base + 0.01 * seed, "best": 1.0 + base, "launched_crashes": 0,
         "trials_within_10pct": 3, "first_within_10pct": None, "post_hit_consistency": None}
        for name, base in (("a", 0.0), ("b", 0.3), ("c", 0.0))
        for seed in range(12)
    ]  # fmt: skip
    tests = statistical_tests(runs, ["a", "b", "c"], "a", budget=15)
    regret_w = [t for t in tests if t["metric"] == "regret" and t["test"] == "wilcoxon"]
    assert [t["pair"][1] for t in regret_w] == ["b", "c"]
    assert regret_w[0]["p_corrected"] < 0.01 and regret_w[0]["effect"] == -1.0
    assert regret_w[1]["p"] == 1.0  # identical runs: no difference
    assert any(t["test"] == "brown-forsythe" and t["metric"] == "best" for t in tests)


def test_compare_cli_writes_json_and_figures(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    proc = vllm_tune(
        "compare", "--scenario", str(PAPER), "--seeds", "4", "--budget", "6", "--jobs", "2",
        "--json", "out.json", "--figures", "figs", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    report = json.loads((tmp_path / "out.json").read_text())
    assert set(report) >= {"scenario", "optimum", "searchers", "tests"}
    assert report["optimum"]["value"] == pytest.approx(0.48, rel=0.05)
    assert list(report["searchers"]) == ["slo-guard", "random", "tpe", "grid"]
    for figures in report["searchers"].values():
        for key in ("regret_mean", "regret_median", "within_5pct_share", "launched_crashes_mean", "guarded_mean",
                    "best_mean", "best_std", "heldout_regret_mean", "heldout_regret_median"):  # fmt: skip
            assert key in figures
    assert len(report["runs"]) == 16
    for t in report["tests"]:
        assert {"metric", "pair", "test", "p", "p_corrected"} <= set(t)
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == [
        "best_so_far.png", "regret_boxes.png", "trial_phases.png",
    ]  # fmt: skip
    assert "| slo-guard |" in proc.stdout and "wilcoxon" in proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scenario", "missing.toml"], "does not exist"),
        (["--scenario", str(PAPER), "--searchers", "slo-guard,annealing"], "unknown searcher 'annealing'"),
        (["--scenario", str(PAPER), "--searchers", "random,random"], "name each searcher once"),
        (["--scenario", str(PAPER), "--seeds", "1"], "--seeds"),
    ],
)
def test_compare_bad_input_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    proc = vllm_tune("compare", *args, cwd=tmp_path)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
