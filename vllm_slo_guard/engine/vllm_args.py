"""The real engine's pass-through flags, checked by the installed vLLM's own parser in vLLM's own Python.

The simulator's table of flags (``vllm_rules/serve_flags.py``) is one vLLM release's; the vLLM a user runs
is whatever is installed. So before the first trial (and before ``serve`` starts anything) the flags are
handed to that vLLM: a short program in its interpreter builds ``vllm serve``'s parser as
``vllm/entrypoints/cli/main.py`` does, parses ``serve MODEL FLAGS``, and runs the serve subcommand's own
quick checks (``validate_parsed_serve_args``, ``vllm/entrypoints/launchers/cli_args.py``). What it accepts
we accept; what it refuses we refuse with its own last line (argparse's, or the exception ``vllm serve``
would stop with). The program imports vLLM (seconds), so each command line is asked once per process.
The tuner itself reads the flags with its table of vLLM 0.32's flags; a flag only another vLLM release
knows is named as such, not refused in our words.

When vLLM cannot be asked (no Python found in ``--vllm-cmd``, vLLM does not import there, no answer in
time), the run goes on with a note: the first trial then meets the same problem and says it in its own words.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..vllm_rules.args import ArgparseExit, parse_serve_args
from ..vllm_rules.serve_flags import VLLM_VERSION as TABLE_VERSION
from .engines import resolve_vllm_command

CHECK_TIMEOUT_S = 300.0  # importing vLLM took 7-14 s on a 2-core CPU machine; a busy one is slower
_MARK = "@@vllm-tune-flag-check@@"
_PYTHON = re.compile(r"python[0-9.]*$")

# Runs in vLLM's interpreter: argv[1] is the model, argv[2] the flags as JSON; prints one marked JSON line.
_PROGRAM = f"""
import contextlib, io, json, sys
model, args = sys.argv[1], json.loads(sys.argv[2])
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
    try:
        import vllm
        from vllm.entrypoints.cli.serve import ServeSubcommand
        from vllm.utils.argparse_utils import FlexibleArgumentParser
        root = FlexibleArgumentParser(prog="vllm")
        serve = ServeSubcommand()
        serve.subparser_init(root.add_subparsers(required=False, dest="subparser"))
        result = {{"asked": True, "version": getattr(vllm, "__version__", "unknown"), "refused": None}}
    except BaseException as exc:
        result = {{"asked": False, "why": (type(exc).__name__ + ": " + str(exc)).strip()}}
    if result["asked"]:
        start = out.tell()
        try:
            serve.validate(root.parse_args(["serve", model, *args]))
        except SystemExit as exc:
            lines = out.getvalue()[start:].strip().splitlines()
            if exc.code in (0, None):
                result["refused"] = "vllm serve exits at once (status 0): drop --help"
            else:
                result["refused"] = lines[-1] if lines else "vllm serve exits with status " + str(exc.code)
        except Exception as exc:
            result["refused"] = type(exc).__name__ + ": " + str(exc)
print("{_MARK}" + json.dumps(result))
"""


class VllmRefusal(InputError):
    """The installed vLLM refuses the pass-through flags; the message is its own line."""


@dataclass(frozen=True)
class FlagCheck:
    """vLLM's answer about one command line."""

    asked: bool  # False: vLLM could not be asked (``why`` says why)
    refused: str | None = None  # vLLM's own line when it refuses the flags
    why: str = ""
    vllm_version: str | None = None
    seconds: float = 0.0
    python: str | None = None  # the interpreter that answered


_ANSWERS: dict[tuple[str, str, tuple[str, ...]], FlagCheck] = {}


def vllm_python(vllm_cmd: str | None = None) -> str | None:
    """The interpreter that runs vLLM: the command's own Python, or the one a ``vllm`` script's ``#!`` names."""
    prefix = resolve_vllm_command(vllm_cmd)
    exe = shutil.which(prefix[0]) or prefix[0]
    if _PYTHON.search(Path(exe).name):
        return exe
    try:
        with open(exe, "rb") as script:
            first = script.readline(512).decode(errors="replace").strip()
    except OSError:
        return None
    if not first.startswith("#!"):
        return None
    words = first[2:].split()
    if words and Path(words[0]).name == "env":
        words = [w for w in words[1:] if not w.startswith("-")]
        found = shutil.which(words[0]) if words else None
        return found if found and _PYTHON.search(Path(found).name) else None
    return words[0] if words and _PYTHON.search(Path(words[0]).name) else None


def ask_vllm(python: str, model: str, args: Sequence[str], *, timeout_s: float = CHECK_TIMEOUT_S) -> FlagCheck:
    """Run vLLM's parser on ``serve MODEL ARGS`` in ``python`` (answers are kept for this process)."""
    key = (python, model, tuple(args))
    if key in _ANSWERS:
        return _ANSWERS[key]
    started = time.monotonic()
    try:
        proc = subprocess.run(
            [python, "-c", _PROGRAM, model, json.dumps(list(args))],
            capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL, env=dict(os.environ),
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return FlagCheck(False, why=f"no answer from {python} within {timeout_s:.0f} s")
    except OSError as exc:
        return FlagCheck(False, why=f"{python}: {exc.strerror or exc}")
    seconds = time.monotonic() - started
    marked = [line for line in proc.stdout.splitlines() if line.startswith(_MARK)]
    if not marked:
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        return FlagCheck(False, why=tail[-1] if tail else f"{python} exited with status {proc.returncode}")
    answer = json.loads(marked[-1][len(_MARK) :])
    if not answer["asked"]:
        return FlagCheck(False, why=answer["why"], seconds=seconds)
    check = FlagCheck(True, answer["refused"], vllm_version=answer["version"], seconds=seconds, python=python)
    _ANSWERS[key] = check
    return check


def remember_accepted(check: FlagCheck | None, model: str, args: Sequence[str]) -> None:
    """Record that the vLLM that gave ``check`` accepts ``args`` too.

    ``serve`` asks about the user's flags as given, and its trials get them without ``--host``, ``--port``,
    ``--api-key`` and ``--served-model-name``, which no parser rule ties to another flag.
    """
    if check is not None and check.asked and check.refused is None and check.python is not None:
        _ANSWERS.setdefault((check.python, model, tuple(args)), check)


def check_serve_flags(
    model: str, args: Sequence[str], vllm_cmd: str | None = None, *, note: Callable[[str], None] | None = None
) -> FlagCheck | None:
    """Raise :class:`VllmRefusal` (vLLM's own line) when the installed vLLM refuses ``vllm serve MODEL ARGS``.

    Returns vLLM's answer, or None when there were no flags to check. When vLLM cannot be asked, ``note``
    says so and the run goes on.
    """
    if not args:
        return None
    python = vllm_python(vllm_cmd)
    if python is None:
        check = FlagCheck(False, why="no Python interpreter found in the vLLM command")
    else:
        check = ask_vllm(python, model, args)
    if check.refused is not None:
        raise VllmRefusal(check.refused)
    if check.asked:
        _check_table(args, check)
    elif note is not None:
        note(f"your vllm serve flags were not checked by vLLM's own parser ({check.why}); the first trial will")
    return check


def _check_table(args: Sequence[str], check: FlagCheck) -> None:
    """The tuner reads the flags with its table of vLLM's flags: say so when another vLLM accepts what it does not."""
    try:
        parse_serve_args(["_model_", *args])
    except ArgparseExit as exc:
        line = exc.line
        raise InputError(
            f"vLLM {check.vllm_version} accepts your flags, but vllm-tune knows vLLM {TABLE_VERSION}'s flags and "
            f"reads them as: {line}"
        ) from None
