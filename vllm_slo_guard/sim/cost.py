"""Per-step execution time of the simulated engine: a roofline with fitted efficiencies.

One engine step runs the scheduled tokens of every request through all layers. Its time is

    GPU(padded batch) + execution-mode overhead + CPU overhead, times seeded noise

- **GPU**: each GEMM costs ``max(FLOPs / (peak·MFU), bytes / (BW·MBU)) + kernel floor``: decode
  (few tokens) streams the weights and is memory-bound, prefill is compute-bound. Decode attention
  reads the KV cache; prefill attention grows with context. LM head only for sampled rows. Tensor
  parallel adds two all-reduces per layer.
- **Execution mode**, chosen like vLLM's CUDA-graph dispatcher (``vllm/v1/cudagraph_dispatcher.py``; the
  capture sizes come from ``vllm/config/vllm.py``): a uniform-decode batch whose padded size is a FULL
  capture size (≤ max_num_seqs) replays a FULL graph; other batches up to the largest capture size replay
  PIECEWISE graphs (attention runs outside the graph: a per-layer cost); larger batches run compiled code
  without a graph, and ``--enforce-eager``/``-O0`` run eagerly (the largest per-layer launch cost).
- **CPU**: a per-step cost plus a small per-request cost (scheduling, input preparation, sampling).

Calibration (described in ``docs/architecture.md``): with MBU 0.85 and an 11 µs kernel floor the A100
model gives 3.3 ms (Qwen2-1.5B) and 11.0 ms (Llama-3-8B) per decode step at batch 1 on A100-80GB, as the
sum of the GEMM and attention times in aiconfigurator-core's vLLM-collected kernel tables (vLLM 0.14)
does; the mode overheads (0.164 ms/layer PIECEWISE, 0.58 ms/layer eager on the Colab A100 host) reproduce
the end-to-end slowdowns over FULL graphs in SLO-Guard's published runs (Qwen2-1.5B, Colab A100-40GB,
vLLM 0.19): ≈1.9× for PIECEWISE, ≈4.5× for eager.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from ..vllm_rules.arch import ModelArch
from ..vllm_rules.catalog import GpuSpec
from ..vllm_rules.config import EngineConfig

ATTN_MBU = 0.8  # decode attention streams the KV cache
ATTN_MFU = 0.5  # prefill attention (flash attention) achieved fraction of peak
ELEMENTWISE_OPS_PER_LAYER = 4  # norms, rotary embedding, activation, residual add
ELEMENTWISE_BYTES_PER_TOKEN_FACTOR = 10  # bytes moved per token per op, in units of hidden × dtype
ELEMENTWISE_FLOOR_S = 2e-6
ALLREDUCE_FLOOR_GRAPH_S = 5e-6
ALLREDUCE_FLOOR_EAGER_S = 40e-6
# Overheads on the calibration host (Colab A100); scaled by GpuSpec.host_factor.
FULL_GRAPH_STEP_S = 0.10e-3
PIECEWISE_PER_LAYER_S = 0.164e-3
EAGER_PER_LAYER_S = 0.58e-3
# A step too large for any CUDA graph still runs torch.compile'd (fused) code when compilation is on:
# fewer kernel launches than --enforce-eager. Fitted so that max_num_batched_tokens ≥ 512 moves E2E by
# ≲3% on SLO-Guard's workload (measured: +1.9 ± 1.3 ms per halving).
COMPILED_NO_GRAPH_PER_LAYER_S = 0.25e-3
CPU_STEP_S = 0.20e-3
CPU_PER_REQUEST_S = 6e-6
CPU_BACKEND_STEP_S = 1.5e-3  # vLLM's CPU backend: Python/oneDNN dispatch per step


@dataclass(frozen=True)
class StepShape:
    """What one scheduled step contains, reduced to the numbers the cost depends on."""

    num_tokens: int  # scheduled tokens (decode tokens + prefill chunk tokens)
    num_reqs: int  # requests in the step
    num_decode: int  # requests decoding one token
    decode_ctx: int  # sum of the context lengths the decode requests attend to
    prefill_work: float  # sum over prefill chunks of q · (context before chunk + q / 2)
    prefill_ctx: int  # sum of the context before each prefill chunk (KV read by prefill attention)
    num_sampled: int  # requests that sample a token this step (LM head rows)


class CostModel:
    """Step times for one (model, GPU, engine config)."""

    def __init__(self, cfg: EngineConfig, arch: ModelArch, gpu: GpuSpec) -> None:
        self.cfg, self.arch, self.gpu = cfg, arch, gpu
        tp = cfg.tensor_parallel_size
        self.layers = math.ceil(arch.num_layers / cfg.pipeline_parallel_size)
        self.bytes_per = cfg.dtype_bytes
        self.peak = gpu.peak_flops(cfg.dtype)
        self.bw = gpu.hbm_bw
        h, d, inter = arch.hidden_size, arch.head_dim, arch.intermediate_size
        nq, nkv = arch.num_heads / tp, max(1, arch.num_kv_heads // tp)
        self.nq_d = nq * d
        self.gemm_shapes = (((nq + 2 * nkv) * d, h), (h, nq * d), (2 * inter / tp, h), (h, inter / tp))
        self.lm_head_shape = (arch.vocab_size / tp, h)
        self.kv_bytes_layer = 2 * nkv * d * cfg.kv_dtype_bytes
        self.tp = tp
        self.hidden = h
        self.host = gpu.host_factor
        self.full_sizes = frozenset(cfg.full_graph_sizes)
        self.capture_sizes = list(cfg.cudagraph_capture_sizes)
        self.max_capture = cfg.max_capture_size
        self._layer_gemm_cache: dict[int, float] = {}

    # --- GPU time -------------------------------------------------------------------------------
    def _gemm(self, m: float, n: float, k: float) -> float:
        flops = 2.0 * m * n * k
        moved = (n * k + m * (n + k)) * self.bytes_per
        return max(flops / (self.peak * self.gpu.mfu), moved / (self.bw * self.gpu.mbu)) + self.gpu.kernel_floor_s

    def layer_gemm_time(self, m: int) -> float:
        """The four GEMMs of one layer at ``m`` tokens (cached: batch sizes repeat)."""
        cached = self._layer_gemm_cache.get(m)
        if cached is None:
            cached = sum(self._gemm(m, n, k) for n, k in self.gemm_shapes)
            self._layer_gemm_cache[m] = cached
        return cached

    def gpu_time(self, shape: StepShape, padded_tokens: int, eager: bool) -> float:
        gpu = self.gpu
        t_layer = self.layer_gemm_time(padded_tokens)
        attn = 0.0
        if shape.num_decode:
            attn += gpu.kernel_floor_s + shape.decode_ctx * self.kv_bytes_layer / (self.bw * ATTN_MBU)
        if shape.prefill_work:
            flops = 4.0 * shape.prefill_work * self.nq_d
            attn += (
                gpu.kernel_floor_s
                + flops / (self.peak * ATTN_MFU)
                + shape.prefill_ctx * self.kv_bytes_layer / (self.bw * ATTN_MBU)
            )
        elementwise = ELEMENTWISE_OPS_PER_LAYER * ELEMENTWISE_FLOOR_S + (
            ELEMENTWISE_OPS_PER_LAYER
            * ELEMENTWISE_BYTES_PER_TOKEN_FACTOR
            * padded_tokens
            * self.hidden
            * self.bytes_per
            / (0.8 * self.bw)
        )
        comm = 0.0
        if self.tp > 1:
            floor = ALLREDUCE_FLOOR_EAGER_S if eager else ALLREDUCE_FLOOR_GRAPH_S
            moved = padded_tokens * self.hidden * self.bytes_per * 2 * (self.tp - 1) / self.tp
            comm = 2 * (floor + moved / gpu.link_bw)
        lm_head = self._gemm(max(shape.num_sampled, 1), *self.lm_head_shape) if shape.num_sampled else 0.0
        return self.layers * (t_layer + attn + elementwise + comm) + lm_head

    # --- execution mode -------------------------------------------------------------------------
    def dispatch(self, shape: StepShape) -> tuple[str, int]:
        """(mode, padded token count) as vLLM's CUDA-graph dispatcher would pick them."""
        tokens = shape.num_tokens
        if not self.capture_sizes or tokens > self.max_capture:
            return "NONE", tokens
        padded = self.capture_sizes[bisect.bisect_left(self.capture_sizes, tokens)]
        uniform_decode = shape.num_decode == shape.num_reqs and tokens == shape.num_reqs
        if uniform_decode and padded in self.full_sizes:
            return "FULL", padded
        if self.cfg.cudagraph_mode in ("FULL", "FULL_DECODE_ONLY"):
            return "NONE", tokens
        return "PIECEWISE", padded

    def step_time(self, shape: StepShape) -> float:
        """Seconds one engine step takes (before noise)."""
        mode, padded = self.dispatch(shape)
        gpu = self.gpu_time(shape, padded, eager=mode == "NONE")
        if self.gpu.is_cpu:
            return gpu + CPU_BACKEND_STEP_S + CPU_PER_REQUEST_S * shape.num_reqs
        if mode == "FULL":
            overhead = FULL_GRAPH_STEP_S
        elif mode == "PIECEWISE":
            overhead = self.layers * PIECEWISE_PER_LAYER_S
        elif self.cfg.optimization_level >= 1:
            overhead = self.layers * COMPILED_NO_GRAPH_PER_LAYER_S
        else:
            overhead = self.layers * EAGER_PER_LAYER_S
        cpu = CPU_STEP_S + CPU_PER_REQUEST_S * shape.num_reqs
        return gpu + (overhead + cpu) * self.host

    def decode_step_time(self, batch: int, ctx_sum: int) -> float:
        """A pure decode step of ``batch`` requests attending to ``ctx_sum`` tokens in total."""
        return self.step_time(StepShape(batch, batch, batch, ctx_sum, 0.0, 0, batch))

    def decode_ctx_slope(self, batch: int) -> float:
        """d(step time)/d(ctx_sum) of a decode step: attention reads every layer's KV of each token."""
        return self.layers * self.kv_bytes_layer / (self.bw * ATTN_MBU)
