"""Value objects of a tuning or benchmark request: SLOs and timeouts, parsed at the edges.

An SLO is a percentile of one of ``vllm bench serve``'s latency metrics (ttft, tpot, itl, e2el) with
a threshold in seconds. Written forms: ``200ms`` (the default metric, TTFT p95), ``0.2s``,
``ttft:p95=200ms``, ``tpot:p99=50ms``, ``e2el:p95=2s``, ``itl:mean=20ms``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import InputError
from .units import parse_duration

SLO_METRICS = ("ttft", "tpot", "itl", "e2el")
_SLO_RE = re.compile(
    r"^\s*(?:(?P<metric>[a-z0-9]+)\s*:\s*(?P<stat>p\d+(?:\.\d+)?|mean|median)\s*=\s*)?(?P<value>.+?)\s*$"
)


@dataclass(frozen=True)
class Slo:
    """``metric`` at ``stat`` (``p95``, ``p99``, ``mean``, ``median``) must stay ≤ ``threshold_s``."""

    metric: str
    stat: str
    threshold_s: float

    @property
    def result_key(self) -> str:
        """The benchmark result key holding the measured value, e.g. ``p95_ttft_ms``."""
        return f"{self.stat}_{self.metric}_ms"

    @property
    def percentile(self) -> float | None:
        if self.stat.startswith("p"):
            return float(self.stat[1:])
        return 50.0 if self.stat == "median" else None

    def __str__(self) -> str:
        return f"{self.metric}:{self.stat}={self.threshold_s * 1000:g}ms"

    def measured_s(self, result: Mapping[str, Any]) -> float | None:
        value = result.get(self.result_key)
        return None if value is None else float(value) / 1000.0

    def violation(self, result: Mapping[str, Any]) -> float:
        """``measured / threshold − 1`` (≤ 0 means met); +inf when the metric is missing."""
        measured = self.measured_s(result)
        if measured is None or math.isnan(measured):
            return math.inf
        return measured / self.threshold_s - 1.0


def parse_slo(text: str, *, default_metric: str = "ttft", default_stat: str = "p95") -> Slo:
    """Parse one SLO string; a bare duration means ``default_metric:default_stat=<duration>``."""
    match = _SLO_RE.match(text or "")
    if not match:
        raise InputError(f"invalid SLO {text!r}: expected e.g. 200ms or ttft:p95=200ms")
    metric = match.group("metric") or default_metric
    stat = match.group("stat") or default_stat
    if metric not in SLO_METRICS:
        raise InputError(f"invalid SLO {text!r}: unknown metric {metric!r} (use one of {', '.join(SLO_METRICS)})")
    if stat.startswith("p") and not 0 < float(stat[1:]) < 100:
        raise InputError(f"invalid SLO {text!r}: percentile must be between 0 and 100")
    try:
        threshold = parse_duration(match.group("value"), default_unit="ms")
    except InputError:
        raise InputError(f"invalid SLO {text!r}: {match.group('value')!r} is not a duration such as 200ms") from None
    if threshold <= 0:
        raise InputError(f"invalid SLO {text!r}: the threshold must be positive")
    if stat.endswith(".0"):
        stat = stat[:-2]
    return Slo(metric, stat, threshold)


def normalized_violation(slos: Iterable[Slo], result: Mapping[str, Any]) -> float:
    """``max_i(measured_i / threshold_i) − 1`` over all SLOs: ≤ 0 means every SLO is met."""
    violations = [slo.violation(result) for slo in slos]
    return max(violations) if violations else -1.0


def percentiles_needed(slos: Iterable[Slo], base: Iterable[float] = (50.0, 90.0, 95.0, 99.0)) -> tuple[float, ...]:
    """Result percentiles to compute so that every SLO's key is present."""
    wanted = set(base)
    wanted.update(p for p in (slo.percentile for slo in slos) if p is not None)
    return tuple(sorted(wanted))


@dataclass(frozen=True)
class Timeouts:
    """Every deadline of one trial in one place (the reference implementation had two that disagreed)."""

    startup_s: float = 900.0  # process start to /health 200 (vLLM's own engine handshake allows 600 s)
    request_s: float = 120.0  # one request, send to last token
    trial_s: float = 1800.0  # the whole measurement
    shutdown_s: float = 15.0  # SIGTERM grace before SIGKILL of the process group


_PER_REQUEST = {"ttft": "ttft_s", "e2el": "e2el_s"}


def certain_violation(slos: Iterable[Slo], planned: int) -> Callable[[Sequence[Any]], bool]:
    """A stop rule for a measurement: True once some percentile SLO can no longer be met.

    With ``N`` planned requests, ``np.percentile(p)`` (linear interpolation) sits at position
    ``(N − 1)·p/100`` of the sorted values; once ``k ≥ N − (N − 1)·p/100`` requests are already
    above the threshold, every remaining outcome leaves the percentile above it. (Failed requests
    only shrink N, which makes the bound easier to meet, so it stays certain.) Per-request metrics
    only: TTFT, E2EL and TPOT; mean and ITL SLOs never stop a run early.
    """
    rules = [
        (slo, slo.percentile) for slo in slos if slo.percentile is not None and slo.metric in ("ttft", "tpot", "e2el")
    ]

    def over(record: Any, slo: Slo) -> bool:
        if not record.success:
            return False
        if slo.metric == "tpot":
            tpot = record.tpot_s
            return tpot is not None and tpot > slo.threshold_s
        return getattr(record, _PER_REQUEST[slo.metric]) > slo.threshold_s

    def should_stop(records: Sequence[Any]) -> bool:
        for slo, pct in rules:
            assert pct is not None
            needed = planned - (planned - 1) * pct / 100.0
            if sum(1 for r in records if over(r, slo)) >= needed:
                return True
        return False

    return should_stop
