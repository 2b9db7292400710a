"""What a tuning run optimises: latency at a fixed load, or the capacity that still meets the SLOs.

``latency`` minimises the primary SLO's metric (the first SLO, e.g. TTFT p95) at the given load,
subject to every SLO. ``capacity`` maximises the request rate at which every SLO holds; each trial
finds it with a short rate search on one running server (``find_capacity``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..spec import Slo, normalized_violation

MAX_CAPACITY_PROBES = 5


@dataclass(frozen=True)
class Objective:
    kind: str  # "latency" | "capacity"
    slos: tuple[Slo, ...]

    def __post_init__(self) -> None:
        if self.kind not in ("latency", "capacity"):
            raise ValueError(f"unknown objective {self.kind!r}")
        if not self.slos:
            raise ValueError("an objective needs at least one SLO")

    @property
    def minimize(self) -> bool:
        return self.kind == "latency"

    @property
    def primary(self) -> Slo:
        return self.slos[0]

    @property
    def goodput_thresholds_s(self) -> dict[str, float]:
        """Per-request SLO thresholds for vLLM's goodput (TTFT, TPOT, E2EL)."""
        return {s.metric: s.threshold_s for s in self.slos if s.metric in ("ttft", "tpot", "e2el")}

    def latency_value(self, metrics: Mapping[str, Any]) -> float | None:
        """The primary SLO's measured value in seconds."""
        return self.primary.measured_s(metrics)

    def violation(self, metrics: Mapping[str, Any]) -> float:
        return normalized_violation(self.slos, metrics)

    def describe(self) -> str:
        slos = ", ".join(str(s) for s in self.slos)
        if self.kind == "latency":
            return f"minimize {self.primary.metric} {self.primary.stat} subject to {slos}"
        return f"maximize the request rate subject to {slos}"


@dataclass
class Probe:
    rate: float
    metrics: dict[str, Any]
    violation: float


@dataclass
class CapacityResult:
    """The highest probed rate that met every SLO (0 when none did) and every probe made."""

    capacity: float
    probes: list[Probe]

    @property
    def best_probe(self) -> Probe | None:
        met = [p for p in self.probes if p.violation <= 0]
        return max(met, key=lambda p: p.rate) if met else None

    @property
    def lowest_probe(self) -> Probe:
        return min(self.probes, key=lambda p: p.rate)


def find_capacity(
    measure: Callable[[float], tuple[dict[str, Any], float]], max_probes: int = MAX_CAPACITY_PROBES
) -> CapacityResult:
    """Rate search on one server: a burst probe for throughput, then bisection below it.

    ``measure(rate)`` runs the workload at ``rate`` req/s (``inf``: all at once) and returns its
    metrics and normalized violation. The first probe (all at once) gives the throughput X; if even
    a burst meets the SLOs the capacity is X. Otherwise bisect in (0, X): a met probe raises the
    lower bound, a missed one lowers the upper bound. Stops early when the lowest rate tried misses
    the SLOs by more than 2× (clearly infeasible) or when the bracket is within 10%.
    """
    probes: list[Probe] = []
    metrics, violation = measure(math.inf)
    probes.append(Probe(math.inf, metrics, violation))
    throughput = float(metrics.get("request_throughput") or 0.0)
    if violation <= 0:
        return CapacityResult(throughput, probes)
    low, high = 0.0, max(throughput, 1e-3)
    while len(probes) < max_probes:
        rate = (low + high) / 2 if low > 0 else high / 2
        metrics, violation = measure(rate)
        probes.append(Probe(rate, metrics, violation))
        if violation <= 0:
            low = rate
        else:
            high = rate
            if low == 0 and violation > 1.0 and len(probes) >= 3:
                break  # misses by more than 2× even at a low rate: clearly infeasible
        if low > 0 and (high - low) / high < 0.1:
            break
    return CapacityResult(low, probes)


def probe_rates(probes: Sequence[Probe]) -> list[float]:
    return [p.rate for p in probes]
