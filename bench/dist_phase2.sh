#!/usr/bin/env bash
# f64c128 Phase 2 at 1024^2 on one and two GPUs, data parallel (ddp) against fully sharded (fsdp): per-rank
# model-state bytes by category, peak GPU memory, mean step time without warm-up, and how much communication hides
# behind compute. Made for a 2-GPU machine (nvidia-h200-x2); one GPU runs the 1-rank cases only.
#
#   bench/dist_phase2.sh BIN_DIR [OUT_DIR]
#
# BIN_DIR holds a CUDA build's dcae-trainer; BIN_DIR/../lib (if present) goes on LD_LIBRARY_PATH, so a packed
# folder works as is:
#   mkdir -p /tmp/pack/bin /tmp/pack/bench /tmp/pack/recipes && cp build/bin/dcae-trainer /tmp/pack/bin/
#   strip /tmp/pack/bin/* && /work/shared/device/pack-libs.sh /tmp/pack/lib /tmp/pack/bin/dcae-trainer
#   cp bench/dist_phase2.sh /tmp/pack/bench/ && cp recipes/dcae_f64_phase{1,2}.toml /tmp/pack/recipes/
#   (there) bash bench/dist_phase2.sh bin $OUT/dist_phase2
#
# Each case trains the recipe recipes/dcae_f64_phase2.toml (next to this script's folder; DCAE_RECIPE overrides)
# from a random initialisation for STEPS steps (default 12; WARMUP=3 first steps left out of the means) on
# generated 1024^2 PNG images (python3 + numpy write them once into OUT_DIR/images), batch 4 per rank, LPIPS on
# only when LPIPS_WEIGHTS (default weights/lpips_vgg16.safetensors) exists. Cases: ddp on 1 and 2 ranks, fsdp on 1
# and 2 ranks, and fsdp on 2 ranks without prefetch and without reshard-after-forward (the communication figures).
# Two ranks run under `mpirun -np 2` with NCCL_NVLS_ENABLE=0. Every case's log and metrics stay in OUT_DIR/<case>/;
# the summary is OUT_DIR/summary.txt (also printed). Other knobs: CASES, STEPS, WARMUP, BATCH, RESOLUTION,
# OMP_NUM_THREADS, PYTHON.
set -euo pipefail

bin_dir=$(cd "${1:?usage: dist_phase2.sh BIN_DIR [OUT_DIR]}" && pwd)
out=${2:-$PWD/dist_phase2}
here=$(cd "$(dirname "$0")" && pwd)
recipe=${DCAE_RECIPE:-$here/../recipes/dcae_f64_phase2.toml}
steps=${STEPS:-12}
warmup=${WARMUP:-3}
batch=${BATCH:-4}
resolution=${RESOLUTION:-1024}
lpips_weights=${LPIPS_WEIGHTS:-weights/lpips_vgg16.safetensors}
trainer=$bin_dir/dcae-trainer
[[ -x $trainer ]] || { echo "dist_phase2.sh: no dcae-trainer in $bin_dir" >&2; exit 1; }
[[ -f $recipe ]] || { echo "dist_phase2.sh: recipe $recipe not found (set DCAE_RECIPE)" >&2; exit 1; }
[[ -d $bin_dir/../lib ]] && export LD_LIBRARY_PATH=$(cd "$bin_dir/../lib" && pwd)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export NCCL_NVLS_ENABLE=0 OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} DCAE_DIST_TIMEOUT_S=${DCAE_DIST_TIMEOUT_S:-900}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
device=${DEVICE:-cuda}  # DEVICE=cpu GPUS=2 RESOLUTION=64 DCAE_RECIPE=recipes/tiny_phase2.toml: a CPU dry run
gpus=${GPUS:-$(nvidia-smi -L 2>/dev/null | grep -c GPU || true)}
# CASES picks a subset (a later call with other cases adds to the same OUT_DIR; the summary covers all there).
cases=${CASES:-ddp_1 fsdp_1 ddp_2 fsdp_2 fsdp_2_no_prefetch fsdp_2_keep_gathered}
mkdir -p "$out"

# Smooth generated photographs-to-be: 2 x batch training images per rank pair plus one held out.
images=$out/images
if [[ ! -f $images/done ]]; then
  mkdir -p "$images"
  "${PYTHON:-python3}" - "$images" "$resolution" "$((2 * batch + 1))" <<'EOF'
import struct, sys, zlib
import numpy as np
folder, size, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def write_png(path, rgb):
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))
    chunk = lambda tag, data: struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 1)) + chunk(b"IEND", b""))
rng = np.random.default_rng(0)
v, u = np.mgrid[0:size, 0:size] / size
for i in range(count):
    q = rng.random(24)
    img = np.stack([q[c] * u + q[3 + c] * v - 0.5 for c in range(3)], -1)
    for d in (q[6:15], q[15:24]):
        disc = 1 / (1 + np.exp((np.hypot(u - d[0], v - d[1]) - (0.1 + 0.25 * d[2])) * 40))
        img += (2 * d[3:6] - 1) * disc[..., None]
    img += 0.05 * rng.standard_normal(img.shape)  # some texture for the convolutions to work on
    write_png(f"{folder}/img_{i:03d}.png", ((np.tanh(img) + 1) * 127.5).clip(0, 255).astype(np.uint8))
EOF
  touch "$images/done"
fi

lpips=(--set loss.lpips=0)
[[ -f $lpips_weights ]] && lpips=(--set "loss.lpips_weights=\"$lpips_weights\"")
common=(--set 'model.init_from=""' --set data.source=folder --set "data.folder=\"$images\"" --set data.workers=2
        --set "data.resolution=$resolution" --set "data.batch_size=$batch" --set eval.images=1 --set eval.every=0
        --set checkpoint.every=0 --set "train.steps=$((steps + 1))" --set schedule.warmup_steps=1
        --set "train.device=\"$device\"" --set log.every=1 --set log.all_ranks=true "${lpips[@]}")

