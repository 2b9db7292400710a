#!/usr/bin/env bash
# The multi-seed study: every scenario in benchmarks/scenarios/ (or those named as arguments), every searcher,
# 20 seeds, budget 15; JSON reports and figures in $OUT, and docs/study.md generated from them.
# Usage: benchmarks/run_study.sh [SCENARIO.toml ...]   (env: SEEDS, BUDGET, OUT, JOBS, ORACLE_CACHE)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/study}
SEEDS=${SEEDS:-20}
BUDGET=${BUDGET:-15}
mkdir -p "$OUT"
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(benchmarks/scenarios/*.toml)
extra=()
[ -z "${JOBS:-}" ] || extra+=(--jobs "$JOBS")
[ -z "${ORACLE_CACHE:-}" ] || extra+=(--oracle-cache "$ORACLE_CACHE")
started=$(date +%s)
for file in "${scenarios[@]}"; do
  name=$(basename "$file" .toml)
  t0=$(date +%s)
  vllm-tune compare --scenario "$file" --seeds "$SEEDS" --budget "$BUDGET" --quiet "${extra[@]}" \
    --json "$OUT/$name.json" --figures "$OUT/$name" > "$OUT/$name.md"
  echo "$name $(( $(date +%s) - t0 ))" >> "$OUT/timings.txt.new"
  echo "$name: $(( $(date +%s) - t0 )) s (oracle included)"
done
mv "$OUT/timings.txt.new" "$OUT/timings.txt"
echo "all scenarios: $(( $(date +%s) - started )) s"
python benchmarks/study_tables.py "$OUT" --out docs/study.md
