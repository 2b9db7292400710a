"""What a tuning run optimises: latency at a fixed load, or the capacity that still meets the SLOs.

``latency`` minimises the primary SLO's metric (the first SLO, e.g. TTFT p95) at the given load,
subject to every SLO. ``capacity`` maximises the request rate at which every SLO holds; each trial
finds it with a short rate search on one running server (``bench.capacity.find_capacity``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..spec import Slo, normalized_violation


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
