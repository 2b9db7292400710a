"""Workloads in the served model's own tokens, as ``vllm bench serve`` builds them.

The models are made by the tests (``tinymodel.make_bpe_model``): make_tiny_model.py's byte-level BPE
(512 tokens asked, 347 made) and a 384-token Qwen2 BPE, with and without a ChatML template. None of
them is shaped around the simulator's vocabulary, so a token id of the simulator (up to 4095) is out
of their vocabulary, as it was for the model of the bug report. The tests marked ``vllm`` check the
counts on the real vLLM CPU build, from vLLM's own ``usage`` and ``/metrics``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from vllm_slo_guard.bench.datasets import length_bounds
from vllm_slo_guard.bench.promscrape import ServerStats, scrape
from vllm_slo_guard.bench.request import RequestFunc
from vllm_slo_guard.bench.run import LoadGenConfig, run_load_sync
from vllm_slo_guard.bench.sim_tokenizer import SimTokenizer
from vllm_slo_guard.bench.tokenizers import NO_CHAT_TEMPLATE, PromptTokenizer, load_tokenizer, prompt_tokenizer
from vllm_slo_guard.bench.workload import WorkloadRequest, WorkloadSpec, build_requests, build_warmup_requests
from vllm_slo_guard.engine.engines import VllmEngine
from vllm_slo_guard.engine.launcher import ServerProcess, free_port
from vllm_slo_guard.errors import DatasetError, InputError
from vllm_slo_guard.sim.evaluator import workload_requests
from vllm_slo_guard.tinymodel import make_bpe_model

SPEC = WorkloadSpec(num_prompts=24, random_input_len=48, random_output_len=12, seed=5)


def _engine_ids(tok: PromptTokenizer, request: WorkloadRequest, chat: bool) -> list[int]:
    """What the server makes of a request's text: vLLM's encoding with special tokens, or its chat prompt."""
    assert request.text is not None
    if chat:
        return tok.encode(tok.chat_text([{"role": "user", "content": request.text}]))
    return tok.encode(request.text, add_special_tokens=True)


def _check_tokens(tok: PromptTokenizer, requests: list[WorkloadRequest], chat: bool = False) -> None:
    """Every prompt is the model's own ordinary tokens, and its text encodes back to exactly those ids."""
    special = set(tok.all_special_ids)
    for r in requests:
        assert list(r.prompt_token_ids) == _engine_ids(tok, r, chat)
        assert all(0 <= i <= tok.max_token_id for i in r.prompt_token_ids)
        if not chat:
            assert not special & set(r.prompt_token_ids)


# --- the test models ----------------------------------------------------------------------------------


def test_the_models_are_not_shaped_around_the_simulators_vocabulary(
    bpe_model: Path, bpe384_model: Path, chat_model: Path
) -> None:
    bpe, qwen, chat = load_tokenizer(str(bpe_model)), load_tokenizer(str(bpe384_model)), load_tokenizer(str(chat_model))
    assert json.loads((bpe_model / "config.json").read_text())["vocab_size"] == bpe.vocab_size == 347
    assert json.loads((bpe384_model / "config.json").read_text())["vocab_size"] == qwen.vocab_size == 384
    assert chat.vocab_size == 384 and chat.has_chat_template and not qwen.has_chat_template
    # the simulator's random ids would be out of these vocabularies (the bug: "Token id 3825 ...")
    ids = build_requests(SPEC)[0].prompt_token_ids
    assert max(ids) > qwen.max_token_id
    # make_tiny_model.py's tokenizer, byte for byte (its seeded corpus, its trainer settings)
    again = make_bpe_model(bpe_model.parent / "again")
    assert (again / "tokenizer.json").read_bytes() == (bpe_model / "tokenizer.json").read_bytes()


# --- random prompts: exact lengths after decode and re-encode ------------------------------------------


