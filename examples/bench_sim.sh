#!/usr/bin/env bash
# Measure two configurations on the simulated server in real time and compare their p95 TTFT.
# (With a GPU and vLLM installed, drop `--engine sim --gpu A100-40GB` to measure the real engine.)
set -euo pipefail
for seqs in 4 32; do
  vllm-tune bench Qwen/Qwen2-1.5B --engine sim --gpu A100-40GB --max-num-seqs "$seqs" \
    --num-prompts 100 --request-rate 12 --random-input-len 256 --random-output-len 64 \
    --slo ttft:p95=100ms --json | python -c "import json,sys; d=json.load(sys.stdin); print('max_num_seqs $seqs:', d['status'], round(d['p95_ttft_ms'],1), 'ms p95 TTFT')"
done
