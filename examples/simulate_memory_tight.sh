#!/usr/bin/env bash
# A memory-tight setup on the simulated engine: Llama-3.1-8B on a 24 GB L4.
# The full 128k context cannot fit one request: vLLM's own error says which length would.
set -u
vllm-tune simulate meta-llama/Llama-3.1-8B-Instruct --gpu L4-24GB --max-model-len 131072 --num-prompts 50
# With a length the KV cache can hold, it runs:
vllm-tune simulate meta-llama/Llama-3.1-8B-Instruct --gpu L4-24GB --max-model-len 8192 \
  --num-prompts 100 --request-rate 2 --random-input-len 1024 --random-output-len 128