@pytest.mark.parametrize("transformers", [True, False], ids=["transformers", "tokenizers"])
@pytest.mark.parametrize("model", ["bpe_model", "bpe384_model"])
def test_random_prompts_are_exact_after_decode_and_reencode(
    model: str, transformers: bool, request: pytest.FixtureRequest
) -> None:
    tok = load_tokenizer(str(request.getfixturevalue(model)), prefer_transformers=transformers)
    requests = build_requests(replace(SPEC, random_input_len=300), tok)
    assert [r.prompt_len for r in requests] == [300] * 24
    assert [r.output_len for r in requests] == [12] * 24
    _check_tokens(tok, requests)
    # vLLM's bodies are consecutive ids from a random offset: on a vocabulary of a few hundred, two offsets may meet
    assert len({r.prompt_token_ids for r in requests}) >= 20
    assert build_requests(replace(SPEC, random_input_len=300), tok) == requests  # reproducible
    assert build_requests(replace(SPEC, random_input_len=300, seed=6), tok) != requests


def test_shared_prefix_and_range_ratio_in_the_models_tokens(bpe384_model: Path) -> None:
    tok = load_tokenizer(str(bpe384_model))
    spec = replace(SPEC, num_prompts=200, random_input_len=40, random_prefix_len=16, random_range_ratio=0.5)
    requests = build_requests(spec, tok)
    _check_tokens(tok, requests)
    assert len({r.prompt_token_ids[:16] for r in requests}) == 1 and all(r.prefix_len == 16 for r in requests)
    low, high = length_bounds(40, 0.5)
    assert {r.prompt_len for r in requests} == {16 + n for n in range(low, high + 1)}  # every length drawn
    out_low, out_high = length_bounds(12, 0.5)
    assert {r.output_len for r in requests} == set(range(out_low, out_high + 1))
    assert len({r.prompt_token_ids[16:] for r in requests}) > 150  # vLLM's consecutive bodies: few collide


def test_chat_prompts_have_the_asked_length_through_the_chat_template(chat_model: Path) -> None:
    tok = load_tokenizer(str(chat_model))
    spec = replace(SPEC, random_prefix_len=8)
    requests = build_requests(spec, tok, chat=True)
    assert [r.prompt_len for r in requests] == [56] * 24  # the templated prompt, as vLLM's usage counts it
    _check_tokens(tok, requests, chat=True)
    templated = tok.chat_text([{"role": "user", "content": requests[0].text or ""}])
    assert templated.startswith("<|im_start|>user\n") and templated.endswith("<|im_start|>assistant\n")
    head = len(tok.encode("<|im_start|>user\n"))
    assert len({r.prompt_token_ids[: head + 8] for r in requests}) == 1  # the shared prefix, after the template's head
    # the same seed on completions: same lengths, no template tokens
    plain = build_requests(spec, tok)
    assert [r.prompt_len for r in plain] == [56] * 24
    assert tok.encode("<|im_start|>")[0] not in plain[0].prompt_token_ids


def test_chat_on_a_model_without_a_template_is_one_line_in_vllms_words(bpe_model: Path) -> None:
    with pytest.raises(InputError) as info:
        build_requests(SPEC, load_tokenizer(str(bpe_model)), chat=True)
    message = str(info.value)
    assert message.startswith(f"--endpoint chat needs a chat template, and the tokenizer of {bpe_model} has none")
    assert NO_CHAT_TEMPLATE in message and "\n" not in message


def test_a_prompt_shorter_than_the_chat_template_is_refused(chat_model: Path) -> None:
    with pytest.raises(InputError, match=r"random_input_len \(4\) is too short .* chat template"):
        build_requests(replace(SPEC, random_input_len=4), load_tokenizer(str(chat_model)), chat=True)


def test_warmups_in_the_models_tokens(bpe384_model: Path) -> None:
    tok = load_tokenizer(str(bpe384_model))
    spec = replace(SPEC, num_warmups=3)
    warmups = build_warmup_requests(spec, tok)
    assert [w.prompt_len for w in warmups] == [48] * 3
    _check_tokens(tok, warmups)
    assert build_requests(spec, tok) == build_requests(SPEC, tok)  # warm-ups never change the measured ones


# --- prefix_repetition, custom, sharegpt ------------------------------------------------------------------


