"""The load generator: send a workload to an OpenAI-compatible server and time every token.

It follows ``vllm bench serve``'s split (``vllm/benchmarks/serve.py`` and
``lib/endpoint_request_func.py``) so its numbers are comparable with vLLM's own benchmark:

- a request function streams one request and *records* it: TTFT (first chunk with content), the
  gaps between content chunks (ITL), E2EL (last content chunk), token counts from the final
  ``usage`` chunk. A failure becomes a record with ``success=False`` and an error text, never an
  exception;
- the sender sleeps until each request's absolute send time (:func:`arrival_offsets`); a
  client-side ``max_concurrency`` semaphore is acquired *before* the request's clock starts, so
  TTFT excludes client queueing, as in vLLM;
- :func:`compute_metrics` turns the records into vLLM's result keys.

A run can end early without losing data: a deadline, a caller's ``should_stop`` predicate, or a
server that looks dead (``dead_after_failures`` consecutive connection errors or 5xx answers) stop
the sending and cancel what is in flight; every finished record is kept.

The client must never be the bottleneck it measures. ``openai.AsyncOpenAI`` is the configuration
and control object: base URL, API key and headers, model discovery (``client.models.list()``) and
its error types there. The SDK's own request path (option models, header merging, body
"transformation" that walks every prompt token id, typed stream chunks) costs more client CPU than
the HTTP itself, so the streaming requests of a run go out on the very ``httpx.AsyncClient`` the
SDK was given (``http_client=``), with the SDK's headers (``auth_headers``, ``default_headers``);
HTTP and transport errors are mapped to the same record texts. SSE lines are timed without a full
JSON parse when a chunk plainly carries (or plainly lacks) content; the ``usage`` chunk, error
events and anything unusual are parsed with ``json.loads``. For plain ``http://`` servers the HTTPX
client runs on :class:`Http11Transport`, a small keep-alive HTTP/1.1 transport: httpcore's pool
costs milliseconds of client CPU per request (it rescans every connection on every request and
response, quadratic in the concurrency), which caps a 64-way run near 100 requests/s
(``benchmarks/loadgen_overhead.py --with-httpx-pool``: about 9 ms per request, 0.4 ms on ours).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import httpx
import openai

from .metrics import DEFAULT_PERCENTILES, RequestRecord, compute_metrics
from .workload import WorkloadRequest, WorkloadSpec, arrival_offsets, build_requests, build_warmup_requests

logger = logging.getLogger(__name__)

NO_TOKEN_ERROR = "Never received a valid chunk to calculate TTFT."
CANCEL_GRACE_S = 5.0  # how long cancelled in-flight requests may take to unwind
STOP_SERVER_DEAD = "server_dead"
STOP_DEADLINE = "deadline"
STOP_SHOULD_STOP = "should_stop"
STOP_NO_MODEL = "model_unavailable"


@dataclass(frozen=True)
class LoadGenConfig:
    """Where and how to send requests; the workload itself is a :class:`WorkloadSpec`.

    ``base_url`` is the server root (``http://127.0.0.1:8000``; a trailing ``/v1`` is accepted).
    ``model`` is the served model name; None asks ``GET /v1/models`` for the first id, as vLLM's
    bench does. ``request_timeout_s`` bounds each request from send to last token.
    """

    base_url: str
    model: str | None = None
    endpoint: Literal["completions", "chat"] = "completions"
    api_key: str = "EMPTY"
    request_timeout_s: float = 120.0
    ignore_eos: bool = True
    temperature: float = 0.0
    dead_after_failures: int = 5

    @property
    def api_base(self) -> str:
        """The OpenAI SDK's base URL: the server root plus ``/v1``."""
        root = self.base_url.rstrip("/")
        return root if root.endswith("/v1") else f"{root}/v1"


@dataclass
class LoadResult:
    """What one run measured. ``records`` hold the measured requests that finished, in send order.

    ``duration_s`` runs from the start of the arrival schedule (after warm-ups; vLLM's
    ``benchmark_start_time``) to the last finished request. ``num_sent`` counts the requests whose
    clock started. When ``stopped_early``, ``stop_reason`` says why (``server_dead``, ``deadline``,
    ``should_stop``, ``model_unavailable``) and ``detail`` gives the evidence (e.g. the last
    connection error); requests then in flight are cancelled and counted in ``num_cancelled``, never
    recorded as failures, and requests not yet sent are simply not sent.
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


# --- HTTP/1.1 transport ----------------------------------------------------------------------------

MAX_HEAD_BYTES = 64 * 1024
_SIZE_LINE, _TRAILERS = -1, -2  # chunked-decoder states besides "inside a chunk of n bytes"


class _Connection(asyncio.Protocol):
    """One TCP connection: the event loop appends what arrives; one request at a time reads it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[None] | None = None
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @property
    def reusable(self) -> bool:
        """Open, quiet and with nothing left unread: safe for the next request."""
        return not self.eof and not self.buffer and self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        self.eof = True
        if self.transport is not None:
            self.transport.close()

    async def receive(self, timeout_s: float | None) -> None:
        """Wait until more bytes arrive; ``httpx.ReadTimeout`` after ``timeout_s`` of silence."""
        if self.eof:
            raise httpx.RemoteProtocolError("the server closed the connection before the response ended")
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self.waiter = waiter
        timer = loop.call_later(timeout_s, _expire, waiter, timeout_s) if timeout_s is not None else None
        try:
            await waiter
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()


def _expire(waiter: asyncio.Future[None], timeout_s: float) -> None:
    if not waiter.done():
        waiter.set_exception(httpx.ReadTimeout(f"no data from the server for {timeout_s:g} s"))


class _Body(httpx.AsyncByteStream):
    """A response body read from its connection: chunked, Content-Length, or until the server closes.

    A body read to its end hands the connection back to the pool; one closed early closes it.
    """

    def __init__(
        self,
        pool: _Pool,
        key: tuple[str, int],
        conn: _Connection,
        read_timeout_s: float | None,
        *,
        chunked: bool,
        length: int | None,
        keep_alive: bool,
    ) -> None:
        self.pool, self.key, self.conn, self.read_timeout_s = pool, key, conn, read_timeout_s
        self.chunked, self.remaining, self.keep_alive = chunked, length, keep_alive
        self.state = _SIZE_LINE
        self.done = False
        self.released = False

    def _take(self) -> bytes:
        """Consume every complete piece of body now in the buffer (sets ``done`` at the end)."""
        buf = self.conn.buffer
        if not self.chunked:
            if self.remaining is None:  # until close
                self.done = self.conn.eof
                data = bytes(buf)
                buf.clear()
                return data
            data = bytes(buf[: self.remaining])
            del buf[: len(data)]
            self.remaining -= len(data)
            self.done = self.remaining == 0
            return data
        parts = []
        while not self.done:
            if self.state < 0:
                end = buf.find(b"\r\n")
                if end < 0:
                    break
                line = bytes(buf[:end])
                del buf[: end + 2]
                if self.state == _TRAILERS:
                    self.done = not line
                    continue
                try:
                    size = int(line.split(b";", 1)[0], 16)
                except ValueError:
                    raise httpx.RemoteProtocolError(f"malformed chunk size line {line[:40]!r}") from None
                self.state = size if size > 0 else _TRAILERS
            elif len(buf) >= self.state + 2:
                parts.append(bytes(buf[: self.state]))
                del buf[: self.state + 2]
                self.state = _SIZE_LINE
            else:
                break
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            data = self._take()
            if self.done:
                self._release()
            if data:
                yield data
            if self.done:
                return
            await self.conn.receive(self.read_timeout_s)

    def _release(self) -> None:
        if self.released:
            return
        self.released = True
        if self.done and self.keep_alive and self.conn.reusable:
            self.pool.put(self.key, self.conn)
        else:
            self.conn.close()

    async def aclose(self) -> None:
        self._release()


class _Pool:
    """Idle keep-alive connections per (host, port), most recently used first."""

    def __init__(self, max_idle: int) -> None:
        self.max_idle = max_idle
        self.idle: dict[tuple[str, int], list[_Connection]] = {}

    def take(self, key: tuple[str, int]) -> _Connection | None:
        conns = self.idle.get(key)
        while conns:
            conn = conns.pop()
            if conn.reusable:
                return conn
            conn.close()
        return None

    def put(self, key: tuple[str, int], conn: _Connection) -> None:
        conns = self.idle.setdefault(key, [])
        if len(conns) < self.max_idle:
            conns.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        for conns in self.idle.values():
            for conn in conns:
                conn.close()
        self.idle.clear()


class _StaleConnection(Exception):
    """A reused keep-alive connection was closed by the server before it answered: retry on a new one."""


class Http11Transport(httpx.AsyncBaseTransport):
    """A minimal keep-alive HTTP/1.1 transport for plain ``http://`` (no TLS, no proxies).

    Costs O(1) per request and per chunk, whatever the number of connections. Honors HTTPX's
    connect and read timeouts; errors are HTTPX's own exception types, so the OpenAI SDK maps them
    as usual (``APIConnectionError``, ``APITimeoutError``).
    """

    def __init__(self, max_idle: int = 1024) -> None:
        self.pool = _Pool(max_idle)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http" or not url.host:
            raise httpx.UnsupportedProtocol(f"Http11Transport handles plain http:// URLs only, got {url}")
        timeouts = request.extensions.get("timeout", {})
        key = (url.host, url.port or 80)
        head = [b"%s %s HTTP/1.1\r\n" % (request.method.encode("ascii"), url.raw_path)]
        head.extend(b"%s: %s\r\n" % pair for pair in request.headers.raw)
        payload = b"".join(head) + b"\r\n" + await request.aread()
        conn = self.pool.take(key)
        if conn is not None:
            with contextlib.suppress(_StaleConnection):
                return await self._exchange(request, key, conn, payload, timeouts.get("read"), reused=True)
        conn = await self._connect(key, timeouts.get("connect"))
        return await self._exchange(request, key, conn, payload, timeouts.get("read"), reused=False)

    async def _connect(self, key: tuple[str, int], timeout_s: float | None) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(loop.create_connection(_Connection, key[0], key[1]), timeout_s)
        except asyncio.TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {key[0]}:{key[1]} took more than {timeout_s:g} s") from None
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {key[0]}:{key[1]}: {exc}") from exc
        return conn

    async def _exchange(
        self,
        request: httpx.Request,
        key: tuple[str, int],
        conn: _Connection,
        payload: bytes,
        read_timeout_s: float | None,
        *,
        reused: bool,
    ) -> httpx.Response:
        """Write the request and read the response head; the body streams from the connection."""
        try:
            assert conn.transport is not None
            conn.transport.write(payload)
            buf = conn.buffer
            while (end := buf.find(b"\r\n\r\n")) < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    raise httpx.RemoteProtocolError("response head larger than 64 KiB")
                if conn.eof and not buf and reused:
                    raise _StaleConnection
                await conn.receive(read_timeout_s)
            lines = bytes(buf[:end]).split(b"\r\n")
            del buf[: end + 4]
            status, headers, chunked, length, keep_alive = _parse_head(lines)
        except BaseException:
            conn.close()
            raise
        if request.method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            chunked, length = False, 0
        length = None if chunked else length
        body = _Body(self.pool, key, conn, read_timeout_s, chunked=chunked, length=length, keep_alive=keep_alive)
        return httpx.Response(status, headers=headers, stream=body, extensions={"http_version": b"HTTP/1.1"})

    async def aclose(self) -> None:
        self.pool.close()


def _parse_head(lines: list[bytes]) -> tuple[int, list[tuple[bytes, bytes]], bool, int | None, bool]:
    """(status, headers, chunked, content length, keep-alive) of a response head."""
    version, _, rest = lines[0].partition(b" ")
    if not version.startswith(b"HTTP/1.") or not rest[:3].isdigit():
        raise httpx.RemoteProtocolError(f"malformed status line {lines[0][:80]!r}")
    status = int(rest[:3])
    headers = []
    chunked, length, keep_alive = False, None, version != b"HTTP/1.0"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        value = value.strip()
        headers.append((name, value))
        lower = name.lower()
        if lower == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif lower == b"content-length":
            length = int(value)
        elif lower == b"connection":
            keep_alive = value.lower() != b"close"
    return status, headers, chunked, length, keep_alive


def make_http_client(base_url: str, connections: int | None, timeout_s: float) -> httpx.AsyncClient:
    """The HTTPX client for the SDK: :class:`Http11Transport` for http://, HTTPX's own pool otherwise.

    Either way the pool is sized so that no request of a run waits for a connection.
    """
    timeout = httpx.Timeout(timeout_s)
    if httpx.URL(base_url).scheme == "http":
        transport = Http11Transport(max_idle=connections or 1024)
        return httpx.AsyncClient(transport=transport, timeout=timeout)
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(limits=limits, timeout=timeout)


# --- request functions: record, never judge, never raise (cancellation passes through) -------------


class _StreamError(Exception):
    """An error event inside a 200 stream (vLLM sends one when the engine fails mid-request)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class _StatusError(Exception):
    """A non-2xx answer on the hot path; the message is the server's (vLLM's error body), else its text."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _server_message(body: object) -> str | None:
    """The message of vLLM's error body ``{"error": {"message": ...}}`` (older: ``{"message": ...}``)."""
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, Mapping) else inner
        if isinstance(message, str) and message:
            return message
    return None


