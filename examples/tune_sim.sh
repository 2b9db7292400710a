#!/usr/bin/env bash
# Tune Qwen2-1.5B for a 200 ms p95 TTFT on a simulated A100 (virtual time: seconds, no GPU), then
# export the winner as a `vllm serve --config` YAML and as a flag line. Re-running the same command
# resumes the stored study; a larger --budget extends it.
# (With a GPU and vLLM installed, drop `--engine sim --gpu A100-40GB` to tune the real engine.)
set -euo pipefail
out=${1:-tuned.toml}
vllm-tune tune Qwen/Qwen2-1.5B --engine sim --gpu A100-40GB --slo-p95 200ms --request-rate 16 \
  --budget 15 --seed 0 -o "$out"
study=$(python -c "import sys; from vllm_slo_guard.files import read_toml; print(read_toml(sys.argv[1])['study'])" "$out")
vllm-tune export "$study" --format yaml -o "${out%.toml}.yaml"
echo "vllm serve Qwen/Qwen2-1.5B $(vllm-tune export "$study" --format args)"