def test_prefix_repetition_shares_each_prefix_and_is_exact(bpe384_model: Path) -> None:
    tok = load_tokenizer(str(bpe384_model))
    spec = WorkloadSpec(
        num_prompts=23, dataset_name="prefix_repetition", prefix_repetition_prefix_len=30,
        prefix_repetition_suffix_len=20, prefix_repetition_num_prefixes=5, prefix_repetition_output_len=7,
    )  # fmt: skip
    requests = build_requests(spec, tok)
    assert len(requests) == 23 and [r.index for r in requests] == list(range(23))
    assert {r.prompt_len for r in requests} == {50} and {r.output_len for r in requests} == {7}
    _check_tokens(tok, requests)
    by_prefix: dict[tuple[int, ...], int] = {}
    for r in requests:
        by_prefix[r.prompt_token_ids[:30]] = by_prefix.get(r.prompt_token_ids[:30], 0) + 1
    assert sorted(by_prefix.values()) == [4, 4, 5, 5, 5]
    assert [r.prompt_token_ids[:30] for r in requests[:5]] != [r.prompt_token_ids[:30] for r in requests[5:10]]
    # the simulator's vocabulary makes the same structure
    sim = build_requests(spec)
    assert len({r.prompt_token_ids[:30] for r in sim}) == 5 and {r.prompt_len for r in sim} == {50}
    with pytest.raises(InputError, match=r"num_prompts \(4\) must be at least prefix_repetition_num_prefixes \(5\)"):
        build_requests(replace(spec, num_prompts=4), tok)


def _jsonl(tmp_path: Path, lines: list[object]) -> str:
    path = tmp_path / "traffic.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n", encoding="utf-8")
    return str(path)


def test_custom_jsonl_is_the_users_traffic(tmp_path: Path, chat_model: Path) -> None:
    tok = load_tokenizer(str(chat_model))
    prompts = ["the quick brown fox", "what is the capital of france?", "tune the engine batch"]
    path = _jsonl(tmp_path, [{"prompt": p, "output_tokens": 5 + i} for i, p in enumerate(prompts)])
    spec = WorkloadSpec(num_prompts=6, dataset_name="custom", dataset_path=path, custom_output_len=-1)
    requests = build_requests(spec, tok, chat=True)
    assert len(requests) == 6 and sorted(r.text or "" for r in requests[:3]) == sorted(prompts)
    assert [r.text for r in requests[3:]] == [r.text for r in requests[:3]]  # reused cyclically
    for r in requests:
        assert r.output_len == 5 + prompts.index(r.text or "")
        assert list(r.prompt_token_ids) == _engine_ids(tok, r, chat=True)
    # completions: vLLM's custom dataset wraps each prompt in the chat template unless told not to
    templated = build_requests(spec, tok)
    assert all((r.text or "").startswith("<|im_start|>user\n") for r in templated)
    assert all(list(r.prompt_token_ids) == tok.encode(r.text or "", add_special_tokens=True) for r in templated)
    raw = build_requests(replace(spec, skip_chat_template=True), tok)
    assert sorted(r.text or "" for r in raw[:3]) == sorted(prompts)
    # vLLM's default: 256 output tokens whatever the file says; a fixed value for every request
    assert {r.output_len for r in build_requests(replace(spec, custom_output_len=None), tok)} == {256}
    assert {r.output_len for r in build_requests(replace(spec, custom_output_len=9), tok)} == {9}
    # the simulator's vocabulary: the words of each prompt
    sim = build_requests(spec, chat=True)
    assert all(r.prompt_len == len((r.text or "").split()) for r in sim)


@pytest.mark.parametrize(
    ("lines", "fragment"),
    [
        (["not json"], "line 1 is not valid JSON"),
        ([{"text": "hi"}], 'line 1 has no "prompt"'),
        ([{"prompt": "a b c", "output_tokens": 3}, {"prompt": "d e f"}], 'line 2 needs "output_tokens"'),
        ([{"prompt": "a b c", "output_tokens": 0}], 'line 1 needs "output_tokens"'),
    ],
)
def test_custom_jsonl_errors_are_one_line(tmp_path: Path, lines: list[object], fragment: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines), encoding="utf-8")
    spec = WorkloadSpec(num_prompts=2, dataset_name="custom", dataset_path=str(path), custom_output_len=-1)
    with pytest.raises(DatasetError) as info:
        build_requests(spec)
    assert fragment in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)


