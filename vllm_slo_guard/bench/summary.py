"""The human-readable result block of ``vllm bench serve``, for our figures.

Same section titles and ``"{:<40} {:<10.2f}"`` lines as vLLM prints, so an operator reads our
simulated or measured results exactly like the benchmark they know; failed requests are broken
down by kind under ``Failed requests:`` (their messages are in ``failures.summary_line``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

_SECTIONS = (
    ("ttft", "TTFT", "Time to First Token"),
    ("tpot", "TPOT", "Time per Output Token (excl. 1st token)"),
    ("itl", "ITL", "Inter-token Latency"),
    ("e2el", "E2EL", "End-to-end Latency"),
)


def _line(label: str, value: Any) -> str:
    if isinstance(value, float):
        return f"{label:<40} {value:<10.2f}"
    return f"{label:<40} {value!s:<10}"


def format_bench_result(
    result: Mapping[str, Any], *, request_rate: float = math.inf, max_concurrency: int | None = None
) -> str:
    """The ``Serving Benchmark Result`` block for a result dict of ``compute_metrics`` keys."""
    lines = ["{s:{c}^{n}}".format(s=" Serving Benchmark Result ", n=50, c="=")]
    lines.append(_line("Successful requests:", result["completed"]))
    lines.append(_line("Failed requests:", result["failed"]))
    groups = (result.get("failures") or []) if result["failed"] else []
    for group in groups:
        status = f", HTTP {group['status']}" if group.get("status") is not None else ""
        lines.append(_line(f"  {group['kind']}{status}:", group["count"]))
    if max_concurrency is not None:
        lines.append(_line("Maximum request concurrency:", max_concurrency))
    if math.isfinite(request_rate):
        lines.append(_line("Request rate configured (RPS):", float(request_rate)))
    lines.append(_line("Benchmark duration (s):", float(result["duration"])))
    lines.append(_line("Total input tokens:", result["total_input_tokens"]))
    lines.append(_line("Total generated tokens:", result["total_output_tokens"]))
    lines.append(_line("Request throughput (req/s):", float(result["request_throughput"])))
    if "request_goodput" in result:
        lines.append(_line("Request goodput (req/s):", float(result["request_goodput"])))
    lines.append(_line("Output token throughput (tok/s):", float(result["output_throughput"])))
    lines.append(_line("Total token throughput (tok/s):", float(result["total_token_throughput"])))
    percentiles = sorted({key.split("_")[0] for key in result if key.startswith("p") and key.endswith("_ttft_ms")})
    for key, short, title in _SECTIONS:
        if f"mean_{key}_ms" not in result:
            continue
        lines.append("{s:{c}^{n}}".format(s=title, n=50, c="-"))
        lines.append(_line(f"Mean {short} (ms):", float(result[f"mean_{key}_ms"])))
        lines.append(_line(f"Median {short} (ms):", float(result[f"median_{key}_ms"])))
        for pct in percentiles:
            lines.append(_line(f"{pct.upper()} {short} (ms):", float(result[f"{pct}_{key}_ms"])))
    lines.append("=" * 50)
    return "\n".join(lines)
