"""``vllm-tune serve``: find (or reuse) the tuned engine arguments, then run them as the foreground server.

The work is ordered so that bad input ends in one line before anything is started or written:

1. **Pass-through flags.** Every flag that is not ours is a ``vllm serve`` flag; all of them are parsed
   with vLLM's rules first: with the real engine by the installed vLLM's own parser
   (``engine/vllm_args.py``), and always by the table of vLLM's flags (``vllm_rules.args.parse_serve_args``),
   each answering with argparse's own line, e.g. ``vllm: error: unrecognized arguments: --swap-space 4``.
   ``--host``, ``--port``, ``--api-key`` and ``--served-model-name`` are then taken out: they go to the
   final server only. Trials bind 127.0.0.1 on a free port, the fingerprint does not depend on them, and
   an API key never lands in the study or the cache.
2. **The user's host:port** must be bindable now (vLLM would otherwise fail after the tuning run with
   ``OSError: [Errno 98] Address already in use``), and is held (bound, not listening) until the
   final server starts, so that the OS never hands it to a trial server as a free port.
3. **The result**: ``--config FILE``; else the cache entry of the spec's fingerprint (``cache.py``);
   else a tuning run that stops at the first sign that the *pinned* flags are refused
   (``search/preflight.py``): an environment error, not fifteen crashed trials.
4. **Guarded launch**: the winner, then the runner-ups (at most ``MAX_TUNED_CANDIDATES`` tuned
   configs), then vLLM's defaults with the pinned flags. A candidate that is not healthy by the
   startup deadline is stopped and its output classified (``engine/crash.py``); a WARNING line names
   its crash category and root cause before the next one starts. An ``environment`` failure (port
   taken, vLLM or the model missing) stops at once, since no other config can fix it.
5. **Foreground**: the first healthy candidate *is* the server (never restarted). From the first
   launch attempt on, SIGTERM and SIGINT are forwarded to the server's process group (the third
   signal SIGKILLs it); once a server process exists, its exit status is ours.

Why a launch's output is relayed rather than inherited: an attempt must be classified if it fails,
yet an attempt that starts is kept as the final server (``engine/foreground.py``). Once it is
healthy the log file stops growing: a long-running server's logs belong to whoever runs us.
"""

from __future__ import annotations

import dataclasses
import errno
import re
import shlex
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .cache import ServeCandidate, TunedResult, from_document, lookup, read_result, result_path, store
from .engine.crash import CrashReport, startup_crash
from .engine.engines import Engine, VllmEngine, resolve_vllm_command
from .engine.factory import engine_for
from .engine.foreground import SignalForwarder, TeeServer
from .engine.launcher import group_members
from .engine.server_record import stop_stale
from .engine.sim import SimEngine
from .engine.vllm_args import check_serve_flags, remember_accepted
from .errors import InputError, SloGuardError
from .paths import log_dir
from .spec import Slo, Timeouts, TuneSpec, identity_hash
from .text import first_line
from .vllm_rules.args import ArgparseExit, parse_serve_args

if TYPE_CHECKING:
    pass

DEFAULT_HOST = "0.0.0.0"  # vLLM's default: every IPv4 interface
DEFAULT_PORT = 8000  # vLLM's default
MAX_TUNED_CANDIDATES = 3  # the winner and two runner-ups; then vLLM's defaults
_FRONTEND_FLAGS = ("--host", "--port", "--api-key", "--served-model-name")  # the last takes one or more values

Say = Callable[[str], None]


def warn(text: str) -> None:
    """Where ``serve`` says what went wrong without stopping: standard error."""
    print(text, file=sys.stderr, flush=True)


class PortInUseError(SloGuardError):
    """The final server's host:port is taken (an environment problem: no config can fix it)."""


class NoTunedResultError(SloGuardError):
    """``--no-tune`` and neither a cached nor a given result."""


class ServeError(SloGuardError):
    """No candidate became healthy, not even vLLM's defaults, or one failed in a way none can fix."""


