"""The simulated engine core: scheduler + cost model + seeded noise, one step at a time.

Both faces drive this same object. The server face calls ``step()`` and sleeps for the returned
duration; the in-process face also uses ``decode_run()``, which computes a run of identical pure
decode steps at once (vectorized), with the same results as calling ``step()`` repeatedly: noise is
drawn per step index, so both paths see the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..vllm_rules.arch import ModelArch
from ..vllm_rules.catalog import GpuSpec
from ..vllm_rules.config import EngineConfig
from ..vllm_rules.memory import MemoryPlan
from .cost import CostModel, StepShape
from .scheduler import Scheduler, SimRequest

STEP_NOISE_CV = 0.02  # per step jitter (kernel timing, host scheduling)
TRIAL_NOISE_CV = 0.008  # per server start (clocks, placement): SLO-Guard's repeat CV was 0.3–0.9%
_NOISE_CHUNK = 4096


class RequestRejected(Exception):
    """The request can never run (too long for max_model_len): the API answers HTTP 400."""


@dataclass
class StepResult:
    """One executed step: its duration and which requests produced a token or finished."""

    duration_s: float
    emitted: list[SimRequest]
    finished: list[SimRequest]
    num_tokens: int
    num_preempted: int


@dataclass
class DecodeRun:
    """``k`` consecutive pure decode steps of the same ``batch`` (vectorized)."""

    durations_s: np.ndarray
    batch: list[SimRequest]
    finished: list[SimRequest]


class EngineCore:
    """One simulated vLLM engine with a fixed memory plan."""

    def __init__(self, cfg: EngineConfig, arch: ModelArch, gpu: GpuSpec, plan: MemoryPlan, seed: int = 0) -> None:
        self.cfg, self.arch, self.gpu, self.plan = cfg, arch, gpu, plan
        self.max_model_len = plan.max_model_len
        self.scheduler = Scheduler(cfg, plan.num_blocks, plan.max_model_len)
        self.cost = CostModel(cfg, arch, gpu)
        self._rng = np.random.default_rng([seed, 7])
        self.trial_factor = float(max(1.0 + TRIAL_NOISE_CV * self._rng.standard_normal(), 0.5))
        self._noise = np.empty(0)
        self.step_index = 0
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        self.dead = False

    # --- noise ------------------------------------------------------------------------------------
    def _noise_slice(self, start: int, count: int) -> np.ndarray:
        while len(self._noise) < start + count:
            fresh = 1.0 + STEP_NOISE_CV * self._rng.standard_normal(_NOISE_CHUNK)
            self._noise = np.concatenate([self._noise, np.clip(fresh, 0.8, 1.2) * self.trial_factor])
        return self._noise[start : start + count]

    # --- requests ---------------------------------------------------------------------------------
    def check_request(self, prompt_len: int, max_tokens: int) -> None:
        """Raise ``RequestRejected`` with vLLM's wording if the request can never fit."""
        if prompt_len + max_tokens > self.max_model_len:
            raise RequestRejected(
                f"This model's maximum context length is {self.max_model_len} tokens. However, you requested "
                f"{max_tokens} output tokens and your prompt contains {prompt_len} input tokens, for a total of "
                f"{prompt_len + max_tokens} tokens that exceeds the model's context length. Please reduce the length "
                "of the input prompt or the number of requested output tokens."
            )

    def add_request(self, req: SimRequest) -> None:
        self.check_request(req.prompt_len, req.max_tokens)
        self.scheduler.add(req)

    @property
    def has_work(self) -> bool:
        return self.scheduler.has_work

    @property
    def num_running(self) -> int:
        return len(self.scheduler.running)

    @property
    def num_waiting(self) -> int:
        return len(self.scheduler.waiting)

    # --- one step -----------------------------------------------------------------------------------
    def step(self) -> StepResult:
        sched = self.scheduler
        plan = sched.schedule()
        num_tokens = num_decode = decode_ctx = prefill_ctx = sampled = 0
        prefill_work = 0.0
        emitted: list[SimRequest] = []
        for req, n in plan.items:
            num_tokens += n
            if n == 1 and req.num_computed >= req.prompt_len:
                num_decode += 1
                decode_ctx += req.num_computed + 1
            else:
                prefill_work += n * (req.num_computed + n / 2)
                prefill_ctx += req.num_computed
            if req.num_computed + n >= req.num_tokens:
                sampled += 1
        shape = StepShape(num_tokens, len(plan.items), num_decode, decode_ctx, prefill_work, prefill_ctx, sampled)
        duration = self.cost.step_time(shape) * float(self._noise_slice(self.step_index, 1)[0]) if plan.items else 0.0
        self.step_index += 1 if plan.items else 0
        finished: list[SimRequest] = []
        for req, n in plan.items:
            if req.num_computed < req.prompt_len:
                self.prompt_tokens_total += min(n, req.prompt_len - req.num_computed)
            req.num_computed += n
            if req.num_computed >= req.num_tokens:
                req.num_output += 1
                self.generation_tokens_total += 1
                emitted.append(req)
                if req.num_output >= req.max_tokens or req.num_tokens >= self.max_model_len:
                    finished.append(req)
        for req in finished:
            sched.finish(req)
        return StepResult(duration, emitted, finished, num_tokens, len(plan.preempted))

    # --- a run of identical decode steps ------------------------------------------------------------
    def decode_run_length(self) -> int:
        """How many next steps are certain to be pure decode of the current batch (0 if unsure)."""
        sched = self.scheduler
        running = sched.running
        if not running or (sched.waiting and len(running) < self.cfg.max_num_seqs):
            return 0
        if len(running) > self.cfg.max_num_batched_tokens:
            return 0
        remaining = min(min(r.max_tokens - r.num_output, self.max_model_len - r.num_tokens) for r in running)
        if remaining < 2 or not all(r.is_decoding for r in running):
            return 0
        bs = sched.block_size
        k = remaining
        while k >= 2:
            need = sum(max(-(-(r.num_computed + k) // bs) - len(r.blocks), 0) for r in running)
            if need <= sched.pool.num_free:
                return k
            k //= 2
        return 0

    def decode_durations(self, k: int) -> np.ndarray:
        """Durations the next ``k`` pure decode steps would take (no state change)."""
        batch = self.scheduler.running
        n = len(batch)
        base = self.cost.decode_step_time(n, sum(r.num_computed + 1 for r in batch))
        slope = self.cost.decode_ctx_slope(n) * n
        return (base + slope * np.arange(k)) * self._noise_slice(self.step_index, k)

    def decode_run(self, k: int) -> DecodeRun:
        """Execute ``k`` pure decode steps (``k ≤ decode_run_length()``), all requests emitting each step."""
        sched = self.scheduler
        batch = list(sched.running)
        n = len(batch)
        durations = self.decode_durations(k)
        self.step_index += k
        bs = sched.block_size
        finished: list[SimRequest] = []
        for r in batch:
            r.num_computed += k
            r.num_output += k
            need = max(-(-r.num_computed // bs) - len(r.blocks), 0)
            if need:
                r.blocks.extend(sched.pool.allocate(need))
            if r.num_output >= r.max_tokens or r.num_tokens >= self.max_model_len:
                finished.append(r)
        self.generation_tokens_total += n * k
        for r in finished:
            sched.finish(r)
        return DecodeRun(durations, batch, finished)
