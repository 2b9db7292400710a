"""The engine in real time: one asyncio task owns the :class:`EngineCore` and hands tokens to requests.

Latency measured against the simulated server must be the simulated step times, so the loop executes
one step, waits until ``previous deadline + step duration`` (absolute deadlines: sleep overshoot never
accumulates), then hands one token to every request that produced one in that step. The faults
(``die_after``, ``stall_after``, ``slow``) act here, and the statistics /metrics reports are recorded here.
"""

from __future__ import annotations

import asyncio
import os
import time
import traceback
from collections.abc import Callable, Sequence

from ..bench.sim_tokenizer import VOCAB_SIZE
from .engine import EngineCore, StepResult
from .evaluator import SimulatedServer
from .exposition import MetricsView, ServerStats, cache_config_labels, render_metrics
from .faults import Fault
from .logs import StartupLog
from .messages import stats_message
from .scheduler import SimRequest

STATS_INTERVAL_ENV = "VLLM_LOG_STATS_INTERVAL"  # vLLM's own variable: read, never defined by us
DEATH_EXIT_DELAY_S = 1.5  # a dead engine's API server exits about this long after the death (real run: 2 s)
RESYNC_S = 1.0  # if the loop falls this far behind its timeline (process suspended), restart the timeline
_TOKEN_STRIDE = 7919  # spreads consecutive output tokens over the vocabulary
DEAD = -1  # queue item: the engine died
ABORTED = -2  # queue item: the request was aborted (client gone)


class RequestStream:
    """One request's channel from the engine loop to its HTTP handler.

    The queue carries the index of each produced token, then nothing more once the last token is in;
    ``DEAD`` / ``ABORTED`` end it early.
    """

    __slots__ = ("arrival", "first_at", "last_at", "queue", "req", "token_base")

    def __init__(self, req: SimRequest, arrival: float, token_base: int) -> None:
        self.req = req
        self.arrival = arrival
        self.first_at: float | None = None
        self.last_at = arrival
        self.token_base = token_base
        self.queue: asyncio.Queue[int] = asyncio.Queue()

    def token_id(self, index: int) -> int:
        """The vocabulary id of output token ``index``: deterministic per prompt and position."""
        return (self.token_base + index * _TOKEN_STRIDE) % VOCAB_SIZE


