"""Benchmark figures from per-request records, defined exactly as ``vllm bench serve`` defines them.

TTFT is the first content chunk minus the send time, ITL the gaps between content chunks, E2EL the
last chunk minus the send time, TPOT per request ``(E2EL − TTFT) / (output_tokens − 1)`` for
requests with more than one token. Keys follow vLLM's ``{stat}_{metric}_ms`` naming so results are
comparable with ``vllm bench serve --save-result``; failed requests are summarised beside them
(``failure_rate``, ``failures``: :mod:`.failures`). Pure functions: no printing, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .failures import failure_summary

METRICS = ("ttft", "tpot", "itl", "e2el")
DEFAULT_PERCENTILES = (90.0, 95.0, 99.0)


@dataclass
class RequestRecord:
    """What one request measured; a failed request has ``success=False`` and an error text.

    ``error`` keeps the server's own message (``HTTP 400: <vLLM's message>``), ``status`` the HTTP
    status of the answer or of the stream's error event (None: no answer), ``kind`` the failure's
    kind (:data:`.failures.KINDS`; empty: read from ``status``).
    """

    success: bool
    prompt_len: int = 0
    output_tokens: int = 0
    ttft_s: float = 0.0
    e2el_s: float = 0.0
    itl_s: Sequence[float] = field(default_factory=list)
    error: str = ""
    send_s: float = 0.0
    status: int | None = None
    kind: str = ""

    @property
    def tpot_s(self) -> float | None:
        if self.output_tokens > 1:
            return (self.e2el_s - self.ttft_s) / (self.output_tokens - 1)
        return None


def _pct_key(p: float) -> str:
    return f"p{int(p)}" if float(p).is_integer() else f"p{p}"


def _stats(name: str, values_s: np.ndarray, percentiles: Sequence[float]) -> dict[str, float]:
    ms = values_s * 1000.0 if values_s.size else np.zeros(1)
    out = {
        f"mean_{name}_ms": float(np.mean(ms)),
        f"median_{name}_ms": float(np.median(ms)),
        f"std_{name}_ms": float(np.std(ms)),
    }
    for p in percentiles:
        out[f"{_pct_key(p)}_{name}_ms"] = float(np.percentile(ms, p))
    return out


def is_good(record: RequestRecord, thresholds_s: Mapping[str, float]) -> bool:
    """vLLM's goodput rule: a request is good when every per-request SLO holds (≤).

    Per-request values are TTFT, TPOT (0 for single-token requests) and E2EL; ITL SLOs are judged on
    the aggregate only.
    """
    if not record.success:
        return False
    values = {"ttft": record.ttft_s, "tpot": record.tpot_s or 0.0, "e2el": record.e2el_s}
    return all(values[m] <= t for m, t in thresholds_s.items() if m in values)


def compute_metrics(
    records: Sequence[RequestRecord],
    duration_s: float,
    *,
    itl_s: np.ndarray | None = None,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    goodput_thresholds_s: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """vLLM's benchmark result keys for ``records`` measured over ``duration_s``.

    ``itl_s`` may carry every inter-token gap at once (the in-process simulator collects them
    vectorized); otherwise they are gathered from the records. With ``goodput_thresholds_s``
    (metric → seconds) the result has ``request_goodput``. ``failure_rate`` and ``failures`` summarise
    the failed requests (count, status and most common message per kind).
    """
    ok = [r for r in records if r.success]
    duration_s = max(duration_s, 1e-9)
    total_in = sum(r.prompt_len for r in ok)
    total_out = sum(r.output_tokens for r in ok)
    if itl_s is None:
        gaps = [np.asarray(r.itl_s, dtype=float) for r in ok if len(r.itl_s)]
        itl_s = np.concatenate(gaps) if gaps else np.zeros(0)
    tpots = [t for t in (r.tpot_s for r in ok) if t is not None]
    result: dict[str, Any] = {
        "duration": duration_s,
        "completed": len(ok),
        "failed": len(records) - len(ok),
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "request_throughput": len(ok) / duration_s,
        "output_throughput": total_out / duration_s,
        "total_token_throughput": (total_in + total_out) / duration_s,
    }
    if goodput_thresholds_s is not None:
        good = sum(1 for r in ok if is_good(r, goodput_thresholds_s))
        result["request_goodput"] = good / duration_s
    result.update(failure_summary(records))
    result.update(_stats("ttft", np.array([r.ttft_s for r in ok], dtype=float), percentiles))
    result.update(_stats("tpot", np.array(tpots, dtype=float), percentiles))
    result.update(_stats("itl", np.asarray(itl_s, dtype=float), percentiles))
    result.update(_stats("e2el", np.array([r.e2el_s for r in ok], dtype=float), percentiles))
    return result
