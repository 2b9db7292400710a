"""The lifecycle of one server process: start, wait until healthy, stop, reap, verify the port.

Every trial server runs from an argv list (never a shell string) in its own session, so its whole
process group (vLLM's API server, EngineCore and workers) can be signalled at once. Its stdout and
stderr go to one log file per trial; nothing is piped that is not read. Readiness is polled on
``/health`` against one deadline while the process is watched, so a crash is seen at once and a
silent hang becomes a timeout, never "healthy". Stopping sends SIGTERM to the group, then SIGKILL
after a grace period, reaps the leader, and waits until the port is free again.

So that a server never outlives a ``vllm-tune`` killed by SIGKILL, it is started through the lifeline
(``lifeline.py``: PDEATHSIG, then exec; a watchdog that stops the group) and recorded beside its log
(``server_record.py``) until it is stopped.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx

from . import lifeline
from .lifeline import group_alive as _group_alive
from .lifeline import group_members
from .server_record import remove_record, write_record

__all__ = ["Readiness", "ServerProcess", "ServerState", "free_port", "group_members", "port_is_free"]

POLL_INTERVAL_S = 0.25


class ServerState(enum.Enum):
    UNSTARTED = "unstarted"
    STARTING = "starting"
    READY = "ready"
    EXITED = "exited"
    STOPPED = "stopped"


@dataclass(frozen=True)
class Readiness:
    """How waiting for a server ended."""

    ready: bool
    timed_out: bool
    exit_code: int | None  # set when the process exited before it became ready
    waited_s: float


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _check_executable(argv0: str, env: Mapping[str, str]) -> None:
    """Raise what ``Popen`` would for a missing command (the lifeline, not the server, is what Popen runs)."""
    if os.sep in argv0:
        if not os.path.exists(argv0):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), argv0)
        if not os.access(argv0, os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), argv0)
    elif shutil.which(argv0, path=env.get("PATH", os.defpath)) is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), argv0)


class ServerProcess:
    """One server process group, used as a context manager: ``with ServerProcess(...) as srv:``."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        host: str,
        port: int,
        log_path: str | Path,
        env: Mapping[str, str] | None = None,
        health_path: str = "/health",
    ) -> None:
        self.argv = list(argv)
        self.host, self.port = host, port
        self.log_path = Path(log_path)
        self.env = dict(env) if env is not None else None
        self.health_url = f"http://{host}:{port}{health_path}"
        self.state = ServerState.UNSTARTED
        self._proc: subprocess.Popen[bytes] | None = None
        self._pgid: int | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self.record_path: Path | None = None
        self.started_at: float | None = None
        self.exit_code: int | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        if self.state is not ServerState.UNSTARTED:
            raise RuntimeError(f"server already {self.state.value}; start a new ServerProcess")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._spawn(log, subprocess.STDOUT)

    def _spawn(self, stdout: IO[bytes] | int, stderr: IO[bytes] | int) -> None:
        """Start the server in its own session (through the lifeline where there is one), then record it."""
        env = {**os.environ, **(self.env or {})}
        guarded = lifeline.enabled()
        argv = self.argv
        if guarded:
            _check_executable(argv[0], env)
            argv = lifeline.exec_argv(argv, env)
        self._proc = subprocess.Popen(
            argv, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )
        self._pgid = self._proc.pid
        self.started_at = time.monotonic()
        self.state = ServerState.STARTING
        self.record_path = write_record(self.log_path.parent, self._proc.pid, self._pgid, self.port, self.argv)
        if guarded:
            with open(self.log_path, "ab") as log:
                self._watchdog = subprocess.Popen(
                    lifeline.watch_argv(self._pgid, self.record_path), stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
                )  # fmt: skip

    def poll(self) -> int | None:
        """The exit code if the leader process has exited (and reaps it), else None."""
        if self._proc is None:
            return None
        code = self._proc.poll()
        if code is not None:
            self.exit_code = code
            if self.state in (ServerState.STARTING, ServerState.READY):
                self.state = ServerState.EXITED
        return code

    def health(self, timeout_s: float = 2.0) -> int | None:
        """HTTP status of the health endpoint, or None when nothing answers."""
        try:
            return httpx.get(self.health_url, timeout=timeout_s).status_code
        except httpx.HTTPError:
            return None

    def wait_ready(self, timeout_s: float) -> Readiness:
        """Poll the health endpoint until it answers 200, the process exits, or the deadline passes."""
        if self.started_at is None:
            raise RuntimeError("start() the server first")
        deadline = time.monotonic() + timeout_s
        while True:
            code = self.poll()
            if code is not None:
                return Readiness(False, False, code, time.monotonic() - self.started_at)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return Readiness(False, True, None, time.monotonic() - self.started_at)
            if self.health(timeout_s=min(2.0, max(remaining, 0.05))) == 200:
                self.state = ServerState.READY
                return Readiness(True, False, None, time.monotonic() - self.started_at)
            time.sleep(min(POLL_INTERVAL_S, max(deadline - time.monotonic(), 0)))

    def stop(self, grace_s: float = 15.0, port_wait_s: float = 10.0) -> int | None:
        """SIGTERM the group, SIGKILL it after ``grace_s``, reap, and wait for the port to be free.

        Returns the leader's exit code (negative: killed by that signal). Safe to call twice.
        """
        if self._proc is None or self._pgid is None:
            self.state = ServerState.STOPPED
            return None
        if self.state is not ServerState.STOPPED:
            if self._proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self._pgid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(timeout=grace_s)
            # the leader may be gone while children of the group linger: kill what is left
            if _group_alive(self._pgid):
                lifeline.kill_group(self._pgid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=10)
            deadline = time.monotonic() + 5
            while _group_alive(self._pgid) and time.monotonic() < deadline:
                time.sleep(0.05)
            self.exit_code = self._proc.returncode
            self.state = ServerState.STOPPED
            self._release()
        deadline = time.monotonic() + port_wait_s
        while not port_is_free(self.host, self.port) and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.exit_code

    def _release(self) -> None:
        """The group is stopped: the watchdog and the record go too."""
        if self._watchdog is not None:
            with contextlib.suppress(ProcessLookupError):
                self._watchdog.kill()
            self._watchdog.wait()
            self._watchdog = None
        remove_record(self.record_path)
        self.record_path = None

    def log_text(self, max_bytes: int = 4 * 2**20) -> str:
        """The tail of the log file (stdout and stderr interleaved)."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - max_bytes))
                return fh.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
