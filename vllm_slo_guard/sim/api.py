"""The HTTP face of the simulated server: vLLM's routes as a Starlette app over one :class:`EngineRunner`.

Each endpoint answers what ``vllm serve`` answers, status codes and error bodies included, so that
clients and tuners cannot tell the two apart (the bodies themselves are built in :mod:`.openai_bodies`,
vLLM's refusals of a request that does not fit the model in :mod:`.request_limits`).
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..bench.sim_tokenizer import VOCAB_SIZE, SimTokenizer
from ..bench.tokenizers import prompt_tokenizer
from .engine import RequestRejected
from .messages import ENGINE_DEAD_MESSAGE, VLLM_VERSION
from .openai_bodies import (
    chunk_templates,
    completion_body,
    error_body,
    json_bytes,
    models_body,
    usage,
)
from .realtime import EngineRunner, RequestStream
from .request_limits import (
    ERROR_LOG_WHERE,
    Refused,
    check_lengths,
    out_of_vocabulary,
    stream_error_event,
    validation_frames,
)
from .request_parsing import (
    BadRequest,
    chat_prompt,
    completion_prompt,
    json_object,
    requested_max_tokens,
    validated_token_ids,
)
from .sse import SseResponse
from .tracebacks import format_traceback

# (path, methods) of every route, in the order vLLM lists its routes at startup
ROUTES = (
    ("/load", "GET"),
    ("/version", "GET"),
    ("/health", "GET"),
    ("/metrics", "GET"),
    ("/tokenize", "POST"),
    ("/detokenize", "POST"),
    ("/v1/models", "GET"),
    ("/ping", "GET"),
    ("/ping", "POST"),
    ("/v1/chat/completions", "POST"),
    ("/v1/completions", "POST"),
)


def error_response(message: str, err_type: str, code: int, param: str | None = None) -> JSONResponse:
    """vLLM's error body with its status code."""
    return JSONResponse(error_body(message, err_type, code, param), code)


def _engine_dead_response() -> JSONResponse:
    """The HTTP 500 every request gets once the engine is dead (vLLM's exact body)."""
    return error_response(ENGINE_DEAD_MESSAGE, "InternalServerError", 500)


