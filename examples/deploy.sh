#!/usr/bin/env bash
# A deploy script: `vllm serve` replaced by `vllm-tune serve`. Everything after the SLO is what the
# script passed to vLLM before; it is pinned (never tuned) and forwarded to the final server.
# The first start tunes and caches the result; later starts serve the cached winner at once.
set -euo pipefail
MODEL=${MODEL:-meta-llama/Llama-3.1-8B-Instruct}
exec vllm-tune serve "$MODEL" \
  --slo ttft:p95=300ms --slo tpot:p99=40ms \
  --request-rate "${EXPECTED_RPS:-8}" --random-input-len 1024 --random-output-len 256 \
  --budget 20 --time-budget 45m \
  --host 0.0.0.0 --port "${PORT:-8000}" --api-key "${VLLM_API_KEY:?set VLLM_API_KEY}" \
  --max-model-len 8192 --served-model-name llama