def test_sharegpt_counts_in_the_models_tokens(tmp_path: Path, bpe_model: Path) -> None:
    tok = load_tokenizer(str(bpe_model))
    pairs = [("the quick brown fox jumps", "over"), ("vllm serve the model", "tune the engine batch")]
    entries = [{"conversations": [{"from": "human", "value": p}, {"from": "gpt", "value": a}]} for p, a in pairs]
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps(entries), encoding="utf-8")
    requests = build_requests(WorkloadSpec(num_prompts=2, dataset_path=str(path)), tok)
    # "over" is one token of this BPE (< 4: pruned as vLLM prunes it); the other one is kept, twice
    assert {r.text for r in requests} == {"vllm serve the model"}
    assert requests[0].output_len == len(tok.encode("tune the engine batch", add_special_tokens=True))
    _check_tokens(tok, requests)


# --- one seed, the same requests on both engines -------------------------------------------------------


@pytest.mark.parametrize("dataset", ["random", "prefix_repetition"])
def test_one_seed_gives_the_same_requests_on_the_simulator_and_the_real_engine(chat_model: Path, dataset: str) -> None:
    model = str(chat_model)
    spec = replace(SPEC, random_prefix_len=8, dataset_name=dataset, prefix_repetition_num_prefixes=4)
    simulated = workload_requests(spec, model)  # what the in-process simulator measures
    real = build_requests(spec, prompt_tokenizer(model, sim_fallback=False))  # what run_load sends to vLLM
    assert [r.prompt_token_ids for r in simulated] == [r.prompt_token_ids for r in real]
    assert [r.output_len for r in simulated] == [r.output_len for r in real]
    assert max(i for r in simulated for i in r.prompt_token_ids) < 384
    # a catalog model without a local tokenizer: the simulator's vocabulary, exactly as before
    assert list(workload_requests(spec, "Qwen/Qwen2-1.5B")) == build_requests(spec)


# --- a missing tokenizer is one clear line ---------------------------------------------------------------