# --- the pass-through flags ------------------------------------------------------------------------


@dataclass(frozen=True)
class Frontend:
    """Where and under which name the final server answers: flags no trial gets and no fingerprint holds."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    args: tuple[str, ...] = ()  # --api-key / --served-model-name as given

    @property
    def probe_host(self) -> str:
        """The address that reaches the server from here (a wildcard bind answers on loopback)."""
        if self.host in ("", "0.0.0.0"):
            return "127.0.0.1"
        if self.host == "::":
            return "[::1]"
        return f"[{self.host}]" if ":" in self.host else self.host


def check_pass_through(args: Sequence[str], spec: TuneSpec | None = None) -> None:
    """Parse the ``vllm serve`` flags with vLLM's rules; vLLM's own error line when it refuses them.

    With the real engine, the installed vLLM's own parser decides first, in its own Python
    (``engine/vllm_args.py``); the trials' flags (these without the frontend ones) are then known to pass.
    """
    checked = None
    if spec is not None and spec.engine == "vllm":
        checked = check_serve_flags(spec.model or "MODEL", args, spec.vllm_cmd, note=lambda text: warn(f"note: {text}"))
    try:
        parse_serve_args(["_model_", *args])
    except ArgparseExit as exc:
        raise InputError(exc.line) from None
    if checked is not None and spec is not None:
        remember_accepted(checked, spec.model or "MODEL", split_frontend(args)[0])


def split_frontend(args: Sequence[str]) -> tuple[list[str], Frontend]:
    """Take ``--host``, ``--port``, ``--api-key`` and ``--served-model-name`` out of the pinned flags.

    Spellings: ``--flag VALUE``, ``--flag=VALUE`` and underscores; the last one given wins, as in
    argparse. An abbreviation (``--hos``) would slip through, so it is refused with a clear line.
    """
    rest: list[str] = []
    values: dict[str, list[str]] = {}
    i = 0
    while i < len(args):
        name, eq, value = args[i].partition("=")
        flag = name.replace("_", "-") if name.startswith("--") else name
        if flag not in _FRONTEND_FLAGS:
            rest.append(args[i])
            i += 1
            continue
        if eq:
            values[flag] = [value]
            i += 1
            continue
        end = i + 1
        while end < len(args) and not args[end].startswith("-") and (flag == "--served-model-name" or end == i + 1):
            end += 1
        values[flag] = list(args[i + 1 : end])
        i = end
    ns = parse_serve_args(["_model_", *rest])
    if ns.host is not None or ns.port != DEFAULT_PORT or ns.api_key is not None or ns.served_model_name:
        raise InputError("write --host, --port, --api-key and --served-model-name in full (no abbreviations)")
    port_text = values.get("--port", [str(DEFAULT_PORT)])[0]
    try:
        port = int(port_text)
    except ValueError:
        raise InputError(f"--port {port_text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise InputError(f"--port must be between 1 and 65535, got {port}")
    extra: list[str] = []
    for flag in ("--api-key", "--served-model-name"):
        if flag in values:
            extra += [flag, *values[flag]]
    return rest, Frontend(values.get("--host", [DEFAULT_HOST])[0], port, tuple(extra))


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (not listen on) ``host:port`` now: fail in one line if vLLM could not, and hold it meanwhile.

    While the socket is held, the OS hands the port to no trial server (they bind 127.0.0.1:0), so the
    user's port is still free when the final server starts. SO_REUSEADDR as vLLM sets it.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(
                f"{host}:{port} is already in use (vLLM would stop with `OSError: [Errno 98] Address already "
                "in use`); stop what listens there or choose another --port"
            ) from None
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


# --- the engine ------------------------------------------------------------------------------------


def engine_text(engine: Engine) -> str:
    if isinstance(engine, SimEngine):
        return f"the SIMULATED engine on {engine.gpu} x{engine.gpu_count} (not a real vLLM; asked for by --engine sim)"
    if isinstance(engine, VllmEngine):
        return f"vLLM ({shlex.join(resolve_vllm_command(engine.vllm_cmd))})"
    return engine.name


# --- launching ---------------------------------------------------------------------------------------


def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def start_candidate(
    engine: Engine,
    model: str,
    candidate: ServeCandidate,
    frontend: Frontend,
    timeouts: Timeouts,
    folder: Path,
    forwarder: SignalForwarder,
) -> tuple[TeeServer | None, CrashReport | None, Path]:
    """Start one candidate on the user's host:port: the server (healthy, or signalled), or why it did not start."""
    argv = engine.argv(model, [*candidate.argv, *frontend.args], frontend.host, frontend.port)
    log_path = folder / f"{_slug(candidate.label)}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    server = TeeServer(argv, host=frontend.probe_host, port=frontend.port, log_path=log_path, env=engine.env())
    try:
        server.start()
        forwarder.attach(server.pid)
        ready = server.wait_ready(timeouts.startup_s)
    except BaseException:  # never leave it behind
        server.stop(timeouts.shutdown_s)
        raise
    if ready.ready or forwarder.received:
        assert server.relay is not None
        server.relay.stop_capture()
        return server, None, log_path
    forwarder.attach(None)
    server.stop(timeouts.shutdown_s)
    crash = startup_crash(server.log_text(), ready.exit_code, timed_out=ready.timed_out, deadline_s=timeouts.startup_s)
    return None, crash, log_path


