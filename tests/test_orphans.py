"""No orphan, ever: a server or a worker dies with the process that started it, also by SIGKILL.

Real processes and real signals: `vllm-tune tune`, `serve` and `compare` run as subprocesses, are
killed with SIGKILL mid-run, and every process they had started (found as their descendants before
the kill, and by the sessions of those) must be gone within ``GONE_S``. A server an earlier run left
behind (recorded beside the study's logs, as a crash leaves it) is stopped before the next run's first trial.
The same on the real vLLM CPU build: ``test_orphans_vllm.py``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import pytest

from vllm_slo_guard.engine import lifeline
from vllm_slo_guard.engine.launcher import ServerProcess, free_port, group_members
from vllm_slo_guard.engine.server_record import PREFIX, ServerRecord, stop_stale, write_record

FAKE = str(Path(__file__).parent / "data" / "fake_server.py")
QWEN = ["Qwen/Qwen2-1.5B", "--engine", "sim", "--gpu", "A100-40GB"]
LOAD = ["--num-prompts", "20", "--random-input-len", "64", "--random-output-len", "16", "--request-rate", "10"]
GONE_S = 10.0

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the lifeline is Linux-only")


# --- finding what a process started --------------------------------------------------------------


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _in_sessions(sids: set[int]) -> list[psutil.Process]:
    """Live processes of these sessions (vLLM's EngineCore and workers keep the server's session)."""
    found = []
    for proc in psutil.process_iter(["status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getsid(proc.pid) in sids:
                found.append(proc)
        except (OSError, psutil.Error):
            continue
    return found


class Family:
    """Everything a process started, as seen before it was killed: its descendants and their sessions."""

    def __init__(self, root: int) -> None:
        self.procs = psutil.Process(root).children(recursive=True)
        self.sessions = set()
        for proc in self.procs:
            try:
                self.sessions.add(os.getsid(proc.pid))
            except OSError:
                continue
        self.sessions.discard(os.getsid(0))  # never our own session (pytest's, the terminal's)

    def left(self) -> list[psutil.Process]:
        return [p for p in self.procs if _alive(p)] + [p for p in _in_sessions(self.sessions) if p not in self.procs]

    def wait_gone(self, timeout_s: float = GONE_S) -> list[str]:
        deadline = time.monotonic() + timeout_s
        while (left := self.left()) and time.monotonic() < deadline:
            time.sleep(0.1)
        names = []
        for proc in left:  # never leave them to the machine, even when the test fails
            try:
                names.append(" ".join(proc.cmdline()[:6]))
                proc.kill()
            except psutil.Error:
                continue
        return names


def vllm_tune_popen(*args: str, cache: Path, out: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    with open(out, "wb") as stdout:
        return subprocess.Popen(
            [sys.executable, "-m", "vllm_slo_guard.cli", *args], stdout=stdout, stderr=subprocess.STDOUT, env=env,
            cwd=cache.parent,
        )  # fmt: skip


def vllm_tune(*args: str, cache: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "vllm_slo_guard.cli", *args], capture_output=True, text=True, timeout=timeout, env=env,
        cwd=cache.parent,
    )  # fmt: skip


def wait_for(predicate, timeout_s: float, what: str, proc: subprocess.Popen[bytes] | None = None):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"exited with {proc.returncode} while waiting for {what}")
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"no {what} within {timeout_s} s")


def healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def running_records(folder: Path) -> list[ServerRecord]:
    return [r for p in sorted(folder.glob(f"{PREFIX}*.json")) if (r := ServerRecord.read(p)) is not None]


def healthy_trial(folder: Path, skip: set[int]) -> ServerRecord | None:
    """A recorded server of the study that answers /health (a trial under measurement), not one of ``skip``."""
    for record in running_records(folder):
        if record.pid not in skip and healthy(record.port):
            return record
    return None


def kill9(proc: subprocess.Popen[bytes]) -> Family:
    family = Family(proc.pid)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    return family


@contextmanager
def killed_on_exit(proc: subprocess.Popen[bytes]) -> Iterator[None]:
    try:
        yield
    finally:
        if proc.poll() is None:
            family = Family(proc.pid)
            proc.kill()
            proc.wait()
            family.wait_gone()


# --- the lifeline itself ---------------------------------------------------------------------------


def owner_script(tmp_path: Path, port: int, thread: bool = False) -> Path:
    """A process that starts a server (with a lingering child that ignores SIGTERM) and then just waits."""
    script = tmp_path / "owner.py"
    script.write_text(
        "import sys, threading, time\n"
        "from vllm_slo_guard.engine.launcher import ServerProcess\n"
        f"srv = ServerProcess([sys.executable, {FAKE!r}, '--port', '{port}', '--child', '--ignore-sigterm'],\n"
        f"    host='127.0.0.1', port={port}, log_path={str(tmp_path / 'server.log')!r})\n"
        f"start = (lambda: (srv.start(), srv.wait_ready(20)))\n"
        f"t = threading.Thread(target=start) if {thread} else None\n"
        "t.start() if t else start()\n"
        "t.join() if t else None\n"
        "print(srv.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    return script


def test_a_server_dies_with_its_owner_on_sigkill_grandchildren_included(tmp_path: Path) -> None:
    port = free_port()
    owner = subprocess.Popen([sys.executable, str(owner_script(tmp_path, port))], stdout=subprocess.PIPE, text=True)
    with killed_on_exit(owner):  # type: ignore[arg-type]
        assert owner.stdout is not None
        pgid = int(owner.stdout.readline())
        assert healthy(port) and len(group_members(pgid)) == 2  # the server and its child that ignores SIGTERM
        (record,) = running_records(tmp_path)
        assert (record.pid, record.pgid, record.port) == (pgid, pgid, port) and record.owner_pid == owner.pid
        family = kill9(owner)  # type: ignore[arg-type]
        started = time.monotonic()
        assert family.wait_gone() == []
        assert group_members(pgid) == [] and time.monotonic() - started < GONE_S
    assert running_records(tmp_path) == []  # the watchdog removed the record of the server it stopped
    assert "lifeline: vllm-tune (pid" in (tmp_path / "server.log").read_text()


def test_a_server_started_from_a_thread_outlives_the_thread_not_its_owner(tmp_path: Path) -> None:
    # PDEATHSIG fires when the parent *thread* exits: a server started from a worker thread must stay up
    port = free_port()
    script = owner_script(tmp_path, port, thread=True)
    owner = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    with killed_on_exit(owner):  # type: ignore[arg-type]
        assert owner.stdout is not None
        pgid = int(owner.stdout.readline())  # printed after the starting thread has exited
        time.sleep(1.0)
        assert healthy(port) and len(group_members(pgid)) == 2
        family = kill9(owner)  # type: ignore[arg-type]
        assert family.wait_gone() == []  # the watchdog, which watches the process, not the thread


def test_shared_memory_of_a_killed_server_is_not_left_in_dev_shm(tmp_path: Path) -> None:
    # vLLM's shm message queues are registered with Python's resource tracker, which ignores SIGTERM
    # and unlinks them once its clients are gone: killed together with them, it would leak them
    server = tmp_path / "shm_server.py"
    engine = (  # like vLLM's EngineCore: the server's child, which outlives the server's PDEATHSIG
        "import signal, time\n"
        "from multiprocessing import shared_memory\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "shm = shared_memory.SharedMemory(create=True, size=1 << 20)\n"
        "print(shm.name, flush=True)\n"
        "time.sleep(600)\n"
    )
    server.write_text(
        f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', {engine!r}])\ntime.sleep(600)\n"
    )
    owner_py = tmp_path / "owner.py"
    owner_py.write_text(
        "import sys, time\n"
        "from vllm_slo_guard.engine.launcher import ServerProcess\n"
        f"srv = ServerProcess([sys.executable, {str(server)!r}], host='127.0.0.1', port=1,\n"
        f"    log_path={str(tmp_path / 'server.log')!r})\n"
        "srv.start()\n"
        "print(srv.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    owner = subprocess.Popen([sys.executable, str(owner_py)], stdout=subprocess.PIPE, text=True)
    with killed_on_exit(owner):  # type: ignore[arg-type]
        assert owner.stdout is not None
        pgid = int(owner.stdout.readline())
        log = tmp_path / "server.log"
        name = wait_for(lambda: log.read_text().strip(), 30, "the shared memory's name")
        assert Path("/dev/shm", name).exists()
        wait_for(lambda: len(group_members(pgid)) == 3, 30, "the resource tracker")  # server, engine, tracker
        family = kill9(owner)  # type: ignore[arg-type]
        assert family.wait_gone() == []
    assert not Path("/dev/shm", name).exists()


def test_exit_codes_and_missing_commands_are_as_without_the_lifeline(tmp_path: Path) -> None:
    for argv, code in (([sys.executable, "-c", "raise SystemExit(3)"], 3), (["sh", "-c", "kill -TERM $$"], -15)):
        srv = ServerProcess(argv, host="127.0.0.1", port=free_port(), log_path=tmp_path / "x.log")
        srv.start()
        try:
            assert srv.wait_ready(10).exit_code == code
        finally:
            srv.stop()
    with pytest.raises(FileNotFoundError):
        ServerProcess(["no-such-command-xyz"], host="127.0.0.1", port=1, log_path=tmp_path / "y.log").start()
    assert running_records(tmp_path) == []


def test_the_server_gets_the_environment_and_signal_dispositions_popen_gives(tmp_path: Path) -> None:
    # the lifeline is Python: its C-locale coercion (LC_CTYPE) and ignored SIGPIPE must not reach the server
    probe = "echo LC_CTYPE=${LC_CTYPE-unset}; grep -E '^Sig(Ign|Blk)' /proc/self/status"
    env = {"PATH": os.environ["PATH"], "LANG": "C"}
    direct = subprocess.run(["sh", "-c", probe], env=env, capture_output=True, text=True, check=True).stdout
    srv = ServerProcess(["sh", "-c", probe], host="127.0.0.1", port=1, log_path=tmp_path / "p.log", env=env)
    with patched_environ({k: v for k, v in os.environ.items() if k not in ("LC_ALL", "LC_CTYPE")}):
        srv.start()
    try:
        assert srv.wait_ready(10).exit_code == 0
    finally:
        srv.stop(port_wait_s=0)
    assert srv.log_text() == direct and "LC_CTYPE=unset" in direct


@contextmanager
def patched_environ(values: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_the_lifeline_starts_nothing_when_its_parent_is_already_gone(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    dead = subprocess.Popen(["true"])
    dead.wait()
    argv = lifeline.python_argv("exec", "--parent", str(dead.pid), "--pdeathsig", "--", "touch", str(marker))
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "is gone" in proc.stderr and not marker.exists()


def test_the_lifeline_costs_little_at_startup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def start_to_exit() -> float:
        srv = ServerProcess(["true"], host="127.0.0.1", port=1, log_path=tmp_path / "t.log")
        started = time.perf_counter()
        srv.start()
        assert srv._proc is not None
        srv._proc.wait()
        elapsed = time.perf_counter() - started
        srv.stop(port_wait_s=0)
        return elapsed

    with_it = sorted(start_to_exit() for _ in range(7))[3]
    monkeypatch.setenv(lifeline.ENV_SWITCH, "0")
    without = sorted(start_to_exit() for _ in range(7))[3]
    assert with_it - without < 0.25, f"lifeline adds {1000 * (with_it - without):.0f} ms"


# --- a stale server of the study ---------------------------------------------------------------------


def test_a_stale_recorded_server_is_stopped_before_the_first_trial(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    folder = cache / "vllm-tune" / "logs" / "stale"
    port = free_port()
    argv = [sys.executable, "-m", "vllm_slo_guard.sim.server", "Qwen/Qwen2-1.5B", "--host", "127.0.0.1",
            "--port", str(port), "--sim-gpu", "A100-40GB"]  # fmt: skip
    stale = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: healthy(port), 60, "healthy stale server", stale)  # type: ignore[arg-type]
        gone_owner = subprocess.Popen(["true"])  # the run that started it, killed long ago
        gone_owner.wait()
        assert write_record(folder, stale.pid, stale.pid, port, argv, owner=gone_owner.pid) is not None
        dead = subprocess.Popen(["true"])
        dead.wait()
        assert write_record(folder, dead.pid, dead.pid, 1, ["true"], owner=gone_owner.pid) is None  # gone already
        (folder / f"{PREFIX}{dead.pid}.json").write_text(
            (folder / f"{PREFIX}{stale.pid}.json").read_text().replace(str(stale.pid), str(dead.pid))
        )  # a record of a dead process: removed, nothing said
        run = vllm_tune(
            "tune", *QWEN, "--sim-mode", "server", "--slo-p95", "200ms", *LOAD, "--budget", "1",
            "--confirm-top-k", "0", "--study-name", "stale", cache=cache,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert stale.wait(timeout=5) in (0, -signal.SIGTERM)  # stopped by the run, not by this test
        notes = [line for line in run.stdout.splitlines() if "stopped a server left running" in line]
        assert len(notes) == 1 and f"pid {stale.pid}, port {port}" in notes[0]
        assert run.stdout.index(notes[0]) < run.stdout.index("trial   0")
        assert running_records(folder) == []
    finally:
        if stale.poll() is None:
            stale.kill()
            stale.wait()


def test_a_record_whose_owner_still_runs_is_left_alone(tmp_path: Path) -> None:
    port = free_port()
    with ServerProcess(
        [sys.executable, FAKE, "--port", str(port)], host="127.0.0.1", port=port, log_path=tmp_path / "s.log"
    ) as srv:
        assert srv.wait_ready(10).ready
        assert stop_stale(tmp_path) == []  # its owner (this process) is alive: another live run's server
        assert healthy(port) and len(running_records(tmp_path)) == 1
    assert running_records(tmp_path) == []


# --- vllm-tune killed mid-run ------------------------------------------------------------------------


def test_kill_9_of_tune_mid_trial_leaves_no_server_and_the_resumed_run_completes(tmp_path: Path) -> None:
    cache, out = tmp_path / "cache", tmp_path / "tune.out"
    args = [
        "tune", *QWEN, "--sim-mode", "server", "--slo-p95", "200ms", *LOAD, "--budget", "3", "--confirm-top-k", "0",
        "--study-name", "killed", "--seed", "1",
    ]  # fmt: skip
    folder = cache / "vllm-tune" / "logs" / "killed"
    proc = vllm_tune_popen(*args, cache=cache, out=out)
    with killed_on_exit(proc):
        first = wait_for(lambda: healthy_trial(folder, set()), 120, "first trial server", proc)
        second = wait_for(lambda: healthy_trial(folder, {first.pid}), 120, "second trial server", proc)
        time.sleep(0.5)  # into its measurement
        family = kill9(proc)
        assert any(p.pid == second.pid for p in family.procs)
        assert family.wait_gone() == []
    resumed = vllm_tune(*args, cache=cache)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after 1 stored trials" in resumed.stdout
    assert re.findall(r"^trial +(\d+) ", resumed.stdout, flags=re.M) == ["1", "2"]  # the budget, completed
    assert "stopped a server left running" not in resumed.stdout  # the lifeline had stopped it already
    assert running_records(folder) == []


def _serve_args(port: int, *extra: str) -> list[str]:
    return ["serve", *QWEN, "--slo-p95", "200ms", *LOAD, "--port", str(port), *extra]


def test_kill_9_of_serve_while_the_final_server_runs_leaves_nothing(tmp_path: Path) -> None:
    cache, port = tmp_path / "cache", free_port()
    tuned = tmp_path / "tuned.toml"
    tuned.write_text(
        'model = "Qwen/Qwen2-1.5B"\nstatus = "tuned"\nslos = ["ttft:p95=200ms"]\n'
        '[hardware]\ngpu = "A100-40GB"\ncount = 1\nkind = "sim"\n'
        '[winner]\ntrial = 1\nconfirmed = true\nstatus = "ok"\nargv = ["--max-num-seqs", "32"]\n'
        "[winner.engine_args]\npinned_args = []\n[winner.metrics]\np95_ttft_ms = 50.0\n"
    )
    proc = vllm_tune_popen(
        "serve", "--config", str(tuned), "--engine", "sim", "--gpu", "A100-40GB", "--port", str(port),
        cache=cache, out=tmp_path / "serve.out",
    )  # fmt: skip
    with killed_on_exit(proc):
        wait_for(lambda: healthy(port), 60, "healthy final server", proc)
        family = kill9(proc)
        assert family.sessions  # the final server's session
        assert family.wait_gone() == []
    assert not healthy(port)
    assert running_records(cache / "vllm-tune" / "logs" / "serve") == []


def test_kill_9_of_serve_mid_trial_leaves_no_server_and_serve_again_tunes_on(tmp_path: Path) -> None:
    cache, port = tmp_path / "cache", free_port()
    args = _serve_args(port, "--sim-mode", "server", "--budget", "2", "--confirm-top-k", "0", "--study-name", "sv")
    folder = cache / "vllm-tune" / "logs" / "sv"
    proc = vllm_tune_popen(*args, cache=cache, out=tmp_path / "first.out")
    with killed_on_exit(proc):
        first = wait_for(lambda: healthy_trial(folder, set()), 120, "first trial server", proc)
        wait_for(lambda: healthy_trial(folder, {first.pid}), 120, "second trial server", proc)
        family = kill9(proc)
        assert family.wait_gone() == []
    again = vllm_tune_popen(*args, cache=cache, out=tmp_path / "again.out")
    with killed_on_exit(again):
        wait_for(lambda: healthy(port), 180, "healthy final server", again)
        again.send_signal(signal.SIGTERM)
        assert again.wait(timeout=60) == 0
    text = (tmp_path / "again.out").read_text()
    assert "resuming after 1 stored trials" in text and re.findall(r"^trial +(\d+) ", text, flags=re.M) == ["1"]


# --- vllm-tune compare -------------------------------------------------------------------------------

SCENARIO = """
name = "orphans"
model = "Qwen/Qwen2-1.5B"
gpu = "A100-40GB"

