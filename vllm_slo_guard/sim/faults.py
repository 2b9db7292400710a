"""The fault switch ``SLO_GUARD_SIM_FAULT``, parsed into a :class:`Fault`.

Crash-aware tuning has to be tested against servers that hang, die or stall on cue; this is the one
place that reads the switch (its grammar is documented in :mod:`vllm_slo_guard.sim.server`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import InputError

FAULT_ENV = "SLO_GUARD_SIM_FAULT"


@dataclass(frozen=True)
class Fault:
    """The injected misbehaviour of ``SLO_GUARD_SIM_FAULT`` (see :mod:`vllm_slo_guard.sim.server`)."""

    hang_startup: bool = False
    die_after: int | None = None
    stall_after: int | None = None
    slow: float = 1.0


def parse_fault(text: str) -> Fault:
    """Parse ``hang_startup,die_after=N,stall_after=N,slow=F``; unknown items are an error, not ignored."""
    kwargs: dict[str, Any] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, eq, value = item.partition("=")
        key = key.strip().replace("-", "_")
        try:
            if key == "hang_startup" and not eq:
                kwargs["hang_startup"] = True
            elif key in ("die_after", "stall_after") and eq and int(value) >= 0:
                kwargs[key] = int(value)
            elif key == "slow" and eq and math.isfinite(float(value)) and float(value) > 0:
                kwargs["slow"] = float(value)
            else:
                raise ValueError(item)
        except ValueError:
            raise InputError(
                f"bad {FAULT_ENV} item {item!r}; expected hang_startup, die_after=N, stall_after=N or slow=F"
            ) from None
    return Fault(**kwargs)