def _status_error(response: httpx.Response) -> _StatusError:
    """The error of a non-2xx ``response`` whose body has been read."""
    text = response.content.decode("utf-8", "replace").strip()
    try:
        message = _server_message(json.loads(text))
    except ValueError:
        message = None
    return _StatusError(response.status_code, message or text[:500] or response.reason_phrase or "no message")


def _classify(exc: Exception, timeout_s: float) -> tuple[str, bool]:
    """(error text, whether it suggests a dead server: a connection failure or a 5xx).

    Takes the hot path's HTTPX errors and the SDK's errors (model discovery) alike.
    """
    if isinstance(exc, openai.APITimeoutError | httpx.TimeoutException):
        return f"Request timed out after {timeout_s:g} s", False
    if isinstance(exc, _StatusError):
        return f"HTTP {exc.status}: {exc}", exc.status >= 500
    if isinstance(exc, httpx.TransportError):
        return f"Connection error: {str(exc) or type(exc).__name__}", True
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        return f"Connection error: {cause or exc.message}", True
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {_server_message(exc.body) or exc.message}", exc.status_code >= 500
    if isinstance(exc, _StreamError):
        return f"Stream error {exc.code}: {exc}", exc.code >= 500
    return f"{type(exc).__name__}: {exc}", False


def _sdk_headers(client: openai.AsyncOpenAI) -> dict[str, str]:
    """The headers the SDK sends with every request: its auth headers, then its default headers.

    Merged as the SDK merges them: case-insensitive, later wins, an ``Omit`` value removes the
    header. The SDK's per-request bookkeeping headers (retry count, read timeout) are left out.
    """
    merged: dict[str, tuple[str, str]] = {}
    for mapping in (client.auth_headers, client.default_headers):
        for name, value in mapping.items():
            if isinstance(value, str):
                merged[name.lower()] = (name, value)
            else:  # openai.Omit
                merged.pop(name.lower(), None)
    return dict(merged.values())


