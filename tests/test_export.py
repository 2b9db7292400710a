"""Exporting a tuning result: TOML that reads back, vLLM's --config YAML, the argv line, atomic writes."""

from __future__ import annotations

import math
import os
import shlex
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from vllm_slo_guard.bench.workload import WorkloadSpec
from vllm_slo_guard.errors import InputError, SloGuardError
from vllm_slo_guard.export import (
    argv_to_config,
    export_study,
    render,
    result_from_study,
    serve_command,
    to_toml,
    to_yaml,
)
from vllm_slo_guard.files import read_toml, write_atomic
from vllm_slo_guard.search.result import TuneResult
from vllm_slo_guard.search.storage import StudyError
from vllm_slo_guard.search.tuner import tune
from vllm_slo_guard.spec import TuneSpec, parse_slo

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MODEL = "Qwen/Qwen2-1.5B"


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture()
def tuned(tmp_path: Path) -> TuneResult:
    spec = TuneSpec(
        model=MODEL,
        slos=(parse_slo("ttft:p95=200ms"), parse_slo("tpot:p99=80ms")),
        workload=WorkloadSpec(num_prompts=60, request_rate=8.0, random_input_len=256, random_output_len=32),
        budget=5,
        engine="sim",
        gpu="A100-40GB",
        searcher="random",
        seed=4,
        pinned_args=("--max-model-len", "4096", "--served-model-name", "qwen small", "--no-enable-prefix-caching"),
        fix=("enable_chunked_prefill=true",),
        storage=f"sqlite:///{tmp_path / 'studies.db'}",
        study_name="export-me",
    )
    result = tune(spec)
    assert result.winner is not None
    return result


def test_toml_round_trips_with_the_whole_result(tuned: TuneResult) -> None:
    doc = tomllib.loads(to_toml(tuned))
    assert doc["model"] == MODEL and doc["vllm_version"] == "0.32.0" and doc["status"] == "tuned"
    assert doc["slos"] == ["ttft:p95=200ms", "tpot:p99=80ms"]
    memory = tuned.hardware["memory_bytes"]
    assert doc["hardware"] == {"gpu": "A100-40GB", "count": 1, "memory_bytes": memory, "kind": "sim"}
    assert WorkloadSpec.from_dict(doc["workload"]) == tuned.spec.workload
    assert (doc["objective"], doc["searcher"], doc["seed"], doc["study"]) == ("latency", "random", 4, "export-me")
    winner = doc["winner"]
    assert winner["command"] == serve_command(MODEL, tuned.winner.argv)  # type: ignore[union-attr]
    assert shlex.split(winner["command"])[:3] == ["vllm", "serve", MODEL]
    assert shlex.split(winner["command"])[3:] == winner["argv"]
    assert winner["argv"][:5] == list(tuned.spec.pinned_args)  # pinned flags first, unchanged
    assert winner["engine_args"]["pinned_args"] == list(tuned.spec.pinned_args)
    assert winner["engine_args"]["enable_chunked_prefill"] is True  # a --fix value
    assert "enable_prefix_caching" not in winner["engine_args"]  # pinned, so not tuned
    assert winner["metrics"]["p95_ttft_ms"] <= 200 and winner["metrics"]["completed"] == 120  # confirmation: 2×
    assert winner["confirmed"] is True and math.isclose(winner["latency_s"] * 1000, winner["metrics"]["p95_ttft_ms"])
    assert len(doc.get("runner_up", [])) == len(tuned.runner_ups)


def test_toml_has_no_nulls(tuned: TuneResult) -> None:
    text = to_toml(tuned)
    assert "max_concurrency" not in tomllib.loads(text)["workload"]  # None in the spec: left out
    assert "root_cause" not in tomllib.loads(text)["winner"]


def test_yaml_is_a_vllm_config_with_no_flag_for_false(tuned: TuneResult) -> None:
    yaml = render(tuned, "yaml")
    lines = [line for line in yaml.splitlines() if not line.startswith("#")]
    assert lines[0] == f"model: {MODEL}"
    assert "max-model-len: 4096" in lines
    assert 'served-model-name: "qwen small"' in lines
    assert "no-enable-prefix-caching: true" in lines
    assert "enable-chunked-prefill: true" in lines
    assert not any(line.endswith(": false") for line in lines)
    winner = tuned.winner
    assert winner is not None
    assert f"max-num-seqs: {winner.engine_args['max_num_seqs']}" in lines
    assert f"optimization-level: {winner.engine_args['optimization_level']}" in lines