def plan_candidates(result: TunedResult, extra: Sequence[str] = ()) -> list[ServeCandidate]:
    """The tuned candidates in rank order (at most ``MAX_TUNED_CANDIDATES``), then vLLM's defaults.

    ``extra`` (flags given next to ``--config``) is appended to every candidate: the later flag wins.
    """
    defaults = ServeCandidate("vLLM's defaults with your flags", result.pinned_args)
    out: list[ServeCandidate] = []
    seen: set[tuple[str, ...]] = set()
    for candidate in [*result.candidates[:MAX_TUNED_CANDIDATES], defaults]:
        argv = (*candidate.argv, *extra)
        if argv not in seen:
            seen.add(argv)
            out.append(dataclasses.replace(candidate, argv=argv))
    return out


def launch(
    engine: Engine,
    model: str,
    plan: Sequence[ServeCandidate],
    frontend: Frontend,
    timeouts: Timeouts,
    forwarder: SignalForwarder,
    *,
    say: Say = warn,
    folder: Path | None = None,
) -> TeeServer:
    """Start the first candidate of ``plan`` that becomes healthy; say why each one before it did not."""
    folder = folder or log_dir() / "serve"
    failures: list[str] = []
    for index, candidate in enumerate(plan):
        forwarder.check()
        last = index == len(plan) - 1
        if last and failures:
            say(
                f"WARNING: every tuned configuration failed to start; falling back to {candidate.label} — "
                + "; ".join(failures)
            )
        server, crash, log_path = start_candidate(engine, model, candidate, frontend, timeouts, folder, forwarder)
        if server is not None:
            if failures and not forwarder.received:
                say(f"WARNING: serving {candidate.label} because the candidates before it failed to start")
            return server
        assert crash is not None
        failure = f"{candidate.label}: {crash.category}: {first_line(crash.root_cause)}"
        if crash.is_environment:
            raise ServeError(f"{failure} (log: {log_path}); no configuration can fix that")
        failures.append(failure)
        following = "" if last else f"; trying {plan[index + 1].label}"
        say(f"WARNING: {failure} (log: {log_path}){following}")
    raise ServeError("no configuration started, not even vLLM's defaults with your flags: " + "; ".join(failures))


