"""Capacity: the highest request rate at which every SLO holds, found by a short rate search.

It drives measurements on one running server (``trial.run_trial`` with ``capacity=True``), so it
lives beside them; the tuner only sees the resulting rate through ``search.objective.Objective``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

MAX_CAPACITY_PROBES = 5


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
