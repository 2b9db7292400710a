"""Streaming answers: a request's tokens as server-sent events, one chunk per token, as vLLM sends them.

Streaming clients measure time to first token and inter-token latency from these writes, so every
token the engine loop queued goes out as soon as the event loop runs, and a client that disconnects
aborts its request (its KV blocks are freed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .openai_bodies import ENGINE_DEAD_CHUNK, ChunkTemplates, json_bytes, usage
from .realtime import DEAD, EngineRunner, RequestStream


async def _watch_disconnect(receive: Receive, on_disconnect: Callable[[], None]) -> None:
    """Wait for ``http.disconnect`` (the request body was already read) and report it."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            on_disconnect()
            return


class SseResponse(Response):
    """A server-sent-events response fed by a :class:`RequestStream`, one token per chunk.

    Tokens that are already queued go out in one write; a client disconnect aborts the request.
    ``token_json`` is each vocabulary id's text, already JSON-escaped.
    """

    def __init__(
        self,
        runner: EngineRunner,
        stream: RequestStream,
        token_json: Sequence[bytes],
        templates: ChunkTemplates,
        include_usage: bool,
    ) -> None:
        self.runner, self.stream, self.token_json = runner, stream, token_json
        self.templates, self.include_usage = templates, include_usage
        self.status_code = 200
        self.background = None
        self.raw_headers = [(b"content-type", b"text/event-stream; charset=utf-8")]

    def _render(self, index: int) -> bytes:
        """One token's chunk: only the token text is spliced into the pre-serialized template."""
        t = self.templates
        text = self.token_json[self.stream.token_id(index)]
        return t.head + text + (t.last_tail if index + 1 >= self.stream.req.max_tokens else t.tail)

    def _ending(self, completed: int) -> bytes:
        """The optional usage chunk, then ``[DONE]``."""
        end = b""
        if self.include_usage:
            counts = json_bytes(usage(self.stream.req.prompt_len, completed))
            end = self.templates.usage_prefix + counts + b"}\n\n"
        return end + b"data: [DONE]\n\n"

    async def _pump(self, send: Send) -> None:
        """Forward queued tokens until the last one (or an abort / engine death)."""
        queue, last = self.stream.queue, self.stream.req.max_tokens - 1
        if self.templates.preamble:
            await send({"type": "http.response.body", "body": self.templates.preamble, "more_body": True})
        completed = 0
        while True:
            items = [await queue.get()]
            while not queue.empty():
                items.append(queue.get_nowait())
            parts: list[bytes] = []
            finished = False
            for index in items:
                if index < 0:
                    if index == DEAD:
                        parts.append(ENGINE_DEAD_CHUNK)
                    finished = True
                    break
                parts.append(self._render(index))
                completed += 1
                if index >= last:
                    parts.append(self._ending(completed))
                    finished = True
                    break
            if parts:
                await send({"type": "http.response.body", "body": b"".join(parts), "more_body": True})
            if finished:
                return

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        runner, stream = self.runner, self.stream
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        watcher = asyncio.ensure_future(_watch_disconnect(receive, lambda: runner.abort(stream)))
        try:
            await self._pump(send)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the client is gone; the finally clause aborts the request
        finally:
            watcher.cancel()
            runner.abort(stream)
