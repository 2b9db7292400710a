"""vLLM's ``/metrics``: the per-request statistics the API server records and their Prometheus text.

Tuners scrape these series instead of parsing logs, so names, labels, histogram buckets and even the
float formatting follow vLLM 0.32 and prometheus_client's exposition.
"""

from __future__ import annotations

import bisect
import math
import resource
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..vllm_rules.config import EngineConfig
from ..vllm_rules.memory import MemoryPlan

# vLLM 0.32's histogram buckets (v1/metrics/buckets.py; seen in metrics_sample_after_1_request.txt)
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
    160.0, 640.0, 2560.0,
)  # fmt: skip
ITL_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
E2E_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0,
    1920.0, 7680.0,
)  # fmt: skip
ITERATION_TOKEN_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
FINISHED_REASONS = ("stop", "length", "abort", "error", "repetition")


def _prom_float(value: float) -> str:
    """Prometheus' Go-style float text (``1.0``, ``+Inf``, ``1.796e+09``), as prometheus_client writes it."""
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(float(value))
    dot = text.find(".")
    if value > 0 and dot > 6 and "e" not in text:
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0").rstrip(".")
        return f"{mantissa}e+0{dot - 1}"
    return text


def _escape_label(value: str) -> str:
    """Prometheus label-value escaping (backslash, newline, quote)."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, str]) -> str:
    """``{a="1",b="2"}`` with names sorted, as prometheus_client orders them."""
    return "{" + ",".join(f'{k}="{_escape_label(v)}"' for k, v in sorted(labels.items())) + "}"


def bucket_1_2_5(max_value: int) -> tuple[int, ...]:
    """vLLM's token-count buckets: 1, 2, 5, 10, 20, 50, ... up to ``max_value``."""
    out: list[int] = []
    exponent = 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if value > max_value:
                return tuple(out)
            out.append(value)
        exponent += 1


@dataclass
class Histogram:
    """A Prometheus histogram: per-bucket counts (non-cumulative inside, cumulative when rendered)."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.n += 1


@dataclass
class ServerStats:
    """What the API server's stat logger records per request (vLLM's ``vllm:*`` series)."""

    max_model_len: int
    started_at: float = field(default_factory=time.time)
    prompt_tokens: int = 0  # counted at each request's first token, as vLLM does
    cached_prompt_tokens: int = 0
    finished: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FINISHED_REASONS, 0))
    ttft: Histogram = field(default_factory=lambda: Histogram(TTFT_BUCKETS))
    itl: Histogram = field(default_factory=lambda: Histogram(ITL_BUCKETS))
    tpot: Histogram = field(default_factory=lambda: Histogram(ITL_BUCKETS))
    e2e: Histogram = field(default_factory=lambda: Histogram(E2E_BUCKETS))
    iteration_tokens: Histogram = field(default_factory=lambda: Histogram(ITERATION_TOKEN_BUCKETS))
    prompt_len: Histogram = field(init=False)
    generation_len: Histogram = field(init=False)
    max_tokens: Histogram = field(init=False)

    def __post_init__(self) -> None:
        buckets = tuple(float(b) for b in bucket_1_2_5(self.max_model_len))
        self.prompt_len = Histogram(buckets)
        self.generation_len = Histogram(buckets)
        self.max_tokens = Histogram(buckets)


@dataclass(frozen=True)
class MetricsView:
    """A snapshot of the engine-side figures /metrics shows next to :class:`ServerStats`."""

    running: int
    waiting: int
    kv_usage: float
    preemptions: int
    prefix_queries: int
    prefix_hits: int
    generation_tokens: int


class _Exposition:
    """Builds Prometheus text in prometheus_client's layout (HELP, TYPE, ``_total`` and ``_created``)."""

    def __init__(self, base: Mapping[str, str], created: float) -> None:
        self.base = dict(base)
        self.created = _prom_float(created)
        self.lines: list[str] = []

    def _family(self, name: str, kind: str, help_text: str) -> None:
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]

    def gauge(self, name: str, help_text: str, value: float) -> None:
        self._family(name, "gauge", help_text)
        self.lines.append(f"{name}{_labels(self.base)} {_prom_float(value)}")

    def counter(self, name: str, help_text: str, values: Mapping[str, float], label: str = "") -> None:
        """``values`` maps a value of ``label`` to its count ("" when the counter has no extra label)."""
        for suffix, kind in (("_total", "counter"), ("_created", "gauge")):
            self._family(f"{name}{suffix}", kind, help_text)
            for key, value in values.items():
                labels = {**self.base, label: key} if label else self.base
                shown = _prom_float(value) if suffix == "_total" else self.created
                self.lines.append(f"{name}{suffix}{_labels(labels)} {shown}")

    def info(self, name: str, help_text: str, labels: Mapping[str, str]) -> None:
        """An info-style gauge: the facts are its labels (without the base labels), the value is 1."""
        self._family(name, "gauge", help_text)
        self.lines.append(f"{name}{_labels(labels)} 1.0")

    def histogram(self, name: str, help_text: str, hist: Histogram) -> None:
        self._family(name, "histogram", help_text)
        running = 0
        for bound, count in zip((*hist.bounds, math.inf), hist.counts, strict=True):
            running += count
            self.lines.append(f"{name}_bucket{_labels({**self.base, 'le': _prom_float(bound)})} {_prom_float(running)}")
        self.lines.append(f"{name}_count{_labels(self.base)} {_prom_float(hist.n)}")
        self.lines.append(f"{name}_sum{_labels(self.base)} {_prom_float(hist.total)}")
        self._family(f"{name}_created", "gauge", help_text)
        self.lines.append(f"{name}_created{_labels(self.base)} {self.created}")