[slo]
e2el_mean = "5s"

[workload]
num_prompts = 400
random_input_len = 300
random_output_len = 100

[pinned]
max_model_len = 4096

[space]
max_num_seqs = "2:256"
max_num_batched_tokens = "4096:16384"
optimization_level = [0, 1, 2, 3]
gpu_memory_utilization = 0.9
enable_prefix_caching = false
block_size = 16
"""


@pytest.mark.parametrize("phase", ["oracle", "runs"])
def test_kill_9_of_compare_ends_its_workers(tmp_path: Path, phase: str) -> None:
    # two pools, one after the other: the oracle's grid (oracle.py), then the searchers' runs (compare.py)
    (tmp_path / "s.toml").write_text(SCENARIO)
    proc = vllm_tune_popen(
        "compare", "--scenario", "s.toml", "--seeds", "2", "--budget", "10", "--jobs", "2", "--quiet",
        cache=tmp_path / "cache", out=tmp_path / "compare.out",
    )  # fmt: skip

    def workers(skip: set[int]) -> set[int]:
        found = {p.pid for p in psutil.Process(proc.pid).children() if p.pid not in skip}
        return found if len(found) >= 2 else set()

    with killed_on_exit(proc):
        first = wait_for(lambda: workers(set()), 120, "the oracle's pool workers", proc)
        if phase == "runs":
            wait_for(lambda: workers(first), 180, "the runs' pool workers", proc)
        time.sleep(0.3)  # computing
        family = kill9(proc)
        assert len(family.procs) >= 2
        started = time.monotonic()
        assert family.wait_gone() == []
        assert time.monotonic() - started < GONE_S


def test_pool_workers_die_with_their_parent_thread_or_not() -> None:
    # die_with_parent in a worker started from a thread that then exits: the worker lives on
    from concurrent.futures import ProcessPoolExecutor

    results: list[int] = []

    def use_pool() -> None:
        with ProcessPoolExecutor(1, initializer=lifeline.die_with_parent, initargs=(os.getpid(),)) as pool:
            results.append(pool.submit(os.getpid).result())

    thread = threading.Thread(target=use_pool)
    thread.start()
    thread.join(60)
    assert results and results[0] != os.getpid()
