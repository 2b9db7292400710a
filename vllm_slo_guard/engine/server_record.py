"""A running server, written down beside its log, so that a later run can stop it if we could not.

The lifeline (``lifeline.py``) stops a server whose ``vllm-tune`` died, but not after a machine crash
or a SIGKILL where there is no PDEATHSIG. So each server that starts leaves ``server-PID.json`` in its
log folder (for a trial, the study's: ``paths.log_dir() / study``), removed when it stops.
:func:`stop_stale` reads a folder's records before a run's first trial: a server whose owner is gone,
still alive on this host and this boot, and still the process recorded (pid, start time, the argv's
first words) has its process group stopped; a record of a dead process is removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .lifeline import group_members, stop_group

ARGV_WORDS = 5  # the argv's first words recorded: interpreter, module or command, the model
PREFIX = "server-"
_SECRET_FLAGS = ("--api-key", "--api_key")


def boot_id() -> str:
    """This boot of this machine (Linux: the kernel's boot id; elsewhere the boot time)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        import psutil  # psutil costs ~20 ms to import: only where /proc does not answer

        return f"boot@{round(psutil.boot_time())}"


def start_mark(pid: int) -> str | None:
    """When ``pid`` started, exactly (Linux: clock ticks since boot), or None when there is no such process."""
    if sys.platform.startswith("linux"):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        return stat[stat.rfind(")") + 2 :].split()[19]
    import psutil

    try:
        return f"{psutil.Process(pid).create_time():.3f}"
    except psutil.Error:
        return None


def argv_head(argv: Sequence[str]) -> list[str]:
    """The argv's first words, cut before an ``--api-key`` (a record must hold no secret)."""
    head: list[str] = []
    for word in argv[:ARGV_WORDS]:
        if word.split("=", 1)[0] in _SECRET_FLAGS:
            break
        head.append(word)
    return head


@dataclass(frozen=True)
class ServerRecord:
    pid: int
    pgid: int
    port: int
    host: str  # the machine's name
    boot: str
    started: str  # start_mark(pid)
    argv: list[str]  # argv_head of the server's command
    owner_pid: int
    owner_started: str | None
    started_at: str  # local time, for people

    @classmethod
    def read(cls, path: Path) -> ServerRecord | None:
        try:
            data: dict[str, Any] = json.loads(path.read_text())
            return cls(**data)
        except (OSError, ValueError, TypeError):
            return None

    def is_running(self) -> bool:
        """The recorded process exists and is the one recorded (same boot, start time, argv's first words)."""
        if start_mark(self.pid) != self.started:
            return False
        import psutil

        try:
            cmdline = psutil.Process(self.pid).cmdline()
        except psutil.Error:
            return False
        return cmdline[: len(self.argv)] == self.argv

    def owner_alive(self) -> bool:
        return self.owner_started is not None and start_mark(self.owner_pid) == self.owner_started

    def describe(self) -> str:
        return f"pid {self.pid}, port {self.port}, `{' '.join(self.argv)}`, started {self.started_at}"


def write_record(
    folder: Path, pid: int, pgid: int, port: int, argv: Sequence[str], *, owner: int | None = None
) -> Path | None:
    """Record a server that just started (``owner``: the process that started it, by default this one).

    Returns the path to remove when it stops (None when the server is already gone or the folder unwritable).
    """
    owner = os.getpid() if owner is None else owner
    started = start_mark(pid)
    if started is None:
        return None
    record = ServerRecord(
        pid=pid, pgid=pgid, port=port, host=socket.gethostname(), boot=boot_id(), started=started,
        argv=argv_head(argv), owner_pid=owner, owner_started=start_mark(owner),
        started_at=time.strftime("%Y-%m-%d %H:%M:%S"),
    )  # fmt: skip
    path = folder / f"{PREFIX}{pid}.json"
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(asdict(record)))
        os.replace(tmp, path)
    except OSError:
        return None
    return path


def remove_record(path: Path | None) -> None:
    if path is not None:
        with contextlib.suppress(OSError):
            path.unlink()


def _leftover_group(record: ServerRecord) -> list[int]:
    """Members of the recorded group that outlived its leader (Linux): same session, started after it."""
    if not sys.platform.startswith("linux"):
        return []
    members = []
    for pid in group_members(record.pgid):
        try:
            if os.getsid(pid) == record.pgid and int(start_mark(pid) or -1) >= int(record.started):
                members.append(pid)
        except (OSError, ValueError):
            continue
    return members


def stop_stale(folder: Path | None, grace_s: float = 5.0) -> list[str]:
    """Stop the servers recorded in ``folder`` whose owner is gone; one line for each one stopped.

    Records of another host are left alone (nothing here can tell whether they run), and so are
    servers whose owner still runs (another live run of the same study).
    """
    if folder is None or not folder.is_dir():
        return []
    lines = []
    here, boot = socket.gethostname(), boot_id()
    for path in sorted(folder.glob(f"{PREFIX}*.json")):
        record = ServerRecord.read(path)
        if record is None:
            remove_record(path)  # unreadable: a crash mid-write
            continue
        if record.host != here:
            continue
        if record.boot == boot and record.owner_alive():
            continue
        ours = record.boot == boot and (record.is_running() or bool(_leftover_group(record)))
        if ours and stop_group(record.pgid, grace_s):
            lines.append(
                f"stopped a server left running by an earlier run ({record.describe()}; "
                f"vllm-tune pid {record.owner_pid} is gone)"
            )
        remove_record(path)
    return lines