class _RequestSender:
    """Streams one workload request on the SDK's HTTPX client and times it; one instance per run."""

    def __init__(
        self, client: openai.AsyncOpenAI, http_client: httpx.AsyncClient, model: str, config: LoadGenConfig
    ) -> None:
        self.http, self.model, self.config = http_client, model, config
        self.chat = config.endpoint == "chat"
        self.url = httpx.URL(str(client.base_url).rstrip("/") + ("/chat/completions" if self.chat else "/completions"))
        # what ``build_request`` would merge on every request (Host, the client's headers, the SDK's), once
        headers = httpx.Headers({"Host": self.url.netloc.decode("ascii")})
        headers.update(http_client.headers)
        headers.update(_sdk_headers(client))
        self.headers = headers
        self.extensions = {"timeout": http_client.timeout.as_dict()}
        self.encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode  # as HTTPX's ``json=``

    def payload(self, request: WorkloadRequest) -> dict[str, Any]:
        """vLLM bench's body: token-id prompts for completions (exact lengths), text for chat."""
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": request.output_len,
            "temperature": self.config.temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
            "ignore_eos": self.config.ignore_eos,
        }
        if self.chat:
            body["messages"] = [{"role": "user", "content": request.prompt_text}]
        else:
            body["prompt"] = request.prompt_token_ids  # a tuple: a JSON array
        return body

    async def send(self, request: WorkloadRequest, t0: float) -> tuple[RequestRecord, bool, float]:
        """(record, server-fault flag, finish time); ``t0`` is the schedule start, for ``send_s``."""
        content = self.encode(self.payload(request)).encode()
        timer = _StreamTimer(self.chat, self.config.request_timeout_s)
        try:
            # the request ``build_request`` would make, without merging the same headers again (~1/20 the CPU)
            headers = httpx.Headers(self.headers)
            headers["Content-Length"] = str(len(content))
            stream = httpx.ByteStream(content)
            request_ = httpx.Request("POST", self.url, headers=headers, stream=stream, extensions=self.extensions)
            response = await self.http.send(request_, stream=True)
            try:
                if not 200 <= response.status_code < 300:
                    await response.aread()
                    raise _status_error(response)
                # raw bytes unless a proxy compressed them (vLLM never does): one layer less per chunk
                chunks = response.aiter_bytes() if "content-encoding" in response.headers else response.aiter_raw()
                async for data in chunks:
                    timer.feed(data)
            finally:
                await response.aclose()
        except Exception as exc:
            error, fatal = _classify(exc, self.config.request_timeout_s)
            return timer.record(request, t0, error), fatal, time.perf_counter()
        if not timer.count:
            return timer.record(request, t0, NO_TOKEN_ERROR), False, time.perf_counter()
        return timer.record(request, t0), False, timer.last