class Api:
    """The HTTP endpoints of one simulated server."""

    def __init__(self, runner: EngineRunner, served_names: Sequence[str], model_root: str, api_key: str | None) -> None:
        self.runner = runner
        self.served_names = tuple(served_names)
        self.model_root = model_root
        self.api_key = api_key
        self.fingerprint = f"vllm-{VLLM_VERSION}-{secrets.token_hex(4)}"
        self.tokenizer = SimTokenizer()  # the output tokens' words
        # prompts are counted in the model's own tokens when it has a tokenizer here (as vLLM counts them)
        self.prompt_tokenizer = prompt_tokenizer(model_root, sim_fallback=True)
        # each output token's text: one vocabulary word with a leading space (words need no JSON escaping)
        self.token_text = [" " + self.tokenizer.decode([i]) for i in range(VOCAB_SIZE)]
        self.token_json = [text.encode() for text in self.token_text]
        # vLLM's bounds: the largest valid id (``Renderer.validate_token_ids``) and the longest token's text
        self.vocab_limit = max(self.prompt_tokenizer.max_token_id + 1, runner.engine.arch.vocab_size) - 1
        self.max_chars_per_token = max(len(text) for text in self.token_text) - 1

    # helpers --------------------------------------------------------------------------------------
    def _unauthorized(self, request: Request) -> Response | None:
        """``--api-key`` guards /v1 only, as in vLLM; the answer is vLLM's 401 body."""
        if self.api_key is None or request.headers.get("authorization") == f"Bearer {self.api_key}":
            return None
        return JSONResponse({"error": "Unauthorized"}, status_code=401)

    def _model_error(self, body: Mapping[str, Any]) -> Response | None:
        """A request for another model than the served names gets vLLM's 404."""
        name = body.get("model")
        if name is None or name in self.served_names:
            return None
        return error_response(f"The model `{name}` does not exist.", "NotFoundError", 404, "model")

    # simple endpoints -----------------------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        return Response(status_code=503 if self.runner.dead else 200)

    async def version(self, request: Request) -> Response:
        return JSONResponse({"version": VLLM_VERSION})

    async def load(self, request: Request) -> Response:
        return JSONResponse({"server_load": len(self.runner.streams)})

    async def metrics(self, request: Request) -> Response:
        return Response(self.runner.metrics_text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def models(self, request: Request) -> Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        created = int(time.time())
        return JSONResponse(models_body(self.served_names, self.model_root, self.runner.max_model_len, created))

    async def tokenize(self, request: Request) -> Response:
        try:
            body = json_object(await request.body())
            tok = self.prompt_tokenizer
            ids = chat_prompt(body, tok) if "messages" in body else completion_prompt(body, tok)
        except BadRequest as exc:
            return error_response(str(exc), "BadRequestError", 400)
        return JSONResponse(
            {"count": len(ids), "max_model_len": self.runner.max_model_len, "tokens": ids, "token_strs": None}
        )

    async def detokenize(self, request: Request) -> Response:
        try:
            body = json_object(await request.body())
            tokens = body.get("tokens")
            ids = validated_token_ids(tokens if isinstance(tokens, list) else [])
        except BadRequest as exc:
            return error_response(str(exc), "BadRequestError", 400)
        return JSONResponse({"prompt": self.prompt_tokenizer.decode(ids)})

    # generation -----------------------------------------------------------------------------------
    async def completions(self, request: Request) -> Response:
        return await self._generate(request, chat=False)

    async def chat_completions(self, request: Request) -> Response:
        return await self._generate(request, chat=True)

    def _check_lengths(self, body: Mapping[str, Any], prompt_len: int, max_tokens: int | None, chat: bool) -> None:
        """vLLM's length refusals (:func:`.request_limits.check_lengths`) for one request body."""
        prompt = None if chat else body.get("prompt")
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
            prompt = prompt[0]
        param = "max_completion_tokens" if chat and body.get("max_completion_tokens") is not None else "max_tokens"
        check_lengths(
            prompt_len, max_tokens, self.runner.max_model_len, text=chat or isinstance(prompt, str),
            text_chars=len(prompt) if isinstance(prompt, str) else None,
            max_chars_per_token=self.max_chars_per_token, max_tokens_param=param,
        )  # fmt: skip

    def _out_of_vocabulary(self, message: str, stream: bool) -> Response:
        """vLLM's answer to an id outside the vocabulary: 400, or a 200 stream with one error event."""
        if not stream:
            return error_response(message, "BadRequestError", 400)
        out = self.runner.out
        traceback = format_traceback(validation_frames(), f"vllm.exceptions.VLLMValidationError: {message}", out.paths)
        out.log.error("APIServer", ERROR_LOG_WHERE, "Error in completion stream generator.\n" + traceback)
        return Response(stream_error_event(message), media_type="text/event-stream; charset=utf-8")

    async def _generate(self, request: Request, chat: bool) -> Response:
        """Shared by completions and chat: validate like vLLM, submit, then stream or wait."""
        if (denied := self._unauthorized(request)) is not None:
            return denied
        runner = self.runner
        try:
            body = json_object(await request.body())
            if (missing := self._model_error(body)) is not None:
                return missing
            tok = self.prompt_tokenizer
            ids = chat_prompt(body, tok) if chat else completion_prompt(body, tok)
            if not ids:
                raise BadRequest("The decoder prompt cannot be empty")
            if body.get("n", 1) not in (1, None):
                raise BadRequest("the simulated engine supports only n=1")
            max_tokens = requested_max_tokens(body, chat)
            self._check_lengths(body, len(ids), max_tokens, chat)
            if max_tokens is None:
                max_tokens = max(runner.max_model_len - len(ids), 1)
            runner.check(len(ids), max_tokens)
        except Refused as exc:
            return error_response(str(exc), "BadRequestError", 400, exc.parameter)
        except (BadRequest, RequestRejected) as exc:
            return error_response(str(exc), "BadRequestError", 400)
        if runner.dead:
            return _engine_dead_response()
        if (unknown := out_of_vocabulary(ids, self.vocab_limit)) is not None:
            return self._out_of_vocabulary(unknown, bool(body.get("stream")))
        stream = runner.submit(ids, len(ids), max_tokens)
        model = str(body.get("model") or runner.model_name)
        request_id = f"{'chatcmpl' if chat else 'cmpl'}-{secrets.token_hex(16)}"
        created = int(time.time())
        if body.get("stream"):
            options = body.get("stream_options")
            include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
            templates = chunk_templates("chat" if chat else "completion", request_id, created, model)
            return SseResponse(runner, stream, self.token_json, templates, include_usage)
        return await self._complete(stream, chat, request_id, created, model)

    async def _complete(self, stream: RequestStream, chat: bool, request_id: str, created: int, model: str) -> Response:
        """A non-streaming answer: wait for every token, then one JSON body."""
        runner, req = self.runner, stream.req
        texts: list[str] = []
        try:
            while len(texts) < req.max_tokens:
                index = await stream.queue.get()
                if index < 0:
                    return _engine_dead_response()
                texts.append(self.token_text[stream.token_id(index)])
        finally:
            runner.abort(stream)
        token_usage = usage(req.prompt_len, len(texts))
        body = completion_body(chat, request_id, created, model, "".join(texts), token_usage, self.fingerprint)
        return Response(json_bytes(body), media_type="application/json")

    def routes(self) -> list[Route]:
        """Starlette routes for ``ROUTES`` (the same list is logged at startup)."""
        handlers: dict[str, Callable[[Request], Any]] = {
            "/load": self.load,
            "/version": self.version,
            "/health": self.health,
            "/metrics": self.metrics,
            "/tokenize": self.tokenize,
            "/detokenize": self.detokenize,
            "/v1/models": self.models,
            "/ping": self.health,
            "/v1/chat/completions": self.chat_completions,
            "/v1/completions": self.completions,
        }
        methods: dict[str, list[str]] = {}
        for path, method in ROUTES:
            methods.setdefault(path, []).append(method)
        return [Route(path, handlers[path], methods=m) for path, m in methods.items()]


def build_app(runner: EngineRunner, served_names: Sequence[str], model_root: str, api_key: str | None) -> Starlette:
    """The Starlette app; its lifespan runs the engine loop inside uvicorn's event loop."""
    api = Api(runner, served_names, model_root, api_key)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        runner.start()
        try:
            yield
        finally:
            await runner.stop()

    return Starlette(routes=api.routes(), lifespan=lifespan)
