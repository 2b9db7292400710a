"""vLLM 0.32's refusals of a request that does not fit the model, in its words, status and body.

A tuner must tell a workload the model refuses (no configuration fixes it) from a configuration that
fails; it can only learn to on the simulated server if that server refuses what ``vllm serve``
refuses, the way it does (seen on the real vLLM CPU build, checked in ``tests/test_request_failures.py``):

- ``max_tokens`` above ``max_model_len``: HTTP 400 (``TokenizeParams.__post_init__``, ``vllm/renderers/params.py``);
- a prompt longer than ``max_model_len``: HTTP 400, ``param`` ``input_tokens``
  (``TokenizeParams._token_len_check``); a text prompt is tokenized truncated to ``max_model_len + 1``,
  so its message says "at least" that many, and a completion text longer than ``max_model_len`` times
  the tokenizer's longest token is refused by its characters before it is tokenized
  (``TokenizeParams._text_len_check``, ``param`` ``input_text``; chat text is counted in tokens here:
  the simulator renders no chat template whose characters vLLM would count);
- a prompt of exactly ``max_model_len``: no room for one output token, ``max_tokens`` becomes 0
  (``get_max_tokens``, ``vllm/entrypoints/serve/utils/api_utils.py``) and ``SamplingParams`` refuses it;
- a token id outside the vocabulary (``Renderer.validate_token_ids``, ``vllm/renderers/base.py``): raised
  inside the engine's ``add_request``, so a non-streaming request gets HTTP 400 and a streaming one
  HTTP 200 with one error event (``json.dumps``, ``create_streaming_error_response`` in
  ``vllm/entrypoints/generate/base/serving.py``) and ``data: [DONE]``, and the server logs the traceback.

Messages carry ``VLLMValidationError.__str__``'s ``(parameter=…, value=…)`` tail (``vllm/exceptions.py``),
which ``create_error_response`` (``vllm/entrypoints/serve/exception_handling/error_response.py``) copies.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from .tracebacks import Frame

ERROR_LOG_WHERE = "serving.py:500"  # ``logger.exception`` in vllm/entrypoints/openai/completion/serving.py


class Refused(Exception):
    """A ``VLLMValidationError``: the message as vLLM formats it, and its ``param``."""

    def __init__(self, message: str, *, parameter: str | None = None, value: object = None) -> None:
        extras = [f"{k}={v}" for k, v in (("parameter", parameter), ("value", value)) if v is not None]
        super().__init__(f"{message} ({', '.join(extras)})" if extras else message)
        self.parameter = parameter


def check_lengths(
    prompt_len: int,
    max_tokens: int | None,
    max_model_len: int,
    *,
    text: bool,
    text_chars: int | None = None,
    max_chars_per_token: int = 0,
    max_tokens_param: str = "max_tokens",
) -> None:
    """Raise :class:`Refused` where vLLM refuses a request's lengths (in vLLM's order); else nothing.

    ``text``: the prompt was text (completions' string, chat's messages), tokenized with truncation;
    ``text_chars``: a completion text's length in characters, checked against ``max_chars_per_token``.
    """
    if max_tokens is not None and max_tokens > max_model_len:
        raise Refused(
            f"{max_tokens_param}={max_tokens} cannot be greater than max_model_len={max_model_len}. "
            "Please request fewer output tokens.",
            parameter=max_tokens_param,
            value=max_tokens,
        )
    max_chars = max_model_len * max_chars_per_token
    if text_chars is not None and max_chars and text_chars > max_chars:
        raise Refused(
            f"This model's maximum context length is {max_model_len} tokens. However, your prompt contains "
            f"{text_chars} characters (more than {max_chars} characters, which is the upper bound for "
            f"{max_model_len} input tokens). Please reduce the length of the input prompt.",
            parameter="input_text",
            value=text_chars,
        )
    if prompt_len > max_model_len:
        count = max_model_len + 1 if text else prompt_len
        qualifier = "at least " if count == max_model_len + 1 else ""
        raise Refused(
            f"This model's maximum context length is {max_model_len} tokens. However, your prompt contains "
            f"{qualifier}{count} input tokens, which exceeds this limit even without any output tokens. "
            "Please reduce the length of the input prompt.",
            parameter="input_tokens",
            value=count,
        )
    if prompt_len == max_model_len:
        raise Refused("max_tokens must be at least 1, got 0.", parameter="max_tokens", value=0)


def out_of_vocabulary(ids: Sequence[int], vocab_limit: int) -> str | None:
    """vLLM's message for the largest id above ``vocab_limit`` (the largest valid id), else None."""
    largest = max(ids, default=0)
    return f"Token id {largest} is out of vocabulary" if largest > vocab_limit else None


def stream_error_event(message: str, err_type: str = "BadRequestError", code: int = 400) -> bytes:
    """The SSE body of a stream that failed before its first token: one error event, then ``[DONE]``."""
    event = {"error": {"message": message, "type": err_type, "param": None, "code": code}}
    return f"data: {json.dumps(event)}\n\ndata: [DONE]\n\n".encode()


def validation_frames() -> list[Frame]:
    """The stack of an out-of-vocabulary id, from the completion stream generator down to the check."""
    return [
        Frame(
            "site",
            "vllm/entrypoints/openai/completion/serving.py",
            306,
            "completion_stream_generator",
            "async for prompt_idx, res in result_generator:",
        ),
        Frame("site", "vllm/utils/async_utils.py", 104, "merge_async_iterators", "async for item in iterator:"),
        Frame("site", "vllm/v1/engine/async_llm.py", 745, "generate", "q = await self.add_request(", True),
        Frame(
            "site",
            "vllm/v1/engine/async_llm.py",
            474,
            "add_request",
            "request = self.input_processor.process_inputs(",
            True,
        ),
        Frame(
            "site",
            "vllm/v1/engine/input_processor.py",
            433,
            "process_inputs",
            "self._validate_model_inputs(encoder_input, decoder_input)",
        ),
        Frame(
            "site",
            "vllm/v1/engine/input_processor.py",
            657,
            "_validate_model_inputs",
            'self._validate_model_input(decoder_input, prompt_type="decoder")',
        ),
        Frame(
            "site",
            "vllm/v1/engine/input_processor.py",
            647,
            "_validate_model_input",
            "self.renderer.validate_token_ids(prompt_ids)",
        ),
        Frame("site", "vllm/renderers/base.py", 453, "validate_token_ids", "raise VLLMValidationError("),
    ]


__all__ = [
    "ERROR_LOG_WHERE",
    "Refused",
    "check_lengths",
    "out_of_vocabulary",
    "stream_error_event",
    "validation_frames",
]