def test_a_missing_tokenizer_is_one_clear_line(tmp_path: Path, bpe_model: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text((bpe_model / "config.json").read_text())
    for model, where in [(str(bare), "has no tokenizer files"), ("nobody/no-such-model", "is not in the local cache")]:
        with pytest.raises(InputError) as info:
            prompt_tokenizer(model, sim_fallback=False)
        message = str(info.value)
        assert "\n" not in message and message.startswith(f"no tokenizer for {model}: ") and where in message
        assert isinstance(prompt_tokenizer(model, sim_fallback=True), SimTokenizer)  # the simulated engine
    (bare / "tokenizer_config.json").write_text("{}")  # a tokenizer only transformers can load
    with pytest.raises(InputError, match=r"has no tokenizer.json\) needs transformers: pip install"):
        load_tokenizer(str(bare), prefer_transformers=False)


def test_a_hugging_face_id_in_the_local_cache_is_found_offline(
    tmp_path: Path, bpe_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = tmp_path / "hub" / "models--acme--tiny-bpe" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (snapshot / name).write_bytes((bpe_model / name).read_bytes())
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abcd")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    tok = prompt_tokenizer("acme/tiny-bpe", sim_fallback=False)
    assert tok.vocab_size == 347 and tok.encode("the quick") == load_tokenizer(str(bpe_model)).encode("the quick")


def test_without_transformers_the_tokenizers_library_loads_a_bare_tokenizer_json(chat_model: Path) -> None:
    code = f"""
import sys
sys.modules["transformers"] = None  # as if it were not installed
from vllm_slo_guard.bench.tokenizers import load_tokenizer
from vllm_slo_guard.bench.workload import WorkloadSpec, build_requests
from vllm_slo_guard.errors import InputError
tok = load_tokenizer({str(chat_model)!r})
requests = build_requests(WorkloadSpec(num_prompts=3, random_input_len=48), tok)
print(type(tok).__name__, [r.prompt_len for r in requests])
try:
    build_requests(WorkloadSpec(num_prompts=3, random_input_len=48), tok, chat=True)
except InputError as exc:
    print(exc)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.strip().splitlines()
    assert first == "_FastTokenizer [48, 48, 48]"
    assert second.endswith("needs transformers: pip install 'vllm-slo-guard[hf]'")
    assert proc.stderr == ""


# --- the request body ------------------------------------------------------------------------------------


def test_the_body_sends_the_models_ids_or_the_fitted_text_and_ignore_eos(chat_model: Path) -> None:
    tok = load_tokenizer(str(chat_model))
    (completion,) = build_requests(replace(SPEC, num_prompts=1), tok)
    (chat,) = build_requests(replace(SPEC, num_prompts=1), tok, chat=True)
    plain = RequestFunc(None, "http://127.0.0.1:1/v1", "m", chat=False, timeout_s=5)  # type: ignore[arg-type]
    body = plain.payload(completion)
    assert list(body["prompt"]) == list(completion.prompt_token_ids) and body["max_tokens"] == 12
    assert body["ignore_eos"] is True and body["stream_options"] == {"include_usage": True}
    body = RequestFunc(None, "http://127.0.0.1:1/v1", "m", chat=True, timeout_s=5).payload(chat)  # type: ignore[arg-type]
    assert body["messages"] == [{"role": "user", "content": chat.text}]
    assert body["max_completion_tokens"] == 12 and "max_tokens" not in body and body["ignore_eos"] is True


# --- the simulated server counts in the model's tokens ---------------------------------------------------


@pytest.fixture
def sim_server(tmp_path: Path, chat_model: Path) -> Iterator[ServerProcess]:
    port = free_port()
    argv = [sys.executable, "-m", "vllm_slo_guard.sim.server", str(chat_model), "--sim-gpu", "H200-141GB"]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    server = ServerProcess(argv, host="127.0.0.1", port=port, log_path=tmp_path / "sim.log")
    server.start()
    try:
        assert server.wait_ready(90).ready, server.log_text()
        yield server
    finally:
        server.stop(grace_s=5)


def test_the_simulated_server_counts_prompts_in_the_models_tokens(sim_server: ServerProcess, chat_model: Path) -> None:
    model = str(chat_model)
    spec = replace(SPEC, num_prompts=6, random_prefix_len=8)
    for endpoint in ("completions", "chat"):
        config = LoadGenConfig(sim_server.base_url, endpoint=endpoint, tokenizer=model)  # type: ignore[arg-type]
        result = run_load_sync(config, spec)
        assert [(r.success, r.prompt_len, r.output_tokens) for r in result.records] == [(True, 56, 12)] * 6
    tok = load_tokenizer(model)
    text = "the quick brown fox"
    with httpx.Client(base_url=sim_server.base_url, timeout=10) as client:
        counted = client.post("/tokenize", json={"messages": [{"role": "user", "content": text}]}).json()
        assert counted["tokens"] == tok.encode(tok.chat_text([{"role": "user", "content": text}]))
        assert client.post("/tokenize", json={"prompt": text}).json()["tokens"] == tok.encode(text)
        # the simulator's ids are out of this model's vocabulary, as vLLM says
        refused = client.post("/v1/completions", json={"prompt": [5, 3825], "max_tokens": 2})
        assert refused.status_code == 400 and "Token id 3825 is out of vocabulary" in refused.text


# --- the real vLLM CPU build -----------------------------------------------------------------------------

BASE_ARGS = ["--load-format", "dummy", "--max-model-len", "512", "--enforce-eager", "--kv-cache-memory-bytes", "64M"]


@pytest.mark.vllm
@pytest.mark.slow
def test_real_vllm_counts_the_workload_exactly_on_both_endpoints(
    vllm_python: str, chat_model: Path, tmp_path: Path
) -> None:
    """One real server for both endpoints: every record (from vLLM's usage), a raw answer's usage, and
    vLLM's own token counters all equal the asked lengths."""
    model, port = str(chat_model), free_port()
    engine = VllmEngine(vllm_cmd=f"{vllm_python} -m vllm.entrypoints.openai.api_server", cpu=True)
    server = ServerProcess(engine.argv(model, BASE_ARGS, "127.0.0.1", port), host="127.0.0.1", port=port,
                           log_path=tmp_path / "vllm.log")  # fmt: skip
    spec = replace(SPEC, num_prompts=8, request_rate=16.0, random_prefix_len=8)
    server.start()
    try:
        assert server.wait_ready(300).ready, server.log_text()[-3000:]
        for endpoint in ("completions", "chat"):
            config = LoadGenConfig(server.base_url, endpoint=endpoint, tokenizer=model)  # type: ignore[arg-type]
            result = run_load_sync(config, spec)
            assert [(r.success, r.prompt_len, r.output_tokens) for r in result.records] == [(True, 56, 12)] * 8, [
                r.error for r in result.records
            ]
        tok = load_tokenizer(model)
        usages = []
        for chat in (False, True):
            (request,) = build_requests(replace(spec, num_prompts=1, seed=99), tok, chat=chat)
            send = RequestFunc(None, config.api_base, model, chat=chat, timeout_s=60)  # type: ignore[arg-type]
            body = {**send.payload(request), "stream": False}
            body.pop("stream_options")
            answer = httpx.post(f"{config.api_base}/{'chat/completions' if chat else 'completions'}", json=body,
                                timeout=60)  # fmt: skip
            assert answer.status_code == 200, answer.text
            usages.append(answer.json()["usage"])
        assert [(u["prompt_tokens"], u["completion_tokens"]) for u in usages] == [(56, 12), (56, 12)]
        stats = ServerStats.from_text(scrape(server.base_url) or "")
        assert (stats.prompt_tokens, stats.generation_tokens) == (18 * 56, 18 * 12)  # 2 x 8 runs + 2 raw
    finally:
        server.stop(15)


def _bench(vllm_python: str, model: Path, log_dir: Path, *args: str) -> dict[str, object]:
    argv = [
        sys.executable, "-m", "vllm_slo_guard.cli", "bench", str(model), "--engine", "vllm", "--device", "cpu",
        "--vllm-cmd", f"{vllm_python} -m vllm.entrypoints.openai.api_server", "--log-dir", str(log_dir),
        "--startup-timeout", "300s", "--json", *BASE_ARGS, *args,
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr + proc.stdout[-2000:]
    data: dict[str, object] = json.loads(proc.stdout)
    return data


@pytest.mark.vllm
@pytest.mark.slow
def test_bench_on_make_tiny_model_pys_bpe_completes_every_request(
    vllm_python: str, bpe_model: Path, tmp_path: Path
) -> None:
    workload = ["--num-prompts", "16", "--request-rate", "16", "--random-input-len", "60", "--random-output-len", "10"]
    data = _bench(vllm_python, bpe_model, tmp_path, *workload, "--random-range-ratio", "0.3")
    assert data["status"] == "ok" and data["completed"] == 16 and data["failed"] == 0
    spec = WorkloadSpec(num_prompts=16, request_rate=16, random_input_len=60, random_output_len=10,
                        random_range_ratio=0.3)  # fmt: skip
    asked = build_requests(spec, load_tokenizer(str(bpe_model)))
    assert data["total_input_tokens"] == sum(r.prompt_len for r in asked)  # vLLM's usage, summed
    assert data["total_output_tokens"] == sum(r.output_len for r in asked)


@pytest.mark.vllm
@pytest.mark.slow
def test_bench_chat_on_the_384_token_model_completes_every_request(
    vllm_python: str, chat_model: Path, tmp_path: Path
) -> None:
    workload = ["--num-prompts", "12", "--request-rate", "12", "--random-input-len", "48", "--random-output-len", "12"]
    data = _bench(vllm_python, chat_model, tmp_path, "--endpoint", "chat", "--random-prefix-len", "16", *workload)
    assert data["status"] == "ok" and data["completed"] == 12 and data["failed"] == 0
    assert data["total_input_tokens"] == 12 * 64 and data["total_output_tokens"] == 12 * 12
