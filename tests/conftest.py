"""Shared fixtures: the real vLLM (CPU build) when present, tiny models, and a leak check.

Every test is followed by a check that no child process of the test run is still alive: trial
servers must always be stopped, also when a test fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from vllm_slo_guard.tinymodel import make_bpe_model, make_tiny_model


def _live_children() -> list[psutil.Process]:
    alive = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                alive.append(child)
        except psutil.NoSuchProcess:
            continue
    return alive


@pytest.fixture(autouse=True)
def no_process_left_behind() -> Iterator[None]:
    yield
    deadline = time.monotonic() + 10
    left = _live_children()
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = _live_children()
    if left:
        names = [" ".join(p.cmdline()[:4]) for p in left]
        for proc in left:
            proc.kill()
        pytest.fail(f"processes left behind by the test: {names}")


@pytest.fixture(scope="session")
def vllm_python() -> str:
    """The Python of an environment with vLLM installed (CI: the CPU build in .venv-vllm)."""
    candidate = os.environ.get("SLO_GUARD_VLLM_PYTHON")
    if candidate and Path(candidate).exists():
        return candidate
    for path in (Path(__file__).parents[1] / ".venv-vllm" / "bin" / "python", shutil.which("python3")):
        if not path or not Path(path).exists():
            continue
        if subprocess.run([str(path), "-c", "import vllm"], capture_output=True).returncode == 0:
            return str(path)
    if os.environ.get("CI"):
        pytest.fail("vLLM is not installed for the tests marked vllm (.ci/run installs it in .venv-vllm)")
    pytest.skip("no vLLM installation found (set SLO_GUARD_VLLM_PYTHON)")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama with the simulator's vocabulary, served with --load-format dummy."""
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="session")
def bpe_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model of the vLLM CPU runs (make_tiny_model.py): a Llama with a byte-level BPE of 512 asked
    tokens (347 made), not shaped around our vocabulary, no chat template."""
    return make_bpe_model(tmp_path_factory.mktemp("models") / "bpe-512")


@pytest.fixture(scope="session")
def bpe384_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Qwen2 with a 384-token byte-level BPE (the issue's model), no chat template."""
    return make_bpe_model(
        tmp_path_factory.mktemp("models") / "qwen2-384", vocab_size=384, architecture="Qwen2ForCausalLM"
    )


@pytest.fixture(scope="session")
def chat_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 384-token Qwen2 with a ChatML chat template in its tokenizer_config.json."""
    folder = tmp_path_factory.mktemp("models") / "qwen2-384-chat"
    return make_bpe_model(folder, vocab_size=384, architecture="Qwen2ForCausalLM", chat_template=True)