def _process_lines(started_at: float) -> list[str]:
    """The ``process_*`` series, present with or without ``--disable-log-stats``."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return [
        "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.",
        "# TYPE process_start_time_seconds gauge",
        f"process_start_time_seconds {_prom_float(round(started_at, 2))}",
        "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.",
        "# TYPE process_cpu_seconds_total counter",
        f"process_cpu_seconds_total {_prom_float(usage.ru_utime + usage.ru_stime)}",
    ]


def render_metrics(
    stats: ServerStats, view: MetricsView, model_name: str, cache_info: Mapping[str, str], log_stats: bool
) -> str:
    """The /metrics text; with ``--disable-log-stats`` vLLM has no ``vllm:`` series at all."""
    lines = _process_lines(stats.started_at)
    if not log_stats:
        return "\n".join(lines) + "\n"
    by_source = {
        "local_compute": stats.prompt_tokens - stats.cached_prompt_tokens,
        "local_cache_hit": stats.cached_prompt_tokens,
        "external_kv_transfer": 0,
    }
    gauges = (
        ("vllm:num_requests_running", "Number of requests in model execution batches.", view.running),
        ("vllm:num_requests_waiting", "Number of requests waiting to be processed.", view.waiting),
        ("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", view.kv_usage),
    )
    counters: tuple[tuple[str, str, Mapping[str, float], str], ...] = (
        (
            "vllm:prefix_cache_queries",
            "Prefix cache queries, in terms of number of queried tokens.",
            {"": view.prefix_queries},
            "",
        ),
        (
            "vllm:prefix_cache_hits",
            "Prefix cache hits, in terms of number of cached tokens.",
            {"": view.prefix_hits},
            "",
        ),
        ("vllm:num_preemptions", "Cumulative number of preemption from the engine.", {"": view.preemptions}, ""),
        ("vllm:prompt_tokens", "Number of prefill tokens processed.", {"": stats.prompt_tokens}, ""),
        ("vllm:prompt_tokens_by_source", "Number of prompt tokens by source.", by_source, "source"),
        (
            "vllm:prompt_tokens_cached",
            "Number of cached prompt tokens (local + external).",
            {"": stats.cached_prompt_tokens},
            "",
        ),
        ("vllm:generation_tokens", "Number of generation tokens processed.", {"": view.generation_tokens}, ""),
        ("vllm:request_success", "Count of successfully processed requests.", stats.finished, "finished_reason"),
    )
    histograms = (
        ("vllm:request_prompt_tokens", "Number of prefill tokens processed.", stats.prompt_len),
        ("vllm:request_generation_tokens", "Number of generation tokens processed.", stats.generation_len),
        ("vllm:iteration_tokens_total", "Histogram of number of tokens per engine_step.", stats.iteration_tokens),
        ("vllm:request_params_max_tokens", "Histogram of the max_tokens request parameter.", stats.max_tokens),
        ("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", stats.ttft),
        ("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", stats.itl),
        (
            "vllm:request_time_per_output_token_seconds",
            "Histogram of time_per_output_token_seconds per request.",
            stats.tpot,
        ),
        ("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", stats.e2e),
    )
    out = _Exposition({"engine": "0", "model_name": model_name}, stats.started_at)
    for name, help_text, value in gauges:
        out.gauge(name, help_text, value)
    for name, help_text, values, label in counters:
        out.counter(name, help_text, values, label)
    for name, help_text, hist in histograms:
        out.histogram(name, help_text, hist)
    out.info("vllm:cache_config_info", "Information of the LLMEngine CacheConfig", {**cache_info, "engine": "0"})
    return "\n".join(lines + out.lines) + "\n"


def cache_config_labels(cfg: EngineConfig, plan: MemoryPlan) -> dict[str, str]:
    """The labels of ``vllm:cache_config_info`` (the memory facts a tuner reads instead of the log)."""
    return {
        "block_size": str(cfg.block_size),
        "cache_dtype": cfg.kv_cache_dtype,
        "enable_prefix_caching": str(cfg.enable_prefix_caching),
        "gpu_memory_utilization": str(cfg.gpu_memory_utilization),
        "is_attention_free": "False",
        "kv_cache_max_concurrency": str(float(plan.max_concurrency)),
        "kv_cache_memory_bytes": str(cfg.kv_cache_memory_bytes),
        "kv_cache_size_tokens": str(plan.kv_tokens),
        "num_cpu_blocks": "None",
        "num_gpu_blocks": str(plan.num_blocks),
        "num_gpu_blocks_override": str(cfg.num_gpu_blocks_override),
        "sliding_window": "None",
        "user_specified_block_size": "False",
    }
