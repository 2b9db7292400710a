"""Workload model: vllm bench serve semantics for the random and ShareGPT datasets and arrivals."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vllm_slo_guard.bench.sim_tokenizer import VOCAB_SIZE, SimTokenizer
from vllm_slo_guard.bench.workload import (
    WorkloadRequest,
    WorkloadSpec,
    arrival_offsets,
    build_requests,
    build_warmup_requests,
    length_bounds,
)
from vllm_slo_guard.errors import DatasetError, InputError

# ---------------------------------------------------------------------------------------------
# spec: defaults, validation, dict form


def test_defaults_match_vllm_bench_serve() -> None:
    spec = WorkloadSpec()
    assert spec.num_prompts == 1000
    assert spec.request_rate == math.inf
    assert spec.burstiness == 1.0
    assert spec.max_concurrency is None
    assert (spec.random_input_len, spec.random_output_len) == (1024, 128)
    assert (spec.random_range_ratio, spec.random_prefix_len) == (0.0, 0)
    assert (spec.dataset_path, spec.num_warmups, spec.seed) == (None, 0, 0)
    spec.validate()


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"num_prompts": 0}, "num_prompts"),
        ({"request_rate": 0.0}, "request_rate"),
        ({"request_rate": -1.0}, "request_rate"),
        ({"request_rate": math.nan}, "request_rate"),
        ({"burstiness": 0.0}, "burstiness"),
        ({"burstiness": math.nan}, "burstiness"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"random_input_len": 0}, "random_input_len"),
        ({"random_output_len": 0}, "random_output_len"),
        ({"random_range_ratio": 1.0}, "random_range_ratio"),
        ({"random_range_ratio": -0.1}, "random_range_ratio"),
        ({"random_range_ratio": math.nan}, "random_range_ratio"),
        ({"random_prefix_len": -1}, "random_prefix_len"),
        ({"num_warmups": -1}, "num_warmups"),
    ],
)
def test_validate_rejects_bad_values(changes: dict[str, Any], fragment: str) -> None:
    spec = WorkloadSpec(**changes)
    with pytest.raises(InputError, match=fragment) as info:
        spec.validate()
    assert "\n" not in str(info.value)
    with pytest.raises(InputError):
        build_requests(spec)


def test_validate_accepts_edge_values() -> None:
    WorkloadSpec(num_prompts=1, request_rate=0.001, burstiness=math.inf, max_concurrency=1).validate()
    WorkloadSpec(random_input_len=1, random_output_len=1, random_range_ratio=0.99).validate()


def test_dict_round_trip_defaults_uses_inf_string_and_is_json_safe() -> None:
    spec = WorkloadSpec()
    data = spec.to_dict()
    assert data["request_rate"] == "inf"
    assert "max_concurrency" not in data and "dataset_path" not in data  # None is left out (TOML)
    text = json.dumps(data, allow_nan=False)  # no Infinity token
    assert WorkloadSpec.from_dict(json.loads(text)) == spec


def test_dict_round_trip_all_fields_set() -> None:
    spec = WorkloadSpec(
        num_prompts=50,
        request_rate=12.5,
        burstiness=0.5,
        max_concurrency=8,
        random_input_len=256,
        random_output_len=64,
        random_range_ratio=0.25,
        random_prefix_len=32,
        dataset_path="/data/sharegpt.json",
        num_warmups=3,
        seed=7,
    )
    data = spec.to_dict()
    assert set(data) == {
        "num_prompts",
        "request_rate",
        "burstiness",
        "max_concurrency",
        "random_input_len",
        "random_output_len",
        "random_range_ratio",
        "random_prefix_len",
        "dataset_path",
        "num_warmups",
        "seed",
    }
    assert WorkloadSpec.from_dict(data) == spec


def test_from_dict_accepts_inf_strings_dashes_and_integral_floats() -> None:
    spec = WorkloadSpec.from_dict({"request-rate": "inf", "burstiness": "inf", "num_prompts": 10.0})
    assert spec.request_rate == math.inf and spec.burstiness == math.inf and spec.num_prompts == 10
    assert isinstance(spec.num_prompts, int)


def test_from_dict_unknown_key_suggests_closest() -> None:
    with pytest.raises(InputError, match=r"'num_prompt'.*did you mean 'num_prompts'") as info:
        WorkloadSpec.from_dict({"num_prompt": 5})
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="known keys"):
        WorkloadSpec.from_dict({"zzzzzz": 1})


@pytest.mark.parametrize(
    "data",
    [{"num_prompts": "many"}, {"num_prompts": True}, {"request_rate": "fast"}, {"dataset_path": 3}],
)
def test_from_dict_wrong_type_names_the_key(data: dict[str, Any]) -> None:
    (key,) = data
    with pytest.raises(InputError, match=key):
        WorkloadSpec.from_dict(data)


def test_from_dict_validates() -> None:
    with pytest.raises(InputError, match="num_prompts"):
        WorkloadSpec.from_dict({"num_prompts": 0})


# ---------------------------------------------------------------------------------------------
# random dataset


def _ids(requests: list[WorkloadRequest]) -> list[tuple[int, ...]]:
    return [r.prompt_token_ids for r in requests]


def test_random_requests_reproducible_and_seed_dependent() -> None:
    spec = WorkloadSpec(num_prompts=20, random_input_len=64, random_output_len=16, random_range_ratio=0.5)
    first, again = build_requests(spec), build_requests(spec)
    assert first == again
    other = build_requests(replace(spec, seed=1))
    assert _ids(other) != _ids(first)
    assert [r.output_len for r in other] != [r.output_len for r in first]


def test_random_requests_fixed_lengths_with_zero_range_ratio() -> None:
    spec = WorkloadSpec(num_prompts=50, random_input_len=100, random_output_len=30)
    requests = build_requests(spec)
    assert len(requests) == 50
    assert [r.index for r in requests] == list(range(50))
    assert {r.prompt_len for r in requests} == {100}
    assert {r.output_len for r in requests} == {30}
    assert all(r.prefix_len == 0 and r.text is None for r in requests)
    assert all(0 <= i < VOCAB_SIZE for r in requests for i in r.prompt_token_ids)
    assert len({r.prompt_token_ids for r in requests}) == 50  # not one prompt repeated


def test_random_lengths_cover_bounds_with_half_range_ratio() -> None:
    spec = WorkloadSpec(num_prompts=400, random_input_len=10, random_output_len=20, random_range_ratio=0.5)
    requests = build_requests(spec)
    prompt_lens = {r.prompt_len for r in requests}
    output_lens = {r.output_len for r in requests}
    assert prompt_lens == set(range(5, 16))  # [floor(5), ceil(15)], every value drawn
    assert output_lens == set(range(10, 31))


def test_length_bounds_follow_vllm_floor_ceil() -> None:
    assert length_bounds(1024, 0.0) == (1024, 1024)
    assert length_bounds(10, 0.25) == (7, 13)  # floor(7.5), ceil(12.5)
    assert length_bounds(512, 0.5) == (256, 768)
    # vLLM computes the bounds in floating point: 100 * 1.1 = 110.00000000000001 -> 111
    assert length_bounds(100, 0.1) == (90, 111)
    assert length_bounds(1, 0.9) == (1, 2)  # low end raised to 1 (never a zero-token prompt)


def test_shared_prefix_identical_and_prepended() -> None:
    spec = WorkloadSpec(
        num_prompts=30, random_input_len=40, random_output_len=8, random_range_ratio=0.5, random_prefix_len=16
    )
    requests = build_requests(spec)
    prefixes = {r.prompt_token_ids[:16] for r in requests}
    assert len(prefixes) == 1
    assert all(r.prefix_len == 16 for r in requests)
    low, high = length_bounds(40, 0.5)
    assert all(16 + low <= r.prompt_len <= 16 + high for r in requests)
    # the part after the prefix differs between requests
    assert len({r.prompt_token_ids[16:] for r in requests}) == 30
    other = build_requests(replace(spec, seed=3))
    assert other[0].prompt_token_ids[:16] != requests[0].prompt_token_ids[:16]


def test_prompt_text_encodes_back_to_ids() -> None:
    (request,) = build_requests(WorkloadSpec(num_prompts=1, random_input_len=64, random_prefix_len=8))
    assert SimTokenizer().encode(request.prompt_text) == list(request.prompt_token_ids)
    assert SimTokenizer().count(request.prompt_text) == request.prompt_len == 72


def test_warmups_separate_stream_same_distribution() -> None:
    base = WorkloadSpec(num_prompts=10, random_input_len=50, random_output_len=10, random_range_ratio=0.2)
    spec = replace(base, num_warmups=4)
    assert build_warmup_requests(base) == []
    warmups = build_warmup_requests(spec)
    assert len(warmups) == 4
    low, high = length_bounds(50, 0.2)
    assert all(low <= w.prompt_len <= high for w in warmups)
    measured = build_requests(spec)
    assert build_requests(base) == measured  # warm-ups never change the measured workload
    assert not {w.prompt_token_ids for w in warmups} & {r.prompt_token_ids for r in measured}
    assert build_warmup_requests(spec) == warmups


# ---------------------------------------------------------------------------------------------
# arrivals


def test_infinite_rate_sends_everything_at_zero() -> None:
    offsets = arrival_offsets(WorkloadSpec(), 100)
    assert offsets.shape == (100,)
    assert not offsets.any()


def _gaps(offsets: np.ndarray) -> np.ndarray:
    return np.diff(np.concatenate([[0.0], offsets]))


def test_poisson_arrivals_mean_and_cv() -> None:
    rate = 20.0
    offsets = arrival_offsets(WorkloadSpec(request_rate=rate), 5000)
    gaps = _gaps(offsets)
    assert np.all(gaps >= 0)
    assert offsets[0] > 0  # like vLLM, the first request waits one gap
    assert gaps.mean() == pytest.approx(1 / rate, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.08)
    assert offsets[-1] == pytest.approx(5000 / rate)  # vLLM rescales to the target duration


def test_burstiness_four_gives_cv_one_half() -> None:
    gaps = _gaps(arrival_offsets(WorkloadSpec(request_rate=5.0, burstiness=4.0), 5000))
    assert gaps.mean() == pytest.approx(0.2, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(0.5, abs=0.05)


def test_burstier_than_poisson() -> None:
    gaps = _gaps(arrival_offsets(WorkloadSpec(request_rate=5.0, burstiness=0.25), 5000))
    assert gaps.std() / gaps.mean() == pytest.approx(2.0, abs=0.2)


def test_infinite_burstiness_gives_constant_gaps() -> None:
    offsets = arrival_offsets(WorkloadSpec(request_rate=4.0, burstiness=math.inf), 8)
    assert offsets.tolist() == pytest.approx([0.25 * (i + 1) for i in range(8)])


def test_arrivals_reproducible_and_seed_dependent() -> None:
    spec = WorkloadSpec(request_rate=10.0, seed=5)
    a, b = arrival_offsets(spec, 100), arrival_offsets(spec, 100)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, arrival_offsets(WorkloadSpec(request_rate=10.0, seed=6), 100))
    assert arrival_offsets(spec, 0).shape == (0,)
    with pytest.raises(InputError):
        arrival_offsets(spec, -1)


# ---------------------------------------------------------------------------------------------
# ShareGPT


def _words(n: int, word: str = "w") -> str:
    return " ".join(f"{word}{i}" for i in range(n))


def _conv(prompt: str, answer: str, *more: str) -> dict[str, Any]:
    turns = [{"from": "human", "value": prompt}, {"from": "gpt", "value": answer}]
    turns += [{"from": "human", "value": m} for m in more]
    return {"id": "x", "conversations": turns}


def _write(tmp_path: Path, data: Any, name: str = "sharegpt.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


@pytest.fixture
def sharegpt_file(tmp_path: Path) -> str:
    entries = [
        _conv("alpha " + _words(5), _words(6), "a third turn is ignored"),  # kept: 6 / 6
        _conv(_words(1024), _words(1024)),  # kept: exactly at both limits
        _conv("gamma " + _words(9), _words(4)),  # kept: 10 / 4
        {"id": "one-turn", "conversations": [{"from": "human", "value": _words(10)}]},  # < 2 turns
        {"id": "no-conversations"},
        _conv(_words(3), _words(10)),  # prompt < 4
        _conv(_words(10), _words(3)),  # output < 4
        _conv(_words(1025), _words(10)),  # prompt > 1024
        _conv(_words(1000), _words(1049)),  # total > 2048
        "not an object",
    ]
    return _write(tmp_path, entries)


def test_sharegpt_filters_like_vllm(sharegpt_file: str) -> None:
    requests = build_requests(WorkloadSpec(num_prompts=3, dataset_path=sharegpt_file))
    by_len = sorted((r.prompt_len, r.output_len) for r in requests)
    assert by_len == [(6, 6), (10, 4), (1024, 1024)]
    tok = SimTokenizer()
    for r in requests:
        assert r.text is not None and r.prompt_text == r.text
        assert list(r.prompt_token_ids) == tok.encode(r.text)
        assert r.prefix_len == 0
    assert [r.index for r in requests] == [0, 1, 2]


def test_sharegpt_oversamples_cyclically(sharegpt_file: str) -> None:
    requests = build_requests(WorkloadSpec(num_prompts=8, dataset_path=sharegpt_file))
    assert len(requests) == 8
    counts = Counter(r.text for r in requests)
    assert len(counts) == 3
    assert sorted(counts.values()) == [2, 3, 3]
    assert [r.text for r in requests[3:6]] == [r.text for r in requests[:3]]
    assert [r.index for r in requests] == list(range(8))


def test_sharegpt_shuffle_reproducible_and_seed_dependent(tmp_path: Path) -> None:
    path = _write(tmp_path, [_conv(f"prompt{i} " + _words(5), _words(8)) for i in range(30)])
    spec = WorkloadSpec(num_prompts=30, dataset_path=path)
    order = [r.text for r in build_requests(spec)]
    assert order == [r.text for r in build_requests(spec)]
    assert len(set(order)) == 30
    assert order != [r.text for r in build_requests(WorkloadSpec(num_prompts=30, dataset_path=path, seed=1))]
    warmups = build_warmup_requests(WorkloadSpec(num_prompts=30, dataset_path=path, num_warmups=5))
    assert len(warmups) == 5 and all(w.text in order for w in warmups)
    # own seed stream: not simply the first measured prompts (which would pre-warm their cache)
    assert [w.text for w in warmups] != order[:5]


def _dataset_error(path: str) -> str:
    with pytest.raises(DatasetError) as info:
        build_requests(WorkloadSpec(num_prompts=2, dataset_path=path))
    message = str(info.value)
    assert "\n" not in message
    assert path in message
    return message


def test_sharegpt_missing_file(tmp_path: Path) -> None:
    assert "not found" in _dataset_error(str(tmp_path / "nope.json"))


def test_sharegpt_corrupt_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('[{"conversations": [', encoding="utf-8")
    assert "not valid JSON" in _dataset_error(str(path))


def test_sharegpt_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes(b'["\xff\xfe"]')
    assert "UTF-8" in _dataset_error(str(path))


def test_sharegpt_directory_is_unreadable(tmp_path: Path) -> None:
    _dataset_error(str(tmp_path))


@pytest.mark.parametrize(
    "data",
    [{"conversations": []}, [{"text": "hi"}], [{"conversations": "hello there"}], [1, 2], []],
)
def test_sharegpt_wrong_shape(tmp_path: Path, data: Any) -> None:
    assert "ShareGPT format" in _dataset_error(_write(tmp_path, data))


def test_sharegpt_no_usable_entries(tmp_path: Path) -> None:
    path = _write(tmp_path, [_conv("too short", _words(10)), _conv(_words(2000), _words(10))])
    assert "no usable" in _dataset_error(path)


# ---------------------------------------------------------------------------------------------
# datasets by vLLM's names: the spec, its dict form and a study's identity


def test_dataset_name_implied_by_the_path_is_one_spec() -> None:
    assert WorkloadSpec().dataset == "random" and WorkloadSpec(dataset_name="random") == WorkloadSpec()
    spec = WorkloadSpec(dataset_path="/data/sharegpt.json", dataset_name="sharegpt")
    assert spec == WorkloadSpec(dataset_path="/data/sharegpt.json") and spec.dataset == "sharegpt"
    assert "dataset_name" not in spec.to_dict()
    # a name that is not implied is kept: vLLM's random dataset ignores the path
    assert WorkloadSpec(dataset_path="/data/x.json", dataset_name="random").dataset == "random"


def test_new_dataset_fields_round_trip_and_stay_out_of_the_dict_at_their_defaults() -> None:
    legacy = {"num_prompts", "request_rate", "burstiness", "random_input_len", "random_output_len"}
    legacy |= {"random_range_ratio", "random_prefix_len", "num_warmups", "seed"}
    assert set(WorkloadSpec().to_dict()) == legacy  # so stored studies keep their fingerprints
    spec = WorkloadSpec(
        num_prompts=40, dataset_name="prefix_repetition", prefix_repetition_prefix_len=64,
        prefix_repetition_suffix_len=32, prefix_repetition_num_prefixes=4, prefix_repetition_output_len=16,
    )  # fmt: skip
    data = spec.to_dict()
    assert data["dataset_name"] == "prefix_repetition" and data["prefix_repetition_num_prefixes"] == 4
    assert WorkloadSpec.from_dict(json.loads(json.dumps(data))) == spec
    custom = WorkloadSpec(dataset_name="custom", dataset_path="/t.jsonl", custom_output_len=-1, skip_chat_template=True)
    assert WorkloadSpec.from_dict(custom.to_dict()) == custom
    with pytest.raises(InputError, match="skip_chat_template"):
        WorkloadSpec.from_dict({"skip_chat_template": "yes"})


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"dataset_name": "burstgpt"}, "dataset_name must be one of random, sharegpt, custom, prefix_repetition"),
        ({"dataset_name": "custom"}, "the custom dataset needs dataset_path"),
        ({"dataset_name": "custom", "dataset_path": "t.jsonl", "custom_output_len": 0}, "custom_output_len"),
        ({"dataset_name": "prefix_repetition", "prefix_repetition_suffix_len": 0}, "prefix_repetition_suffix_len"),
        ({"dataset_name": "prefix_repetition", "num_prompts": 3}, "must be at least prefix_repetition_num_prefixes"),
    ],
)
def test_dataset_settings_are_validated(changes: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InputError, match=fragment) as info:
        WorkloadSpec(**changes).validate()
    assert "\n" not in str(info.value)


def test_the_study_fingerprint_changes_with_the_dataset(tmp_path: Path) -> None:
    from vllm_slo_guard.spec import TuneSpec, parse_slo

    hardware = {"gpu": "H100-80GB", "count": 1, "memory_bytes": 80 * 2**30, "kind": "sim"}

    def fingerprint(workload: WorkloadSpec) -> str:
        spec = TuneSpec("Qwen/Qwen2-1.5B", (parse_slo("200ms"),), workload, engine="sim", gpu="H100-80GB")
        return spec.fingerprint(hardware)

    path = tmp_path / "traffic.jsonl"
    path.write_text('{"prompt": "a b c d", "output_tokens": 4}\n', encoding="utf-8")
    base = WorkloadSpec(num_prompts=20)
    custom = replace(base, dataset_name="custom", dataset_path=str(path))
    prints = {
        fingerprint(base),
        fingerprint(replace(base, dataset_name="prefix_repetition")),
        fingerprint(replace(base, dataset_name="prefix_repetition", prefix_repetition_num_prefixes=5)),
        fingerprint(custom),
        fingerprint(replace(custom, custom_output_len=-1)),
    }
    assert len(prints) == 5
    before = fingerprint(custom)
    path.write_text('{"prompt": "other traffic", "output_tokens": 4}\n', encoding="utf-8")
    assert fingerprint(custom) != before  # the file's content is part of the study
    assert fingerprint(replace(base, dataset_name="random")) == fingerprint(base)


def test_cli_builds_each_dataset_by_its_vllm_name(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "traffic.jsonl"
    path.write_text("".join(json.dumps({"prompt": _words(30 + i), "output_tokens": 8 + i}) + "\n" for i in range(5)))
    runs = {
        "prefix_repetition": ["--dataset-name", "prefix_repetition", "--prefix-repetition-prefix-len", "64",
                              "--prefix-repetition-suffix-len", "32", "--prefix-repetition-num-prefixes", "4",
                              "--prefix-repetition-output-len", "6"],
        "custom": ["--dataset-name", "custom", "--dataset-path", str(path), "--custom-output-len", "-1"],
    }  # fmt: skip
    for name, flags in runs.items():
        argv = [sys.executable, "-m", "vllm_slo_guard.cli", "simulate", "Qwen/Qwen2-1.5B", "--gpu", "H100-80GB",
                "--num-prompts", "20", "--json", *flags]  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        metrics = json.loads(proc.stdout)
        assert metrics["completed"] == 20, name
        if name == "prefix_repetition":
            assert metrics["total_input_tokens"] == 20 * 96 and metrics["total_output_tokens"] == 20 * 6
        else:
            spec = WorkloadSpec(num_prompts=20, dataset_name="custom", dataset_path=str(path), custom_output_len=-1)
            assert metrics["total_output_tokens"] == sum(r.output_len for r in build_requests(spec))
    bad = subprocess.run(
        [sys.executable, "-m", "vllm_slo_guard.cli", "simulate", "Qwen/Qwen2-1.5B", "--gpu", "H100-80GB",
         "--dataset-name", "custom"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 1 and bad.stderr.strip().splitlines() == [
        "Error: the custom dataset needs dataset_path (--dataset-path FILE)"
    ]


def test_custom_and_prefix_repetition_in_the_simulators_vocabulary(tmp_path: Path) -> None:
    path = tmp_path / "traffic.jsonl"
    path.write_text('{"prompt": "alpha beta gamma"}\n{"prompt": "delta epsilon"}\n', encoding="utf-8")
    requests = build_requests(WorkloadSpec(num_prompts=4, dataset_name="custom", dataset_path=str(path)))
    assert sorted(r.prompt_len for r in requests) == [2, 2, 3, 3] and {r.output_len for r in requests} == {256}
    assert all(list(r.prompt_token_ids) == SimTokenizer().encode(r.text or "") for r in requests)
    spec = WorkloadSpec(num_prompts=12, dataset_name="prefix_repetition", prefix_repetition_num_prefixes=3)
    repeated = build_requests(spec)
    assert {r.prompt_len for r in repeated} == {512} and len({r.prompt_token_ids[:256] for r in repeated}) == 3
