"""A server run in the foreground of its supervisor: its output relayed as it comes, signals passed on.

``vllm-tune serve`` keeps the first healthy launch attempt as the final server, yet must classify an
attempt that fails. So a launch's stdout and stderr are pipes that a :class:`Relay` copies byte for
byte to our stdout and stderr (an operator, a container runtime or journald sees what vLLM prints, on
the same streams, as it prints it) and, until the server is healthy, into a log file for the crash
classifier. :class:`SignalForwarder` hands SIGTERM and SIGINT on to the server's process group, so a
supervisor stopping us stops vLLM, and vLLM's exit status becomes ours.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import IO

from .launcher import ServerProcess, ServerState

KILL_ON_SIGNAL = 3  # the third SIGTERM/SIGINT while serving SIGKILLs the server's group


def _write_all(fd: int, data: bytes) -> bool:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except OSError:
            return False
    return True


class Relay:
    """Copies a child's stdout and stderr to ours byte for byte, and into a log file while capturing."""

    def __init__(self, log_path: Path, pipes: Sequence[tuple[IO[bytes], int]]) -> None:
        self._lock = threading.Lock()
        self._log: IO[bytes] | None = open(log_path, "ab")  # noqa: SIM115 - closed by stop_capture()
        self._threads = [threading.Thread(target=self._pump, args=pair, daemon=True) for pair in pipes]
        for thread in self._threads:
            thread.start()

    def _pump(self, pipe: IO[bytes], fd: int) -> None:
        writable = True
        with pipe:
            while chunk := os.read(pipe.fileno(), 1 << 16):
                writable = writable and _write_all(fd, chunk)  # our stream gone: keep draining the pipe
                with self._lock:
                    if self._log is not None:
                        self._log.write(chunk)
                        self._log.flush()

    def stop_capture(self) -> None:
        with self._lock:
            if self._log is not None:
                self._log.close()
                self._log = None

    def close(self, timeout_s: float = 5.0) -> None:
        for thread in self._threads:
            thread.join(timeout_s)
        self.stop_capture()


class TeeServer(ServerProcess):
    """A :class:`ServerProcess` whose output is relayed to our stdout/stderr (and its log, until kept)."""

    relay: Relay | None = None

    def start(self) -> None:
        if self.state is not ServerState.UNSTARTED:
            raise RuntimeError(f"server already {self.state.value}; start a new TeeServer")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        sys.stdout.flush()
        sys.stderr.flush()
        self._spawn(subprocess.PIPE, subprocess.PIPE)  # the lifeline and the record, as for a trial server
        proc = self._proc
        assert proc is not None and proc.stdout is not None and proc.stderr is not None
        self.relay = Relay(self.log_path, [(proc.stdout, 1), (proc.stderr, 2)])

    def wait(self) -> int:
        """Block until the leader exits; its exit status (negative: the signal that ended it)."""
        assert self._proc is not None
        self.exit_code = self._proc.wait()
        return self.exit_code

    def stop(self, grace_s: float = 15.0, port_wait_s: float = 10.0) -> int | None:
        code = super().stop(grace_s, port_wait_s)
        if self.relay is not None:
            self.relay.close()
        return code


class SignalForwarder:
    """From the first launch attempt on, SIGTERM and SIGINT go to the server's process group.

    A signal that arrives while a candidate starts is forwarded too (a supervisor may stop us the
    moment the server answers, before our readiness poll has seen it); once a server process exists,
    its exit status is ours. A signal before any launch makes :meth:`check` raise ``KeyboardInterrupt``.
    The ``KILL_ON_SIGNAL``-th signal SIGKILLs the group.
    """

    def __init__(self) -> None:
        self.received = 0
        self._pgid: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> SignalForwarder:
        self._previous = {sig: signal.signal(sig, self._forward) for sig in (signal.SIGTERM, signal.SIGINT)}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        self.received += 1
        self._kill(signal.SIGKILL if self.received >= KILL_ON_SIGNAL else signum)

    def _kill(self, signum: int) -> None:
        if self._pgid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._pgid, signum)

    def attach(self, pgid: int | None) -> None:
        """Forward to this group from now on (and pass on a signal that came while it was being started)."""
        self._pgid = pgid
        if self.received:
            self._kill(signal.SIGTERM)

    def check(self) -> None:
        if self.received:
            raise KeyboardInterrupt
