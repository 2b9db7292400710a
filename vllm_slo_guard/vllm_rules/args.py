"""``vllm serve`` argument parsing, with vLLM's spelling rules, for the simulated engine.

Follows vLLM's ``FlexibleArgumentParser`` (``vllm/utils/argparse_utils.py``): dashes and underscores are
interchangeable, unique prefixes are accepted, booleans come as ``--x``/``--no-x``, ``-O0`` means
``--optimization-level 0``, ``-cc.key=value`` sets a compilation-config key, and the size flags take
human-readable integers. An unknown flag exits with status 2 and argparse's usage text, as vLLM does.
Flags the simulator does not model are accepted and ignored, so a real ``vllm serve`` command line
runs unchanged.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from typing import Any

from ..errors import InputError
from ..units import parse_size
from .limits import DEFAULT_GPU_MEMORY_UTILIZATION

KV_CACHE_DTYPES = ("auto", "float16", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc")
DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
CUDAGRAPH_MODES = ("NONE", "PIECEWISE", "FULL", "FULL_DECODE_ONLY", "FULL_AND_PIECEWISE")


# vLLM's short spellings of long flags (vllm/engine/arg_utils.py), e.g. ``-tp 2``
SHORT_FLAGS = {
    "-tp": "tensor-parallel-size",
    "-pp": "pipeline-parallel-size",
    "-dp": "data-parallel-size",
    "-q": "quantization",
    "-cc": "compilation-config",
}
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


class _Parser(argparse.ArgumentParser):
    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        raise ArgparseExit(status, message or "")

    def error(self, message: str) -> None:  # type: ignore[override]
        if message.startswith("unrecognized arguments"):  # vLLM's root parser reports these
            raise ArgparseExit(2, f"{ROOT_USAGE}vllm: error: {message}\n")
        raise ArgparseExit(2, f"{self.format_usage()}{self.prog}: error: {message}\n")


def _human_int(text: str) -> int:
    try:
        return parse_size(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _max_model_len(text: str) -> int:
    if text.lower() in ("auto", "-1"):
        return -1
    return _human_int(text)


def build_parser(prog: str = "vllm serve") -> _Parser:
    """The subset of ``vllm serve``'s parser that the simulator models, plus common frontend flags."""
    p = _Parser(prog=prog, add_help=True)
    bool_opt = argparse.BooleanOptionalAction
    p.add_argument("model_tag", nargs="?", default=None)
    p.add_argument("--model", default=None)
    p.add_argument("--served-model-name", nargs="+", default=None)
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None)
    p.add_argument("--tokenizer", default=None)
    p.add_argument("--load-format", default="auto")
    p.add_argument("--dtype", choices=DTYPES, default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-model-len", type=_max_model_len, default=None)
    p.add_argument("--max-num-seqs", type=int, default=None)
    p.add_argument("--max-num-batched-tokens", type=_human_int, default=None)
    p.add_argument(
        "--gpu-memory-utilization", "--device-memory-utilization", type=float, default=DEFAULT_GPU_MEMORY_UTILIZATION
    )
    p.add_argument("--kv-cache-memory-bytes", type=_human_int, default=None)
    p.add_argument("--block-size", type=int, default=None)
    p.add_argument("--enable-chunked-prefill", action=bool_opt, default=None)
    p.add_argument("--enable-prefix-caching", action=bool_opt, default=None)
    p.add_argument("--enforce-eager", action=bool_opt, default=False)
    p.add_argument("--optimization-level", type=int, default=2)
    p.add_argument("--max-cudagraph-capture-size", type=int, default=None)
    p.add_argument("--cudagraph-capture-sizes", type=int, nargs="+", default=None)
    p.add_argument(short_flag("compilation-config"), "--compilation-config", type=json.loads, default=None)
    p.add_argument("--kv-cache-dtype", choices=KV_CACHE_DTYPES, default="auto")
    p.add_argument("--tensor-parallel-size", short_flag("tensor-parallel-size"), type=int, default=1)
    p.add_argument("--pipeline-parallel-size", short_flag("pipeline-parallel-size"), type=int, default=1)
    p.add_argument("--num-gpu-blocks-override", type=int, default=None)
    p.add_argument("--long-prefill-token-threshold", type=int, default=0)
    p.add_argument("--scheduling-policy", choices=("fcfs", "priority"), default="fcfs")
    p.add_argument("--performance-mode", choices=("balanced", "interactivity", "throughput"), default="balanced")
    p.add_argument("--async-scheduling", action=bool_opt, default=None)
    p.add_argument("--watermark", type=float, default=0.0)
    p.add_argument("--stream-interval", type=int, default=1)
    p.add_argument("--disable-log-stats", action="store_true")
    p.add_argument("--enable-log-requests", action=bool_opt, default=False)
    p.add_argument("--uvicorn-log-level", default="info")
    p.add_argument("--disable-uvicorn-access-log", action="store_true")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--revision", default=None)
    p.add_argument("--max-logprobs", type=int, default=20)
    p.add_argument("--shutdown-timeout", type=int, default=0)
    p.add_argument("--generation-config", default="auto")
    p.add_argument("--download-dir", default=None)
    return p


def normalize_argv(argv: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
    """Rewrite vLLM's spellings to plain argparse ones; collect dotted ``-cc.key=value`` settings."""
    out: list[str] = []
    dotted: dict[str, Any] = {}
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        match = O_FLAG.match(arg)
        if match:
            level = match.group(1)
            if not level and i + 1 < len(args) and args[i + 1].isdigit():
                level = args[i + 1]
                i += 1
            out += ["--optimization-level", level or "2"]
        elif arg.startswith(("-cc.", "--compilation-config.")):
            key, _, value = arg.split(".", 1)[1].partition("=")
            if not _ and i + 1 < len(args):
                value = args[i + 1]
                i += 1
            try:
                dotted[key.replace("-", "_")] = json.loads(value)
            except json.JSONDecodeError:
                dotted[key.replace("-", "_")] = value
        elif arg.startswith("--") and len(arg) > 2:
            flag, eq, value = arg.partition("=")
            out.append(flag.replace("_", "-") + eq + value)
        else:
            out.append(arg)
        i += 1
    return out, dotted


def parse_serve_args(argv: Sequence[str], prog: str = "vllm serve") -> argparse.Namespace:
    """Parse a ``vllm serve`` command line (without the leading ``vllm serve``).

    Raises ``ArgparseExit`` (status 2 for errors) exactly where vLLM's parser would exit.
    """
    normalized, dotted = normalize_argv(argv)
    ns = build_parser(prog).parse_args(normalized)
    if ns.model_tag and ns.model and ns.model_tag != ns.model:
        raise ArgparseExit(2, f"{prog}: error: two different models given: {ns.model_tag} and {ns.model}\n")
    ns.model = ns.model_tag or ns.model
    compilation = dict(ns.compilation_config or {})
    compilation.update(dotted)
    ns.compilation_config = compilation
    return ns


def non_default_args(ns: argparse.Namespace, prog: str = "vllm serve") -> dict[str, Any]:
    """What vLLM logs as ``non-default args: {...}``."""
    defaults = vars(build_parser(prog).parse_args([]))
    shown = {}
    for key, value in vars(ns).items():
        if key == "compilation_config":
            if value:
                shown[key] = value
            continue
        if key in defaults and value != defaults[key]:
            shown[key] = value
    return shown