class EngineRunner:
    """Owns the :class:`EngineCore` and drives it in real time; HTTP handlers submit and read streams."""

    def __init__(self, sim: SimulatedServer, out: StartupLog, *, seed: int, fault: Fault, model_name: str) -> None:
        self.engine: EngineCore = sim.engine(seed)
        self.out = out
        self.fault = fault
        self.model_name = model_name  # the first served name: the ``model_name`` label of /metrics
        self.max_model_len = sim.plan.max_model_len
        self.caching = sim.cfg.enable_prefix_caching
        self.log_stats = not sim.cfg.disable_log_stats
        self.stats = ServerStats(self.max_model_len)
        self.cache_info = cache_config_labels(sim.cfg, sim.plan)
        self.streams: dict[int, RequestStream] = {}
        self.dead = False
        self.stalled = False
        self.num_completed = 0
        self.on_exit: Callable[[], None] = lambda: None
        self._next_id = 0
        self._wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # lifecycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the engine loop (and the periodic stats line) on the running event loop."""
        self._wake = asyncio.Event()
        self._tasks.append(asyncio.create_task(self._engine_loop()))
        if self.log_stats:
            self._tasks.append(asyncio.create_task(self._stats_loop(_stats_interval())))
        if self.fault.die_after == 0:
            asyncio.get_running_loop().call_soon(self.die)

    async def stop(self) -> None:
        """Cancel the engine and stats tasks at application shutdown."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def _end(self, log_end: Callable[[], None]) -> bool:
        """End the engine once: log how, give every in-flight request the engine-dead error, wake the loop.

        Returns False when the engine had already ended (a death and a signal may race).
        """
        if self.dead:
            return False
        self.dead = True
        log_end()
        for stream in self.streams.values():
            stream.queue.put_nowait(DEAD)
        self.streams.clear()
        if self._wake is not None:
            self._wake.set()
        return True

    def die(self) -> None:
        """The engine process is gone: log it like vLLM, fail every request, exit (status 0) shortly after."""
        if self._end(self.out.engine_died):
            asyncio.get_running_loop().call_later(DEATH_EXIT_DELAY_S, self.on_exit)

    def shutdown(self, signal_name: str) -> None:
        """Graceful shutdown (SIGTERM/SIGINT): vLLM aborts everything; in-flight requests see EngineDeadError."""
        self._end(lambda: self.out.shutdown_triggered(signal_name))

    # requests -------------------------------------------------------------------------------------
    def check(self, prompt_len: int, max_tokens: int) -> None:
        """Raise ``RequestRejected`` with vLLM's text if the request can never fit ``max_model_len``."""
        self.engine.check_request(prompt_len, max_tokens)

    def submit(self, prompt_ids: Sequence[int] | None, prompt_len: int, max_tokens: int) -> RequestStream:
        """Add a request to the engine now; the returned stream yields its tokens as steps finish."""
        req = SimRequest(
            req_id=self._next_id,
            prompt_len=prompt_len,
            max_tokens=max_tokens,
            prompt_ids=tuple(prompt_ids) if self.caching and prompt_ids is not None else None,
        )
        self._next_id += 1
        self.engine.add_request(req)
        first = prompt_ids[0] if prompt_ids else 0
        stream = RequestStream(req, time.perf_counter(), (prompt_len * 131 + first) % VOCAB_SIZE)
        self.streams[req.req_id] = stream
        self.stats.max_tokens.observe(max_tokens)
        assert self._wake is not None
        self._wake.set()
        return stream

    def abort(self, stream: RequestStream) -> None:
        """The client went away: take the request out of the engine and end its stream."""
        if self.streams.pop(stream.req.req_id, None) is None:
            return
        self.engine.scheduler.abort(stream.req)
        self.stats.finished["abort"] += 1
        stream.queue.put_nowait(ABORTED)

    # the loop -------------------------------------------------------------------------------------
    async def _engine_loop(self) -> None:
        """Step the engine in real time: absolute deadlines, so sleep overshoot never accumulates."""
        engine = self.engine
        clock = time.perf_counter
        wake = self._wake
        assert wake is not None
        slow = self.fault.slow
        t_prev = clock()
        while not self.dead:
            if self.stalled or not engine.has_work:
                wake.clear()
                await wake.wait()
                t_prev = clock()
                continue
            try:
                result = engine.step()
            except Exception:  # a simulator bug must look like what it is: a dead engine
                self.out.engine_crashed(traceback.format_exc().rstrip())
                self.die()
                return
            if result.num_tokens == 0:  # nothing schedulable: wait for news instead of spinning
                await asyncio.sleep(0.001)
                t_prev = clock()
                continue
            deadline = t_prev + result.duration_s * slow
            delay = deadline - clock()
            await asyncio.sleep(delay if delay > 0 else 0)
            now = clock()
            t_prev = deadline if now - deadline < RESYNC_S else now
            if not self.dead:
                self._deliver(result, now)

    def _deliver(self, result: StepResult, now: float) -> None:
        """Hand this step's tokens to their streams and record vLLM's per-request statistics."""
        streams, stats = self.streams, self.stats
        stats.iteration_tokens.observe(result.num_tokens)
        for req in result.emitted:
            stream = streams.get(req.req_id)
            if stream is None:
                continue
            if stream.first_at is None:
                stream.first_at = now
                stats.ttft.observe(now - stream.arrival)
                stats.prompt_tokens += req.prompt_len
                stats.cached_prompt_tokens += req.num_cached_tokens
            else:
                stats.itl.observe(now - stream.last_at)
            stream.last_at = now
            stream.queue.put_nowait(req.num_output - 1)
        for req in result.finished:
            stream = streams.pop(req.req_id, None)
            if stream is None:
                continue
            self.num_completed += 1
            stats.finished["length"] += 1
            stats.e2e.observe(now - stream.arrival)
            stats.prompt_len.observe(req.prompt_len)
            stats.generation_len.observe(req.num_output)
            if req.num_output > 1 and stream.first_at is not None:
                stats.tpot.observe((now - stream.first_at) / (req.num_output - 1))
        self._apply_faults()

    def _apply_faults(self) -> None:
        """``die_after`` / ``stall_after``: counted in completed requests."""
        fault = self.fault
        if fault.die_after is not None and self.num_completed >= fault.die_after:
            self.die()
        elif fault.stall_after is not None and self.num_completed >= fault.stall_after:
            self.stalled = True

    async def _stats_loop(self, interval: float) -> None:
        """vLLM's periodic ``Engine 000: ...`` line, only while the engine is not idle."""
        engine, sched = self.engine, self.engine.scheduler
        last_prompt, last_gen, last_t = engine.prompt_tokens_total, engine.generation_tokens_total, time.monotonic()
        last_preempt = sched.num_preemptions
        while not self.dead:
            await asyncio.sleep(interval)
            now = time.monotonic()
            prompt, gen, preempt = engine.prompt_tokens_total, engine.generation_tokens_total, sched.num_preemptions
            busy = prompt != last_prompt or gen != last_gen or engine.has_work
            if busy and not self.dead:
                elapsed = max(now - last_t, 1e-9)
                hit_rate = sched.prefix_hits / sched.prefix_queries if sched.prefix_queries else 0.0
                self.out.stats(
                    stats_message(
                        (prompt - last_prompt) / elapsed,
                        (gen - last_gen) / elapsed,
                        engine.num_running,
                        engine.num_waiting,
                        preempt - last_preempt,
                        self.out.device_word,
                        sched.pool.usage,
                        hit_rate if self.caching else None,
                    )
                )
            last_prompt, last_gen, last_t, last_preempt = prompt, gen, now, preempt

    def metrics_text(self) -> str:
        """The /metrics body from the engine's current state and the recorded statistics."""
        sched = self.engine.scheduler
        view = MetricsView(
            running=len(sched.running),
            waiting=len(sched.waiting),
            kv_usage=sched.pool.usage,
            preemptions=sched.num_preemptions,
            prefix_queries=sched.prefix_queries,
            prefix_hits=sched.prefix_hits,
            generation_tokens=self.engine.generation_tokens_total,
        )
        return render_metrics(self.stats, view, self.model_name, self.cache_info, self.log_stats)


def _stats_interval() -> float:
    """vLLM's ``VLLM_LOG_STATS_INTERVAL`` (10 s), so tests can see the stats line quickly."""
    try:
        return max(float(os.environ.get(STATS_INTERVAL_ENV, "10")), 0.1)
    except ValueError:
        return 10.0
