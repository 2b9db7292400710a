"""Read a vLLM server's ``/metrics`` (Prometheus text exposition) into samples and a few server facts.

The client-side load generator measures latency; the server's own counters say *why* a config is
slow or near a crash: KV-cache pressure, preemptions, queueing, the KV capacity it actually got
(``vllm:cache_config_info``) and the prefix-cache hit rate. The parser is small and forgiving: a
line it cannot read is skipped, because a scrape during a run must never end the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import httpx

logger = logging.getLogger(__name__)

KV_USAGE = "vllm:kv_cache_usage_perc"
_KV_USAGE_V0 = "vllm:gpu_cache_usage_perc"  # the V0 engine's name for the same gauge
PREEMPTIONS = "vllm:num_preemptions_total"
RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
CACHE_CONFIG = "vllm:cache_config_info"
PROMPT_TOKENS = "vllm:prompt_tokens_total"
GENERATION_TOKENS = "vllm:generation_tokens_total"
PREFIX_QUERIES = "vllm:prefix_cache_queries_total"
PREFIX_HITS = "vllm:prefix_cache_hits_total"

_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
# One label pair: name = "value" (value may hold \\, \" and \n escapes), then a comma or the closing brace.
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|(?=\}))')
_UNESCAPE_RE = re.compile(r"\\(.)")
_UNESCAPES = {"n": "\n", "\\": "\\", '"': '"'}


@dataclass(frozen=True)
class Sample:
    """One exposition line: the sample name (``_total``/``_bucket`` suffix included), labels, value."""

    name: str
    labels: dict[str, str]
    value: float


def _unescape(value: str) -> str:
    if "\\" not in value:
        return value
    return _UNESCAPE_RE.sub(lambda m: _UNESCAPES.get(m.group(1), "\\" + m.group(1)), value)


def _parse_value(text: str) -> float:
    """Prometheus floats: Python's ``float`` already reads ``+Inf``, ``-Inf`` and ``NaN``."""
    return float(text)


def parse_line(line: str) -> Sample | None:
    """One sample line, or None for blanks, comments (``# HELP``/``# TYPE``) and malformed lines."""
    line = line.strip()
    if not line or line[0] == "#":
        return None
    match = _NAME_RE.match(line)
    if match is None:
        return None
    name, pos = match.group(0), match.end()
    labels: dict[str, str] = {}
    if pos < len(line) and line[pos] == "{":
        pos += 1
        while True:
            while pos < len(line) and line[pos] in " \t":
                pos += 1
            if pos < len(line) and line[pos] == "}":
                pos += 1
                break
            pair = _LABEL_RE.match(line, pos)
            if pair is None:
                return None
            labels[pair.group(1)] = _unescape(pair.group(2))
            pos = pair.end()
    rest = line[pos:].split()
    if not rest or len(rest) > 2 or (pos < len(line) and line[pos] not in " \t"):
        return None
    try:
        return Sample(name, labels, _parse_value(rest[0]))
    except ValueError:
        return None


def parse_metrics(text: str, names: Collection[str] | None = None) -> dict[str, list[Sample]]:
    """Samples grouped by sample name, in exposition order.

    ``names`` keeps only those sample names, and skips other lines before parsing them (cheap enough
    to poll a large ``/metrics`` page during a run).
    """
    wanted = tuple(names) if names is not None else None
    out: dict[str, list[Sample]] = {}
    for line in text.splitlines():
        if wanted is not None and not line.startswith(wanted):
            continue
        sample = parse_line(line)
        if sample is None:
            if line.strip() and not line.lstrip().startswith("#"):
                logger.debug("skipping unparsable metrics line: %r", line[:200])
            continue
        if wanted is not None and sample.name not in wanted:
            continue
        out.setdefault(sample.name, []).append(sample)
    return out


def scrape(base_url: str, timeout_s: float = 5.0) -> str | None:
    """The text of ``GET {base_url}/metrics``, or None when the server does not answer 200."""
    try:
        response = httpx.get(f"{base_url.rstrip('/')}/metrics", timeout=timeout_s)
    except httpx.HTTPError as exc:
        logger.debug("scrape of %s failed: %s", base_url, exc)
        return None
    return response.text if response.status_code == 200 else None


