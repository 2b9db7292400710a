"""``vllm serve`` argument parsing, with vLLM's flags and spelling rules, for the simulated engine.

Every flag of vLLM 0.32's serve parser is here, read from the checked-in table ``serve_flags.py`` (generated
from vLLM's own parser by ``serve_flags_gen.py``), in vLLM's order, with vLLM's aliases, types, choices and
defaults. The flags the simulator models keep the definitions it was built on (``MODELLED``, ``_OURS``);
the others are accepted and reported by :func:`unmodelled_flags`, so a real ``vllm serve`` command line runs
unchanged and the user is told what the simulation ignores.

The spelling rules follow vLLM's ``FlexibleArgumentParser`` (``vllm/utils/argparse_utils.py``): dashes and
underscores are interchangeable, unique prefixes are accepted, booleans come as ``--x``/``--no-x``, ``-O0``
means ``--optimization-level 0``, ``-cc.key=value`` (and ``--any-config.key value``) sets a key of a JSON
flag, and the size flags take human-readable integers (``argtypes.py``). A refused command line exits with
status 2 and argparse's text, as ``vllm serve`` does: an unknown flag is reported by the root ``vllm``
parser, the rest by ``vllm serve``'s (``vllm/entrypoints/cli/main.py``).
"""

from __future__ import annotations

import argparse
import copy
import json
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from .argtypes import converter, human_readable_int
from .limits import DEFAULT_GPU_MEMORY_UTILIZATION
from .serve_flags import FLAGS, VLLM_VERSION, ServeFlag

