#!/usr/bin/env bash
# Compare the searchers on one scenario of the suite (the SLO-Guard paper's setup) over 20 seeds, paired by
# seed, with the JSON report and the three figures (written to the current folder); then on your own scenario
# file. Seconds to minutes on a laptop: every trial runs on the simulated engine in virtual time.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
vllm-tune compare --scenario "$repo/benchmarks/scenarios/paper-qwen2-1.5b-a100.toml" --seeds 20 --budget 15 \
  --json paper-study.json --figures paper-study/
vllm-tune compare --scenario "$repo/examples/my-scenario.toml" --searchers slo-guard,random --seeds 10 --budget 15