def _total(samples: Mapping[str, Sequence[Sample]], name: str) -> float | None:
    """Sum over engines (data parallel exposes one series per ``engine`` label); None when absent."""
    series = samples.get(name)
    return sum(s.value for s in series) if series else None


def _as_int(value: float | None) -> int | None:
    return None if value is None or math.isnan(value) else int(value)


def _label_int(labels: Mapping[str, str], key: str) -> int | None:
    try:
        return int(float(labels[key]))
    except (KeyError, ValueError):
        return None


@dataclass(frozen=True)
class ServerStats:
    """The server facts the tuner reads from one scrape; None where the server does not expose one.

    Counters and queue gauges are summed over engines; KV usage is the fullest engine's (0–1).
    ``kv_cache_tokens`` is ``kv_cache_size_tokens`` when given (newer vLLM), else
    ``num_gpu_blocks × block_size``.
    """

    kv_cache_usage: float | None = None
    num_preemptions: int | None = None
    running: int | None = None
    waiting: int | None = None
    kv_cache_tokens: int | None = None
    num_gpu_blocks: int | None = None
    block_size: int | None = None
    prompt_tokens: int | None = None
    generation_tokens: int | None = None
    prefix_cache_hit_rate: float | None = None

    @classmethod
    def from_text(cls, text: str) -> ServerStats:
        return cls.from_samples(parse_metrics(text))

    @classmethod
    def from_samples(cls, samples: Mapping[str, Sequence[Sample]]) -> ServerStats:
        kv_series = samples.get(KV_USAGE) or samples.get(_KV_USAGE_V0)
        info = samples.get(CACHE_CONFIG)
        labels = info[0].labels if info else {}
        blocks, block_size = _label_int(labels, "num_gpu_blocks"), _label_int(labels, "block_size")
        tokens = _label_int(labels, "kv_cache_size_tokens")
        if tokens is None and blocks is not None and block_size is not None:
            tokens = blocks * block_size
        queries, hits = _total(samples, PREFIX_QUERIES), _total(samples, PREFIX_HITS)
        return cls(
            kv_cache_usage=max(s.value for s in kv_series) if kv_series else None,
            num_preemptions=_as_int(_total(samples, PREEMPTIONS)),
            running=_as_int(_total(samples, RUNNING)),
            waiting=_as_int(_total(samples, WAITING)),
            kv_cache_tokens=tokens,
            num_gpu_blocks=blocks,
            block_size=block_size,
            prompt_tokens=_as_int(_total(samples, PROMPT_TOKENS)),
            generation_tokens=_as_int(_total(samples, GENERATION_TOKENS)),
            prefix_cache_hit_rate=hits / queries if queries and hits is not None else None,
        )


def kv_usage_from_text(text: str) -> float | None:
    """The fullest engine's ``vllm:kv_cache_usage_perc`` (0–1), parsing only those lines."""
    samples = parse_metrics(text, names=(KV_USAGE, _KV_USAGE_V0))
    series = samples.get(KV_USAGE) or samples.get(_KV_USAGE_V0)
    return max(s.value for s in series) if series else None


async def sample_peak_kv(base_url: str, stop_event: asyncio.Event, interval_s: float = 0.5) -> float | None:
    """Poll ``/metrics`` every ``interval_s`` until ``stop_event`` is set; the highest KV usage seen.

    The gauge is instantaneous and drops to 0 once a run drains, so only sampling during the run
    shows how close a config came to preemption. Returns None when no scrape succeeded. Run it as a
    task beside the load generator and set the event when the load ends.
    """
    url = f"{base_url.rstrip('/')}/metrics"
    peak: float | None = None
    async with httpx.AsyncClient(timeout=max(interval_s * 4, 1.0)) as client:
        while not stop_event.is_set():
            try:
                response = await client.get(url)
                usage = kv_usage_from_text(response.text) if response.status_code == 200 else None
            except httpx.HTTPError:
                usage = None
            if usage is not None and not math.isnan(usage):
                peak = usage if peak is None else max(peak, usage)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop_event.wait(), interval_s)
    return peak
