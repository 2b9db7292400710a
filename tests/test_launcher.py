"""Server lifecycle: start in its own process group, wait for health, stop everything, free the port."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from vllm_slo_guard.engine.launcher import ServerProcess, ServerState, free_port, group_members, port_is_free

FAKE = str(Path(__file__).parent / "data" / "fake_server.py")


def _server(tmp_path: Path, *flags: str) -> ServerProcess:
    port = free_port()
    argv = [sys.executable, FAKE, "--port", str(port), *flags]
    return ServerProcess(argv, host="127.0.0.1", port=port, log_path=tmp_path / "server.log")


def test_ready_then_stop_leaves_nothing(tmp_path: Path) -> None:
    with _server(tmp_path, "--delay", "0.3", "--child") as srv:
        ready = srv.wait_ready(10)
        assert ready.ready and not ready.timed_out and ready.waited_s >= 0.3
        assert srv.state is ServerState.READY
        pgid = srv.pid
        assert pgid is not None and len(group_members(pgid)) == 2  # the server and its lingering child
    assert srv.state is ServerState.STOPPED
    assert group_members(pgid) == []
    assert port_is_free("127.0.0.1", srv.port)
    assert "Application startup complete." in srv.log_text()


def test_exit_before_ready_is_reported_with_its_code(tmp_path: Path) -> None:
    srv = _server(tmp_path, "--exit", "3")
    srv.start()
    try:
        ready = srv.wait_ready(10)
    finally:
        srv.stop()
    assert not ready.ready and not ready.timed_out and ready.exit_code == 3
    assert "fake failure with exit 3" in srv.log_text()


def test_silent_hang_is_a_timeout_not_healthy(tmp_path: Path) -> None:
    srv = _server(tmp_path, "--delay", "60")
    srv.start()
    started = time.monotonic()
    try:
        ready = srv.wait_ready(1.0)
    finally:
        srv.stop(grace_s=2)
    assert ready.timed_out and not ready.ready
    assert time.monotonic() - started < 5


def test_sigterm_ignored_escalates_to_sigkill(tmp_path: Path) -> None:
    srv = _server(tmp_path, "--ignore-sigterm", "--child")
    srv.start()
    assert srv.wait_ready(10).ready
    pgid = srv.pid
    assert pgid is not None
    started = time.monotonic()
    code = srv.stop(grace_s=1.0)
    assert code == -9
    assert time.monotonic() - started < 8
    assert group_members(pgid) == []


def test_a_stopped_server_cannot_be_restarted(tmp_path: Path) -> None:
    srv = _server(tmp_path)
    srv.start()
    srv.stop()
    with pytest.raises(RuntimeError):
        srv.start()
    assert srv.stop() == srv.exit_code  # stopping twice is harmless


def test_stop_runs_on_keyboard_interrupt(tmp_path: Path) -> None:
    srv = _server(tmp_path, "--child")
    with pytest.raises(KeyboardInterrupt), srv:
        assert srv.wait_ready(10).ready
        raise KeyboardInterrupt
    assert srv.pid is not None and group_members(srv.pid) == []
    assert os.path.exists(srv.log_path)


def test_a_running_server_is_recorded_and_guarded_until_it_is_stopped(tmp_path: Path) -> None:
    import json

    import psutil

    from vllm_slo_guard.engine import lifeline

    srv = _server(tmp_path, "--child")
    with srv:
        assert srv.wait_ready(10).ready
        assert srv.record_path is not None and srv.record_path.parent == tmp_path
        record = json.loads(srv.record_path.read_text())
        assert (record["pid"], record["pgid"], record["port"]) == (srv.pid, srv.pid, srv.port)
        assert record["argv"] == srv.argv[:5] and record["owner_pid"] == os.getpid()  # its first words
        watchdogs = [p for p in psutil.Process().children() if lifeline.SCRIPT in p.cmdline()]
        if lifeline.enabled():
            assert len(watchdogs) == 1 and "watch" in watchdogs[0].cmdline()
            assert os.getsid(watchdogs[0].pid) != srv.pid  # outside the server's group: stop() cannot hit it
    assert list(tmp_path.glob("server-*.json")) == []
    assert [p for p in psutil.Process().children() if p.status() != psutil.STATUS_ZOMBIE] == []
