#!/usr/bin/env bash
# dcae-trainer img/s with train.cuda_graph on and off, one after the other on the same GPU: (a) the tiny phase-1
# recipe (f8c16, widths 32-64, 64^2, batch 8: launch bound) and (b) dc-ae-f64c128-in-1.0 phase 1 at 256^2, batch
# 32, bf16 weights, EMA 0.9999 (GPU bound), both on synthetic images (loss.lpips = 0: no weights file needed).
#
#   bench/trainer_cuda_graph.sh BIN_DIR RECIPES_DIR OUT_DIR
#
# img/s is the mean of the metrics rows' img_per_s after the first SKIP rows (warm-up: the eager first step, the
# capture, cuDNN plan searches). Knobs: TINY_STEPS (400), TINY_EVERY (50), BIG_STEPS (16), BIG_EVERY (2), SKIP (2),
# CASES ("tiny f64").
set -euo pipefail
bin=$(cd "${1:?usage: trainer_cuda_graph.sh BIN_DIR RECIPES_DIR OUT_DIR}" && pwd)
recipes=$(cd "${2:?recipes folder}" && pwd)
out=${3:?out folder}
mkdir -p "$out"
skip=${SKIP:-2}
common=(--set data.source=\"synthetic\" --set train.device=\"cuda\" --set eval.every=0 --set checkpoint.every=0
        --set checkpoint.resume=\"none\" --set loss.lpips=0.0)

run_case() {  # name recipe graph steps every [extra --set ...]
  local name=$1 recipe=$2 graph=$3 steps=$4 every=$5
  shift 5
  local dir=$out/$name
  rm -rf "$dir"
  local start=$(date +%s.%N)
  "$bin/dcae-trainer" "$recipes/$recipe" "${common[@]}" --set train.cuda_graph=$graph --set train.steps=$steps \
    --set log.every=$every --out "$dir" "$@" > "$out/$name.log" 2>&1 || { echo "$name failed:"; tail -20 "$out/$name.log"; return 0; }
  local end=$(date +%s.%N)
  python3 - "$dir/metrics.jsonl" "$name" "$skip" "$start" "$end" >> "$out/summary.txt" <<'PY'
import json, sys
path, name, skip, start, end = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
rows = [json.loads(l) for l in open(path) if l.strip()]
train = [r for r in rows if r.get("split") == "train"]
kept = train[skip:]
ips = [r["img_per_s"] for r in kept]
mean = sum(ips) / len(ips) if ips else float("nan")
last = train[-1]
pool = last.get("cuda_graph_pool_bytes", 0) / 2**30
print(f"| {name} | {mean:.1f} img/s (mean of {len(ips)} windows, min {min(ips):.1f}, max {max(ips):.1f}) | "
      f"last loss {last.get('loss')} | peak {last.get('peak_mem_bytes', 0)/2**30:.2f} GiB | graph pool {pool:.2f} GiB | "
      f"process {end-start:.1f} s |")
PY
  tail -1 "$out/summary.txt"
}

for case in ${CASES:-tiny f64}; do
  case $case in
    tiny)
      for graph in false true; do
        run_case tiny_graph_$graph tiny_phase1.toml $graph "${TINY_STEPS:-400}" "${TINY_EVERY:-50}" \
          --set data.synthetic_images=512
      done ;;
    f64)
      for graph in false true; do
        run_case f64c128_256_b32_graph_$graph dcae_f64_phase1.toml $graph "${BIG_STEPS:-16}" "${BIG_EVERY:-2}" \
          --set data.synthetic_images=64 --set data.resolution=256 --set data.batch_size=32
      done ;;
  esac
done
echo "--- summary"; cat "$out/summary.txt"