KV_CACHE_DTYPES = ("auto", "float16", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc")
DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
CUDAGRAPH_MODES = ("NONE", "PIECEWISE", "FULL", "FULL_DECODE_ONLY", "FULL_AND_PIECEWISE")

# What the simulator models (or knows to have no effect on a simulation): the dests it was built on.
MODELLED = frozenset(
    {
        *("model_tag", "model", "served_model_name", "host", "port", "api_key", "tokenizer", "load_format"),
        *("dtype", "seed", "max_model_len", "max_num_seqs", "max_num_batched_tokens", "gpu_memory_utilization"),
        *("kv_cache_memory_bytes", "block_size", "enable_chunked_prefill", "enable_prefix_caching"),
        *("enforce_eager", "optimization_level", "max_cudagraph_capture_size", "cudagraph_capture_sizes"),
        *("compilation_config", "kv_cache_dtype", "tensor_parallel_size", "pipeline_parallel_size"),
        *("num_gpu_blocks_override", "long_prefill_token_threshold", "scheduling_policy", "performance_mode"),
        *("async_scheduling", "watermark", "stream_interval", "disable_log_stats", "enable_log_requests"),
        *("uvicorn_log_level", "disable_uvicorn_access_log", "trust_remote_code", "revision", "max_logprobs"),
        *("shutdown_timeout", "generation_config", "download_dir"),
    }
)

# Where a modelled flag's definition is not vLLM's, and why (the rest of each definition is vLLM's).
_OURS: dict[str, dict[str, Any]] = {
    "model": {"default": None},  # vLLM's default model is not ours to assume: no model is a refusal
    "served_model_name": {"type": None},  # the names as given
    "host": {"type": None},
    "api_key": {"type": None, "nargs": None},  # one key: the server face and `serve` compare it
    "num_gpu_blocks_override": {"type": int},
    "gpu_memory_utilization": {"default": DEFAULT_GPU_MEMORY_UTILIZATION},
    "optimization_level": {"type": int},  # the levels the simulator models are numbers
    "compilation_config": {"type": json.loads, "default": None},  # a dict; dotted keys are merged into it
    "kv_cache_dtype": {"choices": KV_CACHE_DTYPES},  # the KV-cache dtypes the memory model knows
}

# vLLM's short spellings of long flags (vllm/engine/arg_utils.py), e.g. ``-tp 2``
SHORT_FLAGS = {
    option: long[2:]
    for flag in FLAGS
    for long in flag.options[:1]
    for option in flag.options
    if long.startswith("--") and not option.startswith("--")
}
_DOTTED = re.compile(r"^--?[A-Za-z][^.]*\.")  # ``-cc.key``, ``--speculative-config.key``
O_FLAG = re.compile(r"^-O=?(\d*)$")  # ``-O2``, ``-O=2`` or ``-O 2``: --optimization-level


def short_flag(long_name: str) -> str:
    """The short spelling of ``--long-name``."""
    return next(short for short, name in SHORT_FLAGS.items() if name == long_name)


ROOT_USAGE = (
    "usage: vllm [-h] [-v]\n"
    "            {chat,complete,serve,launch,bench,collect-env,run-batch,preload,snapshot,download-kernels}\n"
    "            ...\n"
)


MISSING_MODEL = "vllm serve: error: the following arguments are required: model_tag\n"


class ArgparseExit(Exception):
    """argparse wanted to exit: ``status`` and the text it would print on stderr."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text

    @property
    def line(self) -> str:
        """The one line an operator reads: argparse's last, its ``error:`` line."""
        lines = self.text.strip().splitlines()
        return lines[-1] if lines else "argument error"


class _Parser(argparse.ArgumentParser):
    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        raise ArgparseExit(status, message or "")

    def error(self, message: str) -> None:  # type: ignore[override]
        if message.startswith("unrecognized arguments"):  # vLLM's root parser reports these
            raise ArgparseExit(2, f"{ROOT_USAGE}vllm: error: {message}\n")
        raise ArgparseExit(2, f"{self.format_usage()}{self.prog}: error: {message}\n")


def _add(parser: argparse.ArgumentParser, flag: ServeFlag) -> None:
    """One table record as an argparse action (with our definition where ``_OURS`` has one)."""
    default = argparse.SUPPRESS if flag.default == argparse.SUPPRESS else copy.deepcopy(flag.default)
    if isinstance(default, str) and re.fullmatch(r"<\w+>", default):  # an instance of a vLLM config class
        default = None
    kwargs: dict[str, Any] = {"default": list(default) if isinstance(default, tuple) else default, "dest": flag.dest}
    options = list(flag.options)
    if flag.action == "boolean_optional":  # argparse adds the --no- forms itself
        options = [o for o in options if not (o.startswith("--no-") and f"--{o[5:]}" in options)]
        kwargs["action"] = argparse.BooleanOptionalAction
    elif flag.action in ("store_true", "store_false", "count"):
        kwargs["action"] = flag.action
    else:
        kwargs["type"] = converter(flag.type)
        if flag.nargs is not None:
            kwargs["nargs"] = flag.nargs
        if flag.nargs == "?":
            kwargs["const"] = flag.const
        if flag.choices is not None:
            kwargs["choices"] = list(flag.choices)
        if flag.action == "append":
            kwargs["action"] = "append"
    kwargs.update(_OURS.get(flag.dest, {}))
    if not options:  # the positional model
        del kwargs["dest"]
        parser.add_argument(flag.dest, **kwargs)
    else:
        parser.add_argument(*options, **kwargs)


def build_parser(prog: str = "vllm serve") -> _Parser:
    """``vllm serve``'s parser: every flag of the table, in vLLM's order (ambiguity messages list them so)."""
    parser = _Parser(prog=prog, usage=f"{prog} [model_tag] [options]", add_help=True)
    for flag in FLAGS:
        if flag.action != "help":
            _add(parser, flag)
    return parser


@lru_cache(maxsize=4)
def _parser(prog: str) -> _Parser:
    return build_parser(prog)


@lru_cache(maxsize=4)
def _defaults(prog: str) -> dict[str, Any]:
    return vars(_parser(prog).parse_args([]))


def _dotted_value(text: str) -> Any:
    """A dotted key's value as vLLM reads it: JSON, else a human-readable int, else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        try:
            return human_readable_int(text)
        except (ValueError, argparse.ArgumentTypeError):
            return text


def _merge(into: dict[str, Any], keys: Sequence[str], value: Any) -> None:
    """Set ``into[k1][k2]… = value``; a list value extends a list already there (vLLM's ``key+``)."""
    for key in keys[:-1]:
        if not isinstance(into.get(key), dict):
            into[key] = {}
        into = into[key]
    if isinstance(value, list) and isinstance(into.get(keys[-1]), list):
        into[keys[-1]] += value
    else:
        into[keys[-1]] = value


def _respelled(args: Sequence[str]) -> list[str]:
    """vLLM's first pass: underscores to dashes in flag names, ``-O<n>`` to ``--optimization-level <n>``."""
    out: list[str] = []
    for i, arg in enumerate(args):
        if arg.startswith("--help="):
            out.append("--help")
        elif arg.startswith("--"):
            key, eq, value = arg.partition("=")
            name, dot, rest = key[2:].partition(".")
            out.append(f"--{name.replace('_', '-')}{dot}{rest}{eq}{value}")
        elif arg.startswith("-O") and arg != "-O":
            out += ["--optimization-level", arg[3:] if arg[2] == "=" else arg[2:]]
        elif arg == "-O" and i + 1 < len(args) and args[i + 1] in {"0", "1", "2", "3"}:
            out.append("--optimization-level")
        else:
            out.append(arg)
    return out


def normalize_argv(argv: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
    """Rewrite vLLM's spellings to plain argparse ones; collect the dotted ``-cc.key=value`` settings.

    Dotted keys of other flags (``--speculative-config.method ngram``) become one JSON value of their flag,
    as vLLM passes them; those of the compilation config are returned apart and merged into its dict.
    """
    args = _respelled(argv)
    out: list[str] = []
    compilation: dict[str, Any] = {}
    others: dict[str, dict[str, Any]] = {}
    skip = False
    for i, arg in enumerate(args):
        if skip:
            skip = False
            continue
        key, eq, value = arg.partition("=")
        if not _DOTTED.match(key):  # a negative number (``-0.5``) is a value, not a flag with a key
            out.append(arg)
            continue
        if not eq:
            value, skip = (args[i + 1] if i + 1 < len(args) else ""), True
        if key.endswith("+"):  # ``--x.key+ a,b`` appends to a list
            key, value = key[:-1], json.dumps(value.split(","))
        flag, *keys = key.split(".")
        if flag in ("-cc", "--compilation-config"):
            compilation[".".join(keys).replace("-", "_")] = _dotted_value(value)
        else:
            _merge(others.setdefault(flag, {}), keys, _dotted_value(value))
    for flag, keyed in others.items():
        out += [flag, json.dumps(keyed)]
    return out, compilation


def parse_serve_args(argv: Sequence[str], prog: str = "vllm serve") -> argparse.Namespace:
    """Parse a ``vllm serve`` command line (without the leading ``vllm serve``).

    Raises ``ArgparseExit`` (status 2 for errors) exactly where vLLM's parser would exit.
    """
    normalized, dotted = normalize_argv(argv)
    ns = _parser(prog).parse_args(normalized)
    if ns.model_tag and ns.model and ns.model_tag != ns.model:
        raise ArgparseExit(2, f"{prog}: error: two different models given: {ns.model_tag} and {ns.model}\n")
    ns.model = ns.model_tag or ns.model
    compilation = dict(ns.compilation_config or {})
    compilation.update(dotted)
    ns.compilation_config = compilation
    return ns


def non_default_args(ns: argparse.Namespace, prog: str = "vllm serve") -> dict[str, Any]:
    """What vLLM logs as ``non-default args: {...}``."""
    defaults = _defaults(prog)
    shown = {}
    for key, value in vars(ns).items():
        if key == "compilation_config":
            if value:
                shown[key] = value
            continue
        if key in defaults and value != defaults[key]:
            shown[key] = value
    return shown


def unmodelled_flags(ns: argparse.Namespace, prog: str = "vllm serve") -> tuple[str, ...]:
    """The flags set on the command line that the simulator does not model, by their long names."""
    defaults = _defaults(prog)
    given = vars(ns)
    return tuple(
        flag.options[0]
        for flag in FLAGS
        if flag.dest not in MODELLED
        and flag.options
        and flag.action != "help"
        and flag.dest in given
        and given[flag.dest] != defaults.get(flag.dest)
    )


def unmodelled_text(flags: Sequence[str]) -> str:
    """What the simulator says once about the flags it accepts without modelling them."""
    them = "it" if len(flags) == 1 else "them"
    return (
        f"the simulated engine does not model {', '.join(flags)} (accepted as vLLM {VLLM_VERSION} accepts {them}; "
        "no effect on the simulation)"
    )


def unmodelled_note(argv: Sequence[str]) -> str | None:
    """:func:`unmodelled_text` for the flags of ``argv``; None when there are none (or when they are refused)."""
    try:
        flags = unmodelled_flags(parse_serve_args(["_model_", *argv]))
    except ArgparseExit:
        return None
    return unmodelled_text(flags) if flags else None
