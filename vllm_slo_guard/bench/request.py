"""The request function: stream one completion, time its content chunks, record any failure.

Modelled on vLLM's ``vllm/benchmarks/lib/endpoint_request_func.py`` (``async_request_openai_completions``
and ``async_request_openai_chat_completions``) so that our figures are comparable with
``vllm bench serve``: one shared ``aiohttp.ClientSession``, the clock starts just before the POST,
TTFT is the first token chunk, ITL the gaps between token chunks, E2EL the last token chunk, token
counts come from the final ``usage`` chunk. A token chunk is one with a ``text`` (chat: ``content``)
string, also an empty one: vLLM streams one chunk per step even when the step's tokens decode to no
text yet (special tokens, part of a UTF-8 character), and its bench counts it ("text could be empty
here e.g. for special tokens"); only chat's role announcement is not a token. Unlike vLLM's, a failure becomes a
:class:`RequestRecord` with a short error text (the server's own message), the HTTP status and the
failure's kind (:mod:`.failures`), plus a flag saying whether it suggests a dead server (a
connection failure or a 5xx), never an exception or a traceback; cancellation passes through.

The client must never be the bottleneck it measures: the body is encoded once to bytes, the headers
and the timeout live on the session, and SSE lines are timed without ``json.loads`` when a chunk
plainly carries (or plainly lacks) content (:class:`_StreamTimer`).

``openai.AsyncOpenAI`` stays for one job, off the request path: it is the source of the headers
(``auth_headers``, ``default_headers``: ``Authorization``, the SDK's ``User-Agent`` and
``X-Stainless-*``, ``OpenAI-Organization``/``OpenAI-Project`` from the environment), so the server,
and any gateway in front of it, sees the same requests as from the OpenAI clients it serves in
production. It is built once per process and API key (:func:`sdk_headers`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import openai
from yarl import URL

from .failures import CLIENT_ERROR, CONNECTION, NO_CONTENT, OTHER, SERVER_ERROR, TIMEOUT
from .metrics import RequestRecord
from .workload import WorkloadRequest

NO_TOKEN_ERROR = "Never received a valid chunk to calculate TTFT."
# idle connections are dropped before the server's keep-alive timeout (vLLM and uvicorn: 5 s,
# ``VLLM_HTTP_TIMEOUT_KEEP_ALIVE`` in ``vllm/envs.py``), so a request never goes out on a connection
# the server is closing at that moment
KEEPALIVE_S = 4.0

_SDK_HEADERS: dict[str, dict[str, str]] = {}


async def sdk_headers(api_key: str) -> dict[str, str]:
    """The headers the OpenAI SDK sends with every request: its auth headers, then its default headers.

    Merged as the SDK merges them: case-insensitive, later wins, an ``Omit`` value removes the header.
    The SDK's per-request bookkeeping headers (retry count, read timeout) are left out.
    """
    cached = _SDK_HEADERS.get(api_key)
    if cached is None:
        client = openai.AsyncOpenAI(base_url="http://127.0.0.1/v1", api_key=api_key, max_retries=0)
        try:
            merged: dict[str, tuple[str, str]] = {}
            for mapping in (client.auth_headers, client.default_headers):
                for name, value in mapping.items():
                    if isinstance(value, str):
                        merged[name.lower()] = (name, value)
                    else:  # openai.Omit
                        merged.pop(name.lower(), None)
        finally:
            await client.close()
        cached = _SDK_HEADERS[api_key] = dict(merged.values())
    return cached


def open_session(headers: Mapping[str, str], connections: int, timeout_s: float) -> aiohttp.ClientSession:
    """The session of one run: ``connections`` keep-alive connections at most (0: no limit).

    ``timeout_s`` bounds each request from send to its last byte (``ClientTimeout(total=)``). No
    cookies and no proxy from the environment: trial servers are on loopback, and either would
    cost client CPU or distort the latency measured.
    """
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=0, keepalive_timeout=KEEPALIVE_S)
    return aiohttp.ClientSession(
        connector=connector,
        headers=headers,
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
    )


# --- failures: record, never judge, never raise -------------------------------------------------------


class _StreamError(Exception):
    """An error event inside a 200 stream (vLLM sends one when the engine fails mid-request)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class StatusError(Exception):
    """A non-2xx answer; the message is the server's (vLLM's error body), else the body's text."""

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


async def status_error(response: aiohttp.ClientResponse) -> StatusError:
    """The error of a non-2xx ``response``; reads its body."""
    text = (await response.read()).decode("utf-8", "replace").strip()
    try:
        message = _server_message(json.loads(text))
    except ValueError:
        message = None
    return StatusError(response.status, message or text[:500] or response.reason or "no message")


def _status_kind(status: int) -> str:
    return CLIENT_ERROR if 400 <= status < 500 else SERVER_ERROR if status >= 500 else OTHER


def describe_failure(exc: Exception, timeout_s: float) -> tuple[str, bool, int | None, str]:
    """(error text, whether it suggests a dead server, HTTP status or None, the failure's kind).

    The status of an error event inside a 200 stream is the event's ``code`` (vLLM sends a
    ``VLLMValidationError`` raised after the stream started as ``{"error": {..., "code": 400}}``).
    """
    if isinstance(exc, asyncio.TimeoutError):  # ClientTimeout's total, and aiohttp's ServerTimeoutError
        return f"Request timed out after {timeout_s:g} s", False, None, TIMEOUT
    if isinstance(exc, StatusError):
        return f"HTTP {exc.status}: {exc}", exc.status >= 500, exc.status, _status_kind(exc.status)
    if isinstance(exc, _StreamError):
        return f"Stream error {exc.code}: {exc}", exc.code >= 500, exc.code, _status_kind(exc.code)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"Connection error: cannot connect to {exc.host}:{exc.port}: {exc.os_error}", True, None, CONNECTION
    if isinstance(exc, aiohttp.ClientError | OSError):  # disconnected, cut-off body, reset
        return f"Connection error: {str(exc) or type(exc).__name__}", True, None, CONNECTION
    return f"{type(exc).__name__}: {exc}", False, None, OTHER


