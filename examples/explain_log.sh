#!/usr/bin/env bash
# Produce a failed startup log (a KV cache too small for the full context of Llama-3.1-8B on an L4)
# with the simulated server, then ask vllm-tune why it failed.
set -u
log=$(mktemp)
python -m vllm_slo_guard.sim.server meta-llama/Llama-3.1-8B-Instruct --sim-gpu L4-24GB \
  --max-model-len 131072 --host 127.0.0.1 --port 0 > "$log" 2>&1
vllm-tune explain "$log" --exit-code $?
rm -f "$log"