def run_foreground(server: TeeServer, shutdown_s: float) -> int:
    """Wait for the server (signals reach it through the forwarder); its exit status as a shell reports it."""
    pgid = server.pid
    assert pgid is not None
    try:
        code = server.wait()
    finally:
        deadline = time.monotonic() + shutdown_s  # its engine processes exit on the same signal: let them
        while group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        server.stop(shutdown_s)  # whatever is left of the group
    return code if code >= 0 else 128 - code


# --- the command ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServeRequest:
    """What ``vllm-tune serve`` was asked (the CLI builds it)."""

    spec: TuneSpec  # the tuning request; ``pinned_args`` holds every pass-through flag as given
    config_path: str | None = None  # serve this saved result, no tuning
    retune: bool = False
    no_tune: bool = False
    quiet: bool = False
    output_file: str | None = None


@dataclass(frozen=True)
class Source:
    """Where the served result came from, for the summary."""

    kind: str  # "tuned now" | "cache" | "--config"
    detail: str


def read_config(path: str, model: str) -> TunedResult:
    """A saved result for ``--config``; ``model`` (may be empty) must match the file's."""
    if path.endswith((".yaml", ".yml")):
        raise InputError(
            f"--config takes a vllm-tune TOML result (`vllm-tune tune -o FILE`), not vLLM's YAML {path}; "
            "give vLLM's flags on the command line instead"
        )
    saved = read_result(path)
    if model and model != saved.model:
        raise InputError(f"{path} was tuned for {saved.model}, not {model}; drop MODEL or use its own file")
    return saved


def obtain(spec: TuneSpec, request: ServeRequest, say: Say) -> tuple[TunedResult, Source]:
    """The cached result of this spec's fingerprint, or a new tuning run (stored when it has a winner)."""
    spec.validate()
    identity = spec.identity()  # reads the model's config: a missing model is one line here
    fingerprint = identity_hash(identity)
    path = result_path(fingerprint)
    if not request.retune:
        try:
            cached = lookup(fingerprint)
        except InputError as exc:
            if request.no_tune:
                raise
            say(f"WARNING: ignoring a damaged cached result ({exc}); tuning again")
            cached = None
        if cached is not None:
            if request.no_tune or cached.budget is None or cached.budget >= spec.budget:
                return cached, Source("cache", str(path))
            say(f"note: the cached result was tuned with {cached.budget} trials; --budget {spec.budget} tunes on")
    if request.no_tune:
        raise NoTunedResultError(
            f"--no-tune: no tuned result for this model, hardware, SLOs, workload and flags in {path.parent} "
            f"(fingerprint {fingerprint}); run once without --no-tune, or serve a file with --config"
        )
    if request.retune:  # a fresh study: the stored one would only be resumed, and nothing would run
        base = spec.study_name or spec.default_study_name(fingerprint=fingerprint)
        spec = dataclasses.replace(spec, study_name=f"{base}-{time.strftime('%Y%m%d-%H%M%S')}")
    from .export import result_document
    from .progress import make_progress
    from .search.preflight import tune_checked

    result = tune_checked(spec, make_progress(request.quiet))
    if result.winner is None and result.best_miss is None:
        raise ServeError(f"study {result.study_name} holds no configuration to serve (no trial was evaluated)")
    document = result_document(result)
    if result.winner is not None:
        store(fingerprint, document, budget=spec.budget, identity=identity)
    return from_document(document, f"study {result.study_name}"), Source("tuned now", f"study {result.study_name}")


