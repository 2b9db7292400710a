"""Requests a running server refused, read from its log: the ``request_error`` side of ``explain``.

A server that refuses the workload's requests has not crashed, so ``classify`` finds no failure in
its log; but its log still shows the refusals, and ``vllm-tune explain`` should say so in the same
category the trial got (``request_error``). vLLM 0.32 leaves two traces: uvicorn's access line of
every answer (``"POST /v1/completions HTTP/1.1" 400 Bad Request``; the 400's message goes only to the
client), and, for a ``VLLMValidationError`` raised after a stream started (an out-of-vocabulary
token id, ``vllm/renderers/base.py``), the traceback that ``vllm/entrypoints/openai/completion/serving.py``
logs, ending in ``vllm.exceptions.VLLMValidationError: <message>``.
"""

from __future__ import annotations

import re
from collections import Counter

from .logtext import strip_log_prefix
from .report import CrashReport

_GENERATION = re.compile(r'^INFO: +\S+ - "POST /v1/(?:chat/)?completions\S* HTTP/[\d.]+" (?P<status>\d{3})\b')
_VALIDATION = re.compile(r"(?:^|\.)VLLMValidationError: (?P<msg>.+)$")
_DIGITS = re.compile(r"\d+")


def refused_requests(text: str, *, max_share: float) -> CrashReport | None:
    """A ``request_error`` report when more than ``max_share`` of the log's generation requests were refused."""
    answered = refused = 0
    messages: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for raw in text.splitlines():
        line = strip_log_prefix(raw).strip()
        if access := _GENERATION.match(line):
            answered += 1
            refused += 400 <= int(access["status"]) < 500
        elif validation := _VALIDATION.search(line):
            refused += 1  # a 200 stream whose error event carried a 4xx
            message = validation["msg"].strip()
            template = _DIGITS.sub("N", message)
            messages[template] += 1
            examples.setdefault(template, message)
    if not answered or refused <= max_share * answered:
        return None
    cause = f"{refused} of {answered} generation requests were refused"
    if messages:
        template, count = messages.most_common(1)[0]
        cause += f" ({count} with VLLMValidationError: {examples[template]})"
    else:
        cause += " with a 4xx (the log has no message: vLLM sends it to the client; `vllm-tune bench` prints it)"
    return CrashReport.requests_refused(cause)


__all__ = ["refused_requests"]