# run_case NAME RANKS STRATEGY [--set ...]: stops after $steps steps (no final checkpoint or evaluation).
run_case() {
  local name=$1 ranks=$2 strategy=$3
  shift 3
  if [[ " $cases " != *" $name "* ]]; then return; fi
  if (( ranks > gpus )); then echo "skip $name: $ranks ranks, $gpus GPU(s)"; return; fi
  rm -rf "${out:?}/$name"
  local launch=()
  (( ranks > 1 )) && launch=(mpirun --allow-run-as-root --bind-to none -np "$ranks" -x LD_LIBRARY_PATH
                             -x NCCL_NVLS_ENABLE -x OMP_NUM_THREADS -x DCAE_DIST_TIMEOUT_S)
  echo "== $name: $ranks rank(s), $strategy $*"
  local start=$SECONDS
  if ! "${launch[@]}" "$trainer" "$recipe" --out "$out/$name" --stop-at "$steps" --set "dist.strategy=\"$strategy\"" \
      "${common[@]}" "$@" > "$out/$name.log" 2>&1; then
    echo "   FAILED (see $out/$name.log):"; tail -5 "$out/$name.log" | sed 's/^/   /'
    return
  fi
  echo "   done in $((SECONDS - start)) s"
}

run_case ddp_1 1 ddp
run_case fsdp_1 1 fsdp
run_case ddp_2 2 ddp
run_case fsdp_2 2 fsdp
run_case fsdp_2_no_prefetch 2 fsdp --set dist.fsdp.prefetch=false
run_case fsdp_2_keep_gathered 2 fsdp --set dist.fsdp.reshard_after_forward=false

"${PYTHON:-python3}" - "$out" "$warmup" "$batch" "$(basename "$recipe") at ${resolution}^2" <<'EOF' | tee "$out/summary.txt"
import glob, json, os, sys
out, warmup, batch, what = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
GiB = 1024 ** 3
cases = ["ddp_1", "fsdp_1", "ddp_2", "fsdp_2", "fsdp_2_no_prefetch", "fsdp_2_keep_gathered"]
step_s = {}
print(f"{what}, batch {batch} per rank; means over the steps after the first {warmup}")
print(f"{'case':22s} {'rank':>4s} {'step s':>7s} {'img/s':>7s} {'peak GiB':>8s} | per rank GiB: {'params':>6s} "
      f"{'grads':>6s} {'optim':>6s} {'state':>6s} {'activ':>6s} {'comm pk':>7s}")
for case in cases:
    files = sorted(glob.glob(os.path.join(out, case, "metrics*.jsonl")))
    if not files:
        continue
    ranks = len(files)
    for path in files:
        rank = 0 if path.endswith("metrics.jsonl") else int(path.split(".rank")[1].split(".")[0])
        rows = [json.loads(l) for l in open(path) if l.strip()]
        rows = [r for r in rows if r.get("split") == "train"]
        timed = [r for r in rows if r["step"] > warmup]
        if not timed:
            continue
        # img_per_s counts the global batch over one step (log.every = 1).
        seconds = sum(ranks * batch / r["img_per_s"] for r in timed) / len(timed)
        if rank == 0:
            step_s[case] = seconds
        m = timed[-1]["memory"]
        state = m["parameters"] + m["gradients"] + m["optimizer_state"]
        print(f"{case:22s} {rank:4d} {seconds:7.3f} {ranks * batch / seconds:7.2f} "
              f"{max(r['peak_mem_bytes'] for r in rows) / GiB:8.2f} | {'':13s} {m['parameters'] / GiB:6.3f} "
              f"{m['gradients'] / GiB:6.3f} {m['optimizer_state'] / GiB:6.3f} {state / GiB:6.3f} "
              f"{m['activations'] / GiB:6.3f} {m['communication_peak'] / GiB:7.3f}")
states = {}
for case in cases:
    path = os.path.join(out, case, "metrics.jsonl")
    if os.path.exists(path):
        rows = [json.loads(l) for l in open(path) if l.strip() and '"train"' in l]
        if rows:
            m = rows[-1]["memory"]
            states[case] = m["parameters"] + m["gradients"] + m["optimizer_state"]
for strategy in ("ddp", "fsdp"):
    if f"{strategy}_1" in states and f"{strategy}_2" in states:
        print(f"{strategy}: per-rank model state (params + grads + optimizer) at 2 ranks / 1 rank = "
              f"{states[strategy + '_2'] / states[strategy + '_1']:.3f}")
def diff(a, b, what):
    if a in step_s and b in step_s:
        print(f"  {what}: {1000 * (step_s[a] - step_s[b]):+.1f} ms per step ({a} - {b})")
print("communication (same per-rank batch, so 2-rank minus 1-rank time is the communication left exposed):")
diff("ddp_2", "ddp_1", "ddp exposed communication")
diff("fsdp_2", "fsdp_1", "fsdp exposed communication")
diff("fsdp_2_no_prefetch", "fsdp_2", "hidden by prefetching the next unit")
diff("fsdp_2", "fsdp_2_keep_gathered", "cost of the backward all-gathers (reshard after forward)")
if all(c in step_s for c in ("fsdp_2", "fsdp_1", "fsdp_2_no_prefetch")):
    waited = step_s["fsdp_2_no_prefetch"] - step_s["fsdp_1"]
    exposed = step_s["fsdp_2"] - step_s["fsdp_1"]
    if waited > 0:
        print(f"  share of the un-prefetched communication time that prefetch hides: {1 - exposed / waited:.0%}")
EOF
