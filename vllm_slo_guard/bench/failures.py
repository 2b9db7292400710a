"""Failed requests, summarised and judged: which kind of failure, how many, and what the server said.

A benchmark whose requests fail is not a measurement: percentiles over the requests that happened
to succeed say nothing about a config whose other requests were refused or dropped. The run keeps
every failed request's error text (the server's own message) and HTTP status
(:class:`~vllm_slo_guard.bench.metrics.RequestRecord`); this module groups them by kind and decides
whether they are too many to ignore (:data:`MAX_FAILURE_SHARE`), and whose fault they are:

- ``client_error``: a 4xx answer, or a 4xx error event inside a 200 stream (vLLM 0.32 sends its
  ``VLLMValidationError`` for an out-of-vocabulary token id that way, ``vllm/renderers/base.py``).
  The request itself is refused (a prompt longer than ``max_model_len``, ``vllm/renderers/params.py``):
  the workload does not fit the model, whatever the engine's config;
- ``server_error``: a 5xx answer or error event (vLLM's ``EngineDeadError``), ``connection``: a
  refused or dropped connection, ``no_content``: a stream that ended without a token: the server
  failed under this config;
- ``timeout``: the request outlived the per-request timeout: the server made no progress in time.

Pure functions on records, no I/O: the trial maps a verdict to the crash taxonomy.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

CLIENT_ERROR = "client_error"
SERVER_ERROR = "server_error"
CONNECTION = "connection"
TIMEOUT = "timeout"
NO_CONTENT = "no_content"
OTHER = "other"
KINDS = (CLIENT_ERROR, SERVER_ERROR, CONNECTION, TIMEOUT, NO_CONTENT, OTHER)

#: Above this share of failed requests a run is judged by its failures, not by its figures. One
#: stray failure among a few hundred requests (a dropped connection) is tolerated, as
#: ``vllm bench serve`` tolerates it (it reports percentiles over the successful requests).
MAX_FAILURE_SHARE = 0.01

_DIGITS = re.compile(r"\d+")


class _Record(Protocol):
    success: bool
    error: str
    status: int | None
    kind: str


def failure_kind(record: _Record) -> str:
    """The kind of a failed request: the one the request function recorded, else read from its status."""
    if record.kind:
        return record.kind
    if record.status is not None:
        return CLIENT_ERROR if 400 <= record.status < 500 else SERVER_ERROR
    return OTHER


def _template(error: str) -> str:
    """An error text with its numbers masked: "Token id 3825 …" and "Token id 17 …" are one message."""
    return _DIGITS.sub("N", error)


@dataclass(frozen=True)
class FailureGroup:
    """The failed requests of one kind: how many, their most common status, and their most common message."""

    kind: str
    count: int
    status: int | None
    message: str  # one error text of the most common message (numbers aside), on one line
    same_message: int  # how many of ``count`` carry that message

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "count": self.count,
            "status": self.status,
            "message": self.message,
            "same_message": self.same_message,
        }


def failure_groups(records: Sequence[_Record]) -> list[FailureGroup]:
    """The failed requests grouped by kind, the largest group first (ties in :data:`KINDS` order)."""
    by_kind: dict[str, list[_Record]] = {}
    for record in records:
        if not record.success:
            by_kind.setdefault(failure_kind(record), []).append(record)
    groups = []
    for kind, failed in by_kind.items():
        templates = Counter(_template(r.error) for r in failed)
        template, same = templates.most_common(1)[0]
        example = " ".join(next(r.error for r in failed if _template(r.error) == template).split())
        statuses = Counter(r.status for r in failed if r.status is not None)
        status = statuses.most_common(1)[0][0] if statuses else None
        groups.append(FailureGroup(kind, len(failed), status, example, same))
    order = {kind: i for i, kind in enumerate(KINDS)}
    return sorted(groups, key=lambda g: (-g.count, order.get(g.kind, len(KINDS))))


def failure_summary(records: Sequence[_Record]) -> dict[str, Any]:
    """The JSON-ready summary a result carries: ``failure_rate`` and ``failures`` (one entry per kind)."""
    groups = failure_groups(records)
    failed = sum(g.count for g in groups)
    return {
        "failure_rate": failed / len(records) if records else 0.0,
        "failures": [g.to_json() for g in groups],
    }


def summary_line(result: Any) -> str | None:
    """One line for a person: ``failed requests: 24 of 24 (100.0%); client_error 24 (HTTP 400): …``.

    ``result`` is a metrics dict with ``completed``, ``failed`` and ``failures`` (as :func:`failure_summary`
    and ``compute_metrics`` make it); None when no request failed.
    """
    failed = int(result.get("failed") or 0)
    if not failed:
        return None
    total = failed + int(result.get("completed") or 0)
    parts = []
    for group in result.get("failures") or ():
        status = f" (HTTP {group['status']})" if group.get("status") is not None else ""
        parts.append(f"{group['kind']} {group['count']}{status}: {group['message']}")
    detail = "; ".join(parts) if parts else "no error text"
    return f"failed requests: {failed} of {total} ({100.0 * failed / max(total, 1):.1f}%); {detail}"


@dataclass(frozen=True)
class FailureVerdict:
    """Too many requests failed: the kind that most of them share, and what the server said."""

    kind: str
    failed: int
    total: int
    group: FailureGroup

    @property
    def share(self) -> float:
        return self.failed / self.total

    @property
    def workload_refused(self) -> bool:
        """The server refused the requests themselves (4xx): no engine config changes that."""
        return self.kind == CLIENT_ERROR

    def describe(self) -> str:
        """``24 of 24 requests failed: HTTP 400: <the server's message>`` (one line)."""
        group = self.group
        mixed = f" ({group.count} {group.kind})" if group.count != self.failed else ""
        return f"{self.failed} of {self.total} requests failed{mixed}: {group.message}"


def failure_verdict(records: Sequence[_Record], max_share: float = MAX_FAILURE_SHARE) -> FailureVerdict | None:
    """None when at most ``max_share`` of ``records`` failed; else the verdict of the largest kind."""
    groups = failure_groups(records)
    failed = sum(g.count for g in groups)
    if not records or failed <= max_share * len(records):
        return None
    return FailureVerdict(groups[0].kind, failed, len(records), groups[0])


def verdict_of_metrics(metrics: Any, max_share: float = MAX_FAILURE_SHARE) -> FailureVerdict | None:
    """:func:`failure_verdict` from a result dict's ``completed``, ``failed`` and ``failures`` (no records needed)."""
    failed = int(metrics.get("failed") or 0)
    total = failed + int(metrics.get("completed") or 0)
    groups = metrics.get("failures") or []
    if not total or failed <= max_share * total or not groups:
        return None
    top = groups[0]
    group = FailureGroup(top["kind"], top["count"], top.get("status"), top["message"], top.get("same_message", 0))
    return FailureVerdict(group.kind, failed, total, group)


__all__ = [
    "CLIENT_ERROR",
    "CONNECTION",
    "KINDS",
    "MAX_FAILURE_SHARE",
    "NO_CONTENT",
    "OTHER",
    "SERVER_ERROR",
    "TIMEOUT",
    "FailureGroup",
    "FailureVerdict",
    "failure_groups",
    "failure_kind",
    "failure_summary",
    "failure_verdict",
    "summary_line",
    "verdict_of_metrics",
]
