"""The bodies vLLM's OpenAI-compatible server answers with, in vLLM's key order and compact JSON.

Clients (the openai SDK, our load generator) parse these, so each shape copies vLLM 0.32's: errors,
usage, the model list, non-streaming completions and the byte templates of streaming chunks.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .messages import ENGINE_DEAD_MESSAGE


def json_bytes(obj: object) -> bytes:
    """Compact JSON, as vLLM's pydantic responses are."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def error_body(message: str, err_type: str, code: int, param: str | None = None) -> dict[str, Any]:
    """vLLM's error body: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": err_type, "param": param, "code": code}}


# The last chunk of a stream whose engine died: the error object, then the end of the stream.
ENGINE_DEAD_CHUNK = (
    b"data: " + json_bytes(error_body(ENGINE_DEAD_MESSAGE, "InternalServerError", 500)) + b"\n\ndata: [DONE]\n\n"
)


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """OpenAI's usage object in vLLM's key order."""
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
    }


def models_body(names: Sequence[str], root: str, max_model_len: int, created: int) -> dict[str, Any]:
    """``GET /v1/models``: one model card per served name."""
    data = [
        {
            "id": name,
            "object": "model",
            "created": created,
            "owned_by": "vllm",
            "root": root,
            "parent": None,
            "max_model_len": max_model_len,
            "permission": [
                {
                    "id": f"modelperm-{secrets.token_hex(16)}",
                    "object": "model_permission",
                    "created": created,
                    "allow_create_engine": False,
                    "allow_sampling": True,
                    "allow_logprobs": True,
                    "allow_search_indices": False,
                    "allow_view": True,
                    "allow_fine_tuning": False,
                    "organization": "*",
                    "group": None,
                    "is_blocking": False,
                }
            ],
        }
        for name in names
    ]
    return {"object": "list", "data": data}


def completion_body(
    chat: bool, request_id: str, created: int, model: str, text: str, token_usage: dict[str, int], fingerprint: str
) -> dict[str, Any]:
    """A non-streaming ``text_completion`` or ``chat.completion`` (always ``finish_reason="length"``)."""
    choice: dict[str, Any]
    if chat:
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text, "tool_calls": []},
            "logprobs": None,
            "finish_reason": "length",
            "stop_reason": None,
        }
        kind = "chat.completion"
    else:
        choice = {
            "index": 0,
            "text": text,
            "logprobs": None,
            "finish_reason": "length",
            "stop_reason": None,
            "prompt_logprobs": None,
        }
        kind = "text_completion"
    return {
        "id": request_id,
        "object": kind,
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": token_usage,
        "system_fingerprint": fingerprint,
    }


@dataclass(frozen=True)
class ChunkTemplates:
    """Pre-serialized SSE chunk pieces of one streaming request: per token only the text is spliced in."""

    head: bytes  # ``data: {...,"choices":[{"index":0,<text or delta>:"`` up to the token text
    tail: bytes  # the rest of a chunk whose finish_reason is null
    last_tail: bytes  # the rest of the final token's chunk (finish_reason "length")
    preamble: bytes  # chat's first chunk (the assistant role), empty for completions
    usage_prefix: bytes  # ``data: {...,"choices":[],"usage":`` for the include_usage chunk


def chunk_templates(kind: str, request_id: str, created: int, model: str) -> ChunkTemplates:
    """Build the byte templates of a ``completion`` or ``chat`` stream (vLLM's chunk shapes)."""
    name = json_bytes(model).decode()
    if kind == "chat":
        common = f'"id":"{request_id}","object":"chat.completion.chunk","created":{created},"model":{name}'
        head = f'data: {{{common},"choices":[{{"index":0,"delta":{{"content":"'
        tail = '"},"logprobs":null,"finish_reason":null}]}\n\n'
        last = '"},"logprobs":null,"finish_reason":"length","stop_reason":null}]}\n\n'
        preamble = (
            f'data: {{{common},"choices":[{{"index":0,"delta":{{"role":"assistant","content":""}},'
            '"logprobs":null,"finish_reason":null}]}\n\n'
        )
    else:
        common = f'"id":"{request_id}","object":"text_completion","created":{created},"model":{name}'
        head = f'data: {{{common},"choices":[{{"index":0,"text":"'
        tail = '","logprobs":null,"finish_reason":null,"stop_reason":null}]}\n\n'
        last = '","logprobs":null,"finish_reason":"length","stop_reason":null}]}\n\n'
        preamble = ""
    usage_prefix = f'data: {{{common},"choices":[],"usage":'
    return ChunkTemplates(head.encode(), tail.encode(), last.encode(), preamble.encode(), usage_prefix.encode())
