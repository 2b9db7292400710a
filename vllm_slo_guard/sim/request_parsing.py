"""What an OpenAI request body asks for: its prompt as token ids and its ``max_tokens``.

Validation answers exactly where vLLM answers HTTP 400, so a load generator meets the same errors
on the simulated server as on ``vllm serve``. Text is counted with the served model's tokenizer when
it has one on this machine (a text prompt with its special tokens, chat messages through its chat
template, as vLLM does), else with the simulator's vocabulary (``bench.tokenizers.prompt_tokenizer``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..bench.tokenizers import PromptTokenizer
from ..errors import InputError


class BadRequest(Exception):
    """A request vLLM would answer with HTTP 400 (the message is vLLM's where vLLM has one)."""


def json_object(raw: bytes) -> dict[str, Any]:
    """The JSON object of a request body, or BadRequest (HTTP 400)."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


def _text_of_content(content: Any) -> str:
    """A chat message's text: a string, or the text parts of a content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    if content is None:
        return ""
    raise BadRequest("message content must be a string or a list of content parts")


def validated_token_ids(value: list[Any]) -> list[int]:
    """Validated token ids (vLLM answers 400 for anything else)."""
    if not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value):
        raise BadRequest("prompt token ids must be non-negative integers")
    return value


def _add_special_tokens(body: Mapping[str, Any], default: bool) -> bool:
    value = body.get("add_special_tokens")
    return default if value is None else bool(value)


def completion_prompt(body: Mapping[str, Any], tokenizer: PromptTokenizer) -> list[int]:
    """The prompt's token ids: a string, token ids, or a list of either (only the first is served).

    A string is encoded with the tokenizer's special tokens unless ``add_special_tokens`` is false
    (vLLM's ``CompletionRequest`` default is true)."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and not isinstance(prompt[0], (int, bool)):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return tokenizer.encode(prompt, add_special_tokens=_add_special_tokens(body, True))
    if isinstance(prompt, list):
        return validated_token_ids(prompt)
    raise BadRequest("prompt must be a string, a list of token ids, or a list of strings or token-id lists")


def chat_prompt(body: Mapping[str, Any], tokenizer: PromptTokenizer) -> list[int]:
    """Chat messages as one prompt: the model's chat template with the generation prompt, encoded
    without special tokens unless ``add_special_tokens`` (vLLM's ``ChatCompletionRequest`` default is
    false); the simulator's vocabulary has no template and joins the contents with spaces."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list")
    turns = [
        {"role": str(m.get("role") or "user"), "content": _text_of_content(m.get("content"))}
        for m in messages
        if isinstance(m, dict)
    ]
    try:
        text = tokenizer.chat_text(turns)
    except InputError as exc:  # no chat template, or the template refused the messages: vLLM's 400
        raise BadRequest(str(exc)) from None
    return tokenizer.encode(text, add_special_tokens=_add_special_tokens(body, False))


def requested_max_tokens(body: Mapping[str, Any], chat: bool) -> int | None:
    """``max_tokens`` (chat: ``max_completion_tokens`` first), None when absent; 400 when invalid."""
    value = body.get("max_completion_tokens") if chat else None
    if value is None:
        value = body.get("max_tokens")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise BadRequest(f"max_tokens must be at least 1, got {value}.")
    return value