def classify(exc: Exception, timeout_s: float) -> tuple[str, bool]:
    """(error text, whether it suggests a dead server: a connection failure or a 5xx)."""
    error, fatal, _, _ = describe_failure(exc, timeout_s)
    return error, fatal


# --- the request function ----------------------------------------------------------------------------


class RequestFunc:
    """Streams workload requests to one endpoint on the run's session and times them; one per run."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        api_base: str,
        model: str,
        *,
        chat: bool,
        timeout_s: float,
        temperature: float = 0.0,
        ignore_eos: bool = True,
    ) -> None:
        self.session, self.model, self.chat, self.timeout_s = session, model, chat, timeout_s
        self.temperature, self.ignore_eos = temperature, ignore_eos
        self.url = URL(api_base.rstrip("/") + ("/chat/completions" if chat else "/completions"))
        self.encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

    def payload(self, request: WorkloadRequest) -> dict[str, Any]:
        """vLLM bench's body: the prompt's token ids for completions (exact lengths, in the model's own
        tokens), its text as one user message for chat (the server applies the chat template; the
        workload fitted the text so the templated prompt has the asked length). ``max_tokens`` is
        ``max_completion_tokens`` for chat, as vLLM's chat request function names it; ``ignore_eos``
        (a vLLM extension on both endpoints) makes every output exactly that long."""
        body: dict[str, Any] = {
            "model": self.model,
            "max_completion_tokens" if self.chat else "max_tokens": request.output_len,
            "temperature": self.temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
            "ignore_eos": self.ignore_eos,
        }
        if self.chat:
            body["messages"] = [{"role": "user", "content": request.prompt_text}]
        else:
            body["prompt"] = request.prompt_token_ids  # a tuple: a JSON array
        return body

    async def __call__(self, request: WorkloadRequest, t0: float) -> tuple[RequestRecord, bool, float]:
        """(record, server-fault flag, finish time); ``t0`` is the schedule start, for ``send_s``."""
        data = self.encode(self.payload(request)).encode()
        timer = _StreamTimer(self.chat)
        try:
            async with self.session.post(self.url, data=data) as response:
                if not 200 <= response.status < 300:
                    raise await status_error(response)
                read, feed = response.content.readany, timer.feed
                while chunk := await read():
                    feed(chunk)
        except Exception as exc:
            error, fatal, status, kind = describe_failure(exc, self.timeout_s)
            return timer.record(request, t0, error, status, kind), fatal, time.perf_counter()
        if not timer.count:
            return timer.record(request, t0, NO_TOKEN_ERROR, kind=NO_CONTENT), False, time.perf_counter()
        return timer.record(request, t0), False, timer.last


class _StreamTimer:
    """Times the token chunks of one SSE stream, as vLLM's bench does: TTFT, ITL gaps, latency.

    ``feed`` runs once per network read and keeps its loop on locals: it is the client's hot path.
    Every token chunk of one read gets that read's arrival time. A ``data:`` line is classified
    without ``json.loads`` when it is safe: no ``"usage"`` or ``"error"`` anywhere in it, and the
    content key (``"text":"`` or ``"content":"``) present, so it is a token chunk, unless the string
    is empty in chat's role announcement (inside a JSON string every quote is escaped, so these byte
    patterns only occur as keys and string values). Everything else is parsed.
    """

    __slots__ = ("chat", "count", "first", "itl", "key", "last", "pending", "start", "usage")

    def __init__(self, chat: bool) -> None:
        self.chat = chat
        self.key = b'"content":"' if chat else b'"text":"'
        self.itl: list[float] = []
        self.count = 0
        self.usage: Mapping[str, Any] = {}
        self.pending = b""
        self.start = self.first = self.last = time.perf_counter()

    def feed(self, data: bytes) -> None:
        """Time the complete ``data:`` lines in ``data``; keep a partial last line for later."""
        lines = (self.pending + data).split(b"\n") if self.pending else data.split(b"\n")
        self.pending = lines.pop()
        key, skip, chat = self.key, len(self.key), self.chat
        ts = 0.0
        for line in lines:
            if not line.startswith(b"data:"):
                continue  # blank separators, ": ping" comments, event names
            at = line.find(key)
            if at >= 0 and b'"usage"' not in line and b'"error"' not in line:
                if line.startswith(b'"', at + skip) and chat and b'"role"' in line:
                    continue  # chat's role announcement: no token
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
            content = delta.get("content") if isinstance(delta, Mapping) else None
            return isinstance(content, str) and bool(content or "role" not in delta)
        return isinstance(choice.get("text"), str)

    def record(
        self, request: WorkloadRequest, t0: float, error: str | None = None, status: int | None = None, kind: str = ""
    ) -> RequestRecord:
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
            status=status,
            kind=kind,
        )


def _stream_error(event: Mapping[str, Any]) -> _StreamError:
    error = event["error"]
    code = error.get("code") if isinstance(error, Mapping) else None
    return _StreamError(_server_message(event) or str(error), code if isinstance(code, int) else 500)


__all__ = [
    "KEEPALIVE_S",
    "NO_TOKEN_ERROR",
    "RequestFunc",
    "StatusError",
    "classify",
    "describe_failure",
    "open_session",
    "sdk_headers",
]