class _StreamTimer:
    """Times the content chunks of one SSE stream, as vLLM's bench does: TTFT, ITL gaps, latency.

    ``feed`` runs once per network read and keeps its loop on locals: it is the client's hot path.
    Every content chunk of one read gets that read's arrival time. A ``data:`` line is classified
    without ``json.loads`` when it is safe: no ``"usage"`` or ``"error"`` anywhere in it, and the
    content key (``"text":"`` or ``"content":"``) present, so the byte after it tells an empty
    string from a non-empty one (inside a JSON string every quote is escaped, so these byte
    patterns only occur as keys and string values). Everything else is parsed.
    """

    __slots__ = ("chat", "count", "first", "itl", "key", "last", "limit_s", "pending", "start", "usage")

    def __init__(self, chat: bool, limit_s: float) -> None:
        self.chat, self.limit_s = chat, limit_s
        self.key = b'"content":"' if chat else b'"text":"'
        self.itl: list[float] = []
        self.count = 0
        self.usage: Mapping[str, Any] = {}
        self.pending = b""
        self.start = self.first = self.last = time.perf_counter()

    def feed(self, data: bytes) -> None:
        """Parse the complete ``data:`` lines in ``data``; keep a partial last line for later."""
        lines = (self.pending + data).split(b"\n") if self.pending else data.split(b"\n")
        self.pending = lines.pop()
        key, skip = self.key, len(self.key)
        ts = 0.0
        for line in lines:
            if not line.startswith(b"data:"):
                continue  # blank separators, ": ping" comments, event names
            at = line.find(key)
            if at >= 0 and b'"usage"' not in line and b'"error"' not in line:
                if line.startswith(b'"', at + skip):
                    continue  # an empty string: no content
            else:
                line = line[5:].strip()
                if line == b"[DONE]" or not self._content(json.loads(line)):
                    continue
            ts = ts or time.perf_counter()
            if self.count:
                self.itl.append(ts - self.last)
            else:
                self.first = ts
            self.last = ts
            self.count += 1
        if ts and ts - self.start > self.limit_s:
            raise httpx.ReadTimeout("the request deadline passed")

    def _content(self, event: Mapping[str, Any]) -> bool:
        """Whether a parsed event carries content; records ``usage``, raises on an error event."""
        if event.get("usage"):
            self.usage = event["usage"]
        elif "error" in event:
            raise _stream_error(event)
        choices = event.get("choices")
        if not choices:
            return False
        choice = choices[0]
        if self.chat:
            delta = choice.get("delta")
            return bool(delta and delta.get("content"))
        return bool(choice.get("text"))

    def record(self, request: WorkloadRequest, t0: float, error: str | None = None) -> RequestRecord:
        """The request's record: token counts from ``usage``, else the request and the chunk count."""
        usage, seen = self.usage, self.count > 0
        return RequestRecord(
            success=error is None,
            prompt_len=usage.get("prompt_tokens") or request.prompt_len,
            output_tokens=usage.get("completion_tokens") or self.count,
            ttft_s=self.first - self.start if seen else 0.0,
            e2el_s=self.last - self.start if seen else 0.0,
            itl_s=self.itl,
            error=error or "",
            send_s=self.start - t0,
        )