def test_argv_to_config_spellings() -> None:
    config = argv_to_config(
        ["-O0", "--max_num_seqs=8", "--enforce-eager", "-tp", "2", "--served-model-name", "a", "b",
         "--max-model-len", "-1", "-cc.cudagraph_mode=PIECEWISE", "--no-enable-chunked-prefill"]
    )  # fmt: skip
    assert config == {
        "optimization-level": "0",
        "max-num-seqs": "8",
        "enforce-eager": True,
        "tensor-parallel-size": "2",
        "served-model-name": ["a", "b"],
        "max-model-len": "-1",
        "no-enable-chunked-prefill": True,
        "compilation-config": '{"cudagraph_mode":"PIECEWISE"}',
    }
    yaml = to_yaml("m", ["--kv-cache-dtype", "fp8", "--api-key", "yes", "--served-model-name", "a", "b"])
    assert yaml.splitlines() == ["model: m", "kv-cache-dtype: fp8", 'api-key: "yes"', "served-model-name: [a, b]"]
    with pytest.raises(InputError, match="-x"):
        argv_to_config(["-x", "1"])


def test_args_is_the_winners_flags(tuned: TuneResult) -> None:
    assert shlex.split(render(tuned, "args")) == tuned.winner.argv  # type: ignore[union-attr]


def test_export_from_the_study_alone_matches_the_run(tuned: TuneResult) -> None:
    for fmt in ("toml", "yaml", "args"):
        assert export_study(tuned.storage, tuned.study_name, fmt) == render(tuned, fmt)
    again = result_from_study(tuned.storage, tuned.study_name)
    assert again.winner == tuned.winner and again.runner_ups == tuned.runner_ups
    assert again.trials == tuned.trials and again.counts == tuned.counts


def test_export_errors_are_one_line(tuned: TuneResult, tmp_path: Path) -> None:
    with pytest.raises(StudyError, match=r"no study named 'other' in .*; studies there: export-me"):
        export_study(tuned.storage, "other", "toml")
    with pytest.raises(InputError, match="unknown export format"):
        export_study(tuned.storage, tuned.study_name, "json")
    nothing = replace(tuned, winner=None, runner_ups=[])
    with pytest.raises(SloGuardError, match="no configuration that met every SLO"):
        render(nothing, "yaml")
    assert tomllib.loads(render(nothing, "toml"))["status"] == "no_feasible_config"


def test_write_atomic_replaces_whole_files_only(tmp_path: Path) -> None:
    target = tmp_path / "out" / "tuned.toml"
    write_atomic(target, "a = 1\n")
    assert read_toml(target) == {"a": 1}
    os.chmod(target, 0o640)
    write_atomic(target, "a = 2\n")
    assert read_toml(target) == {"a": 2} and (target.stat().st_mode & 0o777) == 0o640
    assert sorted(p.name for p in target.parent.iterdir()) == ["tuned.toml"]  # no temp file left
    with pytest.raises(InputError, match="cannot write"):
        write_atomic(tmp_path / "out", "a = 3\n")  # a folder: the write fails, nothing is left behind
    assert sorted(p.name for p in target.parent.iterdir()) == ["tuned.toml"]
    (tmp_path / "bad.toml").write_text("a = [\n")
    with pytest.raises(InputError, match=r"bad\.toml is not valid TOML"):
        read_toml(tmp_path / "bad.toml")


_VLLM_SERVE_PARSE = """
import json, sys
import vllm.entrypoints.cli.serve as serve
from vllm.utils.argparse_utils import FlexibleArgumentParser
parser = FlexibleArgumentParser(description="vLLM CLI")  # the root parser reads --config under `vllm serve`
sub = parser.add_subparsers(required=False, dest="subparser")
for cmd in serve.cmd_init():
    cmd.subparser_init(sub)
ns = parser.parse_args(["serve", "--config", sys.argv[1]])
print(json.dumps({k: v for k, v in vars(ns).items() if isinstance(v, (bool, int, float, str, type(None)))}))
"""


@pytest.mark.vllm
def test_vllm_serve_reads_the_yaml_as_the_argv(vllm_python: str, tmp_path: Path) -> None:
    import json
    import subprocess

    argv = [
        "--load-format", "dummy", "--max-model-len", "512", "--enforce-eager", "--kv-cache-memory-bytes", "64M",
        "--max-num-seqs", "2", "--max-num-batched-tokens", "4127", "--block-size", "128",
        "--no-enable-chunked-prefill", "--no-enable-prefix-caching", "--served-model-name", "tiny model",
    ]  # fmt: skip
    path = write_atomic(tmp_path / "tuned.yaml", to_yaml("/models/tiny", argv))
    proc = subprocess.run(
        [vllm_python, "-c", _VLLM_SERVE_PARSE, str(path)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    ns = json.loads(proc.stdout.strip().splitlines()[-1])
    assert ns["model"] == "/models/tiny" and ns["load_format"] == "dummy" and ns["max_model_len"] == 512
    assert ns["enforce_eager"] is True and ns["kv_cache_memory_bytes"] == 64 * 2**20
    assert (ns["max_num_seqs"], ns["max_num_batched_tokens"], ns["block_size"]) == (2, 4127, 128)
    assert ns["enable_chunked_prefill"] is False and ns["enable_prefix_caching"] is False  # not silently dropped
