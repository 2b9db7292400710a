"""One benchmark run: send a workload on its arrival schedule and keep every finished record.

It follows ``vllm bench serve``'s loop (``benchmark`` and ``get_request`` in
``vllm/benchmarks/serve.py``) so its numbers are comparable with vLLM's own benchmark: the sender
sleeps until each request's absolute send time (:func:`arrival_offsets`); a client-side
``max_concurrency`` semaphore is acquired *before* the request's clock starts, so TTFT excludes client
queueing; the model is the first id of ``GET /v1/models`` unless named; warm-ups go first and are not
measured. Each request goes through the request function of :mod:`.request`.

Unlike vLLM's, a run can end early without losing data, because a tuner must not wait out a
configuration that has already failed: a deadline, a caller's ``should_stop`` predicate, a server
that looks dead (``dead_after_failures`` consecutive connection errors or 5xx answers), or a
workload the server refuses (``refused_after`` consecutive 4xx answers: prompts longer than
``max_model_len``, token ids outside the vocabulary) stop the sending and cancel what is in flight;
every finished record is kept, and :meth:`LoadResult.failure_verdict` says whether its failures are
too many to call it a measurement (:mod:`.failures`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp

from .failures import CLIENT_ERROR, MAX_FAILURE_SHARE, FailureGroup, FailureVerdict, failure_groups, failure_kind
from .failures import failure_verdict as judge_failures
from .metrics import DEFAULT_PERCENTILES, RequestRecord, compute_metrics
from .request import RequestFunc, classify, open_session, sdk_headers, status_error
from .tokenizers import prompt_tokenizer
from .workload import WorkloadRequest, WorkloadSpec, arrival_offsets, build_requests, build_warmup_requests

logger = logging.getLogger(__name__)

CANCEL_GRACE_S = 5.0  # how long cancelled in-flight requests may take to unwind
STOP_SERVER_DEAD = "server_dead"
STOP_DEADLINE = "deadline"
STOP_SHOULD_STOP = "should_stop"
STOP_NO_MODEL = "model_unavailable"
STOP_REFUSED = "workload_refused"


@dataclass(frozen=True)
class LoadGenConfig:
    """Where and how to send requests; the workload itself is a :class:`WorkloadSpec`.

    ``base_url`` is the server root (``http://127.0.0.1:8000``; a trailing ``/v1`` is accepted).
    ``model`` is the served model name; None asks ``GET /v1/models`` for the first id, as vLLM's
    bench does. ``request_timeout_s`` bounds each request from send to last token.
    ``tokenizer``: the model folder or Hugging Face id whose tokenizer the prompts are made of (vLLM
    bench's ``--tokenizer``; loaded offline, ``bench.tokenizers``); None is the simulator's vocabulary.
    ``tokenizer_fallback``: use the simulator's vocabulary when that model has no local tokenizer
    (the simulated engine), instead of failing with one line.
    ``refused_after`` consecutive measured requests answered with a 4xx stop the run (0: never).
    """

    base_url: str
    model: str | None = None
    endpoint: Literal["completions", "chat"] = "completions"
    api_key: str = "EMPTY"
    request_timeout_s: float = 120.0
    ignore_eos: bool = True
    temperature: float = 0.0
    dead_after_failures: int = 5
    refused_after: int = 10
    tokenizer: str | None = None
    tokenizer_fallback: bool = False

    @property
    def api_base(self) -> str:
        """The OpenAI API's base URL: the server root plus ``/v1``."""
        root = self.base_url.rstrip("/")
        return root if root.endswith("/v1") else f"{root}/v1"


@dataclass
class LoadResult:
    """What one run measured. ``records`` hold the measured requests that finished, in send order.

    ``duration_s`` runs from the start of the arrival schedule (after warm-ups; vLLM's
    ``benchmark_start_time``) to the last finished request. ``num_sent`` counts the requests whose
    clock started. When ``stopped_early``, ``stop_reason`` says why (``server_dead``, ``deadline``,
    ``should_stop``, ``model_unavailable``, ``workload_refused``) and ``detail`` gives the evidence
    (e.g. the last connection error); requests then in flight are cancelled and counted in
    ``num_cancelled``, never recorded as failures, and requests not yet sent are simply not sent.
    """

    records: list[RequestRecord]
    duration_s: float
    stopped_early: bool = False
    stop_reason: str | None = None
    num_warmups: int = 0
    num_planned: int = 0
    num_sent: int = 0
    num_cancelled: int = 0
    detail: str = ""
    model: str | None = None

    def metrics(
        self,
        percentiles: Sequence[float] = DEFAULT_PERCENTILES,
        goodput_thresholds_s: Mapping[str, float] | None = None,
    ) -> dict[str, Any]:
        """vLLM's ``--save-result`` keys (``mean_ttft_ms``, ``request_throughput``, ...) for this run."""
        return compute_metrics(
            self.records, self.duration_s, percentiles=percentiles, goodput_thresholds_s=goodput_thresholds_s
        )

    def failure_groups(self) -> list[FailureGroup]:
        """The failed requests by kind (count, status, most common message), the largest group first."""
        return failure_groups(self.records)

    def failure_verdict(self, max_share: float = MAX_FAILURE_SHARE) -> FailureVerdict | None:
        """None when at most ``max_share`` of the requests failed; else the kind most of them share."""
        return judge_failures(self.records, max_share)


@dataclass
class _RunState:
    """Mutable state of one run (created per call, never shared)."""

    config: LoadGenConfig
    send: RequestFunc
    semaphore: asyncio.Semaphore | None
    should_stop: Callable[[Sequence[RequestRecord]], bool] | None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    stop_reason: str | None = None
    detail: str = ""
    consecutive_faults: int = 0
    consecutive_refusals: int = 0
    finished: list[RequestRecord] = field(default_factory=list)
    last_finish: float = 0.0
    callback_error: Exception | None = None

    def halt(self, reason: str, detail: str = "") -> None:
        """Stop sending and wake the run; the first reason wins."""
        if self.stop_reason is None:
            self.stop_reason, self.detail = reason, detail
            logger.info("load generation stops early (%s) %s", reason, detail)
        self.stop.set()

    def note(self, record: RequestRecord, fatal: bool) -> None:
        """Count consecutive server faults; any answer from a live server resets the count."""
        if fatal:
            self.consecutive_faults += 1
            if self.consecutive_faults >= self.config.dead_after_failures:
                self.halt(STOP_SERVER_DEAD, f"{self.consecutive_faults} consecutive failures, last: {record.error}")
        elif record.success or not record.error.startswith("Request timed out"):
            self.consecutive_faults = 0

    def note_measured(self, record: RequestRecord) -> None:
        """Count consecutive 4xx answers: a workload the server refuses is not measured to its end."""
        refused = not record.success and failure_kind(record) == CLIENT_ERROR
        self.consecutive_refusals = self.consecutive_refusals + 1 if refused else 0
        limit = self.config.refused_after
        if limit and self.consecutive_refusals >= limit:
            self.halt(STOP_REFUSED, f"{self.consecutive_refusals} consecutive requests refused, last: {record.error}")


class _Batch:
    """Sends one list of requests on a schedule and collects their records by position."""

    def __init__(self, state: _RunState, requests: Sequence[WorkloadRequest], measured: bool) -> None:
        self.state, self.requests, self.measured = state, requests, measured
        self.slots: list[RequestRecord | None] = [None] * len(requests)
        self.tasks: list[asyncio.Task[None]] = []
        self.pending = 0  # tasks not finished yet (queued on the semaphore or in flight)
        self.started = 0  # requests whose clock started (sent to the server)
        self.sending_done = False
        self.idle = asyncio.Event()
        self.t0 = 0.0

    async def _send(self, i: int) -> tuple[RequestRecord, bool, float]:
        self.started += 1
        return await self.state.send(self.requests[i], self.t0)

    async def _one(self, i: int) -> None:
        state = self.state
        try:
            if state.semaphore is None:
                record, fatal, finish = await self._send(i)
            else:
                async with state.semaphore:
                    if state.stop.is_set():
                        return
                    record, fatal, finish = await self._send(i)
            self.slots[i] = record
            state.note(record, fatal)
            if self.measured:
                state.last_finish = max(state.last_finish, finish)
                state.finished.append(record)
                state.note_measured(record)
                self._ask_should_stop()
        finally:
            self.pending -= 1
            if self.pending == 0 and self.sending_done:
                self.idle.set()

    def _ask_should_stop(self) -> None:
        state = self.state
        if state.should_stop is None or state.stop.is_set():
            return
        try:
            if state.should_stop(state.finished):
                state.halt(STOP_SHOULD_STOP)
        except Exception as exc:  # a bug in the caller's predicate: stop, keep the data, re-raise at the end
            state.callback_error = exc
            state.halt(STOP_SHOULD_STOP, f"should_stop raised {type(exc).__name__}: {exc}")

    async def _sleep_until(self, when: float) -> None:
        delay = when - time.perf_counter()
        if delay > 0 and not self.state.stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.state.stop.wait(), delay)

    async def run(self, offsets: Sequence[float]) -> int:
        """Send on schedule, wait for the answers or a stop; returns how many in flight were cancelled."""
        state = self.state
        self.t0 = time.perf_counter()
        for i, offset in enumerate(offsets):
            if offset > 0:
                await self._sleep_until(self.t0 + offset)
            if state.stop.is_set():
                break
            self.pending += 1
            self.tasks.append(asyncio.create_task(self._one(i)))
        self.sending_done = True
        if self.pending == 0:
            self.idle.set()
        waiters = {asyncio.ensure_future(self.idle.wait()), asyncio.ensure_future(state.stop.wait())}
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        return await self._cancel_rest()

    async def _cancel_rest(self) -> int:
        """Cancel queued and in-flight requests; returns how many were in flight (sent, no record)."""
        live = [task for task in self.tasks if not task.done()]
        for task in live:
            task.cancel()
        if live:
            await asyncio.wait(live, timeout=CANCEL_GRACE_S)
        return self.started - sum(r is not None for r in self.slots)

    def records(self) -> list[RequestRecord]:
        return [r for r in self.slots if r is not None]


async def discover_model(session: aiohttp.ClientSession, config: LoadGenConfig) -> tuple[str | None, str]:
    """(model, error): the configured name, else the first id of ``GET /v1/models``."""
    if config.model:
        return config.model, ""
    try:
        async with session.get(f"{config.api_base}/models") as response:
            if not 200 <= response.status < 300:
                raise await status_error(response)
            page = await response.json(content_type=None)
    except Exception as exc:
        error, _ = classify(exc, config.request_timeout_s)
        return None, f"GET /v1/models failed: {error}"
    data = page.get("data") if isinstance(page, Mapping) else None
    model = data[0].get("id") if isinstance(data, list) and data and isinstance(data[0], Mapping) else None
    if not isinstance(model, str) or not model:
        return None, "GET /v1/models returned no model"
    return model, ""


async def run_load(
    config: LoadGenConfig,
    workload: WorkloadSpec,
    *,
    deadline_s: float | None = None,
    should_stop: Callable[[Sequence[RequestRecord]], bool] | None = None,
) -> LoadResult:
    """Send ``workload`` to the server of ``config`` and record every measured request.

    Warm-ups (``workload.num_warmups``) go first, concurrently within ``max_concurrency``; they are
    neither recorded nor part of the duration. ``deadline_s`` (seconds after this call starts,
    warm-ups included) and ``should_stop`` (called with the finished records after each one) end
    the run early; so does a server that looks dead. Nothing already measured is dropped. An
    exception raised by ``should_stop`` is re-raised after the run has been wound down.

    Example::

        result = await run_load(LoadGenConfig("http://127.0.0.1:8000"), WorkloadSpec(num_prompts=100))
        print(result.metrics()["p95_ttft_ms"])
    """
    tokenizer = prompt_tokenizer(config.tokenizer, sim_fallback=config.tokenizer_fallback)
    chat = config.endpoint == "chat"
    requests = build_requests(workload, tokenizer, chat=chat)
    offsets = arrival_offsets(workload, len(requests)).tolist()
    warmups = build_warmup_requests(workload, tokenizer, chat=chat)
    cap = workload.max_concurrency
    headers = await sdk_headers(config.api_key)
    # one connection per request that may be in flight, so none waits for one (0: no limit)
    session = open_session(headers, cap or max(len(requests), len(warmups)), config.request_timeout_s)
    timer: asyncio.TimerHandle | None = None
    batch: _Batch | None = None
    try:
        model, error = await discover_model(session, config)
        if model is None:
            return LoadResult([], 0.0, True, STOP_NO_MODEL, num_planned=len(requests), detail=error)
        send = RequestFunc(
            session,
            config.api_base,
            model,
            chat=config.endpoint == "chat",
            timeout_s=config.request_timeout_s,
            temperature=config.temperature,
            ignore_eos=config.ignore_eos,
        )
        semaphore = asyncio.Semaphore(cap) if cap is not None else None
        state = _RunState(config, send, semaphore, should_stop)
        if deadline_s is not None:
            timer = asyncio.get_running_loop().call_later(
                max(deadline_s, 0.0), state.halt, STOP_DEADLINE, f"after {deadline_s:g} s"
            )
        if warmups:
            await _Batch(state, warmups, measured=False).run([0.0] * len(warmups))
        num_cancelled = 0
        if not state.stop.is_set():
            batch = _Batch(state, requests, measured=True)
            num_cancelled = await batch.run(offsets)
    finally:
        if timer is not None:
            timer.cancel()
        await session.close()
    if state.callback_error is not None:
        raise state.callback_error
    return LoadResult(
        records=batch.records() if batch else [],
        duration_s=max(state.last_finish - batch.t0, 0.0) if batch and state.finished else 0.0,
        stopped_early=state.stop_reason is not None,
        stop_reason=state.stop_reason,
        num_warmups=len(warmups),
        num_planned=len(requests),
        num_sent=batch.started if batch else 0,
        num_cancelled=num_cancelled,
        detail=state.detail,
        model=model,
    )


def run_load_sync(
    config: LoadGenConfig,
    workload: WorkloadSpec,
    *,
    deadline_s: float | None = None,
    should_stop: Callable[[Sequence[RequestRecord]], bool] | None = None,
) -> LoadResult:
    """:func:`run_load` for callers without an event loop (one ``asyncio.run`` per call)."""
    return asyncio.run(run_load(config, workload, deadline_s=deadline_s, should_stop=should_stop))


__all__ = [
    "STOP_DEADLINE",
    "STOP_NO_MODEL",
    "STOP_REFUSED",
    "STOP_SERVER_DEAD",
    "STOP_SHOULD_STOP",
    "LoadGenConfig",
    "LoadResult",
    "discover_model",
    "run_load",
    "run_load_sync",
]