def _stream_error(event: Mapping[str, Any]) -> _StreamError:
    error = event["error"]
    code = error.get("code") if isinstance(error, Mapping) else None
    return _StreamError(_server_message(event) or str(error), code if isinstance(code, int) else 500)


# --- the run: arrival schedule, concurrency cap, early stops ----------------------------------------


@dataclass
class _RunState:
    """Mutable state of one run (created per call, never shared)."""

    config: LoadGenConfig
    sender: _RequestSender
    semaphore: asyncio.Semaphore | None
    should_stop: Callable[[Sequence[RequestRecord]], bool] | None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    stop_reason: str | None = None
    detail: str = ""
    consecutive_faults: int = 0
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
        return await self.state.sender.send(self.requests[i], self.t0)

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


async def _resolve_model(client: openai.AsyncOpenAI, config: LoadGenConfig) -> tuple[str | None, str]:
    """(model, error): the configured name, else the first id of ``GET /v1/models``."""
    if config.model:
        return config.model, ""
    try:
        page = await client.models.list()
    except Exception as exc:
        error, _ = _classify(exc, config.request_timeout_s)
        return None, f"GET /v1/models failed: {error}"
    if not page.data:
        return None, "GET /v1/models returned no model"
    return page.data[0].id, ""


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
    requests = build_requests(workload)
    offsets = arrival_offsets(workload, len(requests)).tolist()
    warmups = build_warmup_requests(workload)
    cap = workload.max_concurrency
    http_client = make_http_client(config.base_url, cap or max(len(requests), len(warmups)), config.request_timeout_s)
    client = openai.AsyncOpenAI(
        base_url=config.api_base,
        api_key=config.api_key,
        max_retries=0,  # the SDK retries twice by default, which hides failures and distorts latency
        timeout=cast(Any, http_client.timeout),  # newer SDKs annotate their HTTPX fork's Timeout
        http_client=cast(Any, http_client),
    )
    timer: asyncio.TimerHandle | None = None
    batch: _Batch | None = None
    try:
        model, error = await _resolve_model(client, config)
        if model is None:
            return LoadResult([], 0.0, True, STOP_NO_MODEL, num_planned=len(requests), detail=error)
        semaphore = asyncio.Semaphore(cap) if cap is not None else None
        state = _RunState(config, _RequestSender(client, http_client, model, config), semaphore, should_stop)
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
        await client.close()
        await http_client.aclose()
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
    "NO_TOKEN_ERROR",
    "STOP_DEADLINE",
    "STOP_NO_MODEL",
    "STOP_SERVER_DEAD",
    "STOP_SHOULD_STOP",
    "Http11Transport",
    "LoadGenConfig",
    "LoadResult",
    "make_http_client",
    "run_load",
    "run_load_sync",
]