def mask_secrets(argv: Sequence[str]) -> list[str]:
    """``--api-key`` values shown as ``***`` (a summary is printed where others read it)."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg.replace("_", "-") == "--api-key" and i + 1 < len(out):
            out[i + 1] = "***"
        elif arg.replace("_", "-").startswith("--api-key="):
            out[i] = "--api-key=***"
    return out


def slo_lines(slos: Sequence[Slo], metrics: Mapping[str, object]) -> list[str]:
    """One line per SLO: the threshold, what the candidate measured, and whether it held."""
    lines = []
    for slo in slos:
        measured = metrics.get(slo.result_key)
        if not isinstance(measured, (int, float)):
            lines.append(f"  {slo}: not measured")
            continue
        share = measured / (slo.threshold_s * 1000)
        of_it = f"{share:.0%}" if share >= 0.01 else "<1%"
        lines.append(f"  {slo}: measured {measured:.1f} ms ({of_it} of it, {'met' if share <= 1 else 'MISSED'})")
    return lines


def summary(
    model: str, result: TunedResult, plan: Sequence[ServeCandidate], source: Source, engine: Engine, frontend: Frontend
) -> list[str]:
    """The one screen shown before the server starts: what runs, why, on what, and where it listens."""
    first = plan[0]
    lines = [f"vllm-tune serve {model}: result {source.kind} ({source.detail})", f"engine: {engine_text(engine)}"]
    lines.append(f"{first.label}{', confirmed' if first.confirmed else ''}: {shlex.join(first.argv) or '(no flags)'}")
    lines += slo_lines(result.slos, first.metrics)
    figures = []
    for key, text in (("request_goodput", "goodput {:.2f} req/s"), ("request_throughput", "throughput {:.2f} req/s")):
        value = first.metrics.get(key)
        if isinstance(value, (int, float)):
            figures.append(text.format(value))
    if "capacity_req_per_s" in first.objective:
        figures.append(f"capacity {first.objective['capacity_req_per_s']:.2f} req/s within the SLOs")
    if figures:
        lines.append("  " + ", ".join(figures))
    if len(plan) > 1:
        lines.append("if it fails to start: " + ", then ".join(c.label for c in plan[1:]))
    argv = engine.argv(model, [*first.argv, *frontend.args], frontend.host, frontend.port)
    health = f"http://{frontend.probe_host}:{frontend.port}/health"
    lines.append(f"listening on {frontend.host}:{frontend.port} (health: {health})")
    lines.append(f"command: {shlex.join(mask_secrets(argv))}")
    return lines


def serve(request: ServeRequest, *, say: Say = warn) -> int:
    """Tune (or reuse a result), start the best candidate that comes up healthy, and run it in the foreground.

    Returns the server's exit status. Raises :class:`SloGuardError` (one line) for bad input and for
    a launch that failed for every candidate; ``KeyboardInterrupt`` leaves no process behind.
    """
    spec = request.spec
    check_pass_through(spec.pinned_args, spec)
    pinned, frontend = split_frontend(spec.pinned_args)
    spec = dataclasses.replace(spec, pinned_args=tuple(pinned))
    saved = read_config(request.config_path, spec.model) if request.config_path else None
    if saved is not None:
        spec = dataclasses.replace(spec, model=saved.model)
    engine = engine_for(spec)
    for line in stop_stale(log_dir() / "serve"):  # a final server that an earlier serve could not stop
        say(f"note: {line}")
    with reserve_port(frontend.host, frontend.port):  # released just before the final server binds it
        if saved is not None:
            result, source, extra = saved, Source("--config", saved.origin), pinned
            if saved.hardware.get("kind") == "sim" and spec.engine != "sim":
                say(f"WARNING: {saved.origin} was tuned on the simulated engine ({saved.hardware.get('gpu')})")
        else:
            result, source = obtain(spec, request, say)
            extra = []
    if request.output_file:
        import tomli_w

        from .files import write_atomic

        write_atomic(request.output_file, tomli_w.dumps(dict(result.document)))
    if not result.has_winner:
        say(f"WARNING: no configuration met every SLO; serving the closest miss ({result.candidates[0].label})")
    plan = plan_candidates(result, extra)
    if not request.quiet:
        print("\n".join(summary(spec.model, result, plan, source, engine, frontend)), flush=True)
    with SignalForwarder() as forwarder:
        server = launch(engine, spec.model, plan, frontend, spec.timeouts, forwarder, say=say)
        return run_foreground(server, spec.timeouts.shutdown_s)
