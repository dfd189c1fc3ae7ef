#!/usr/bin/env bash
# ctest slurm_srun_trainer: a real single-node Slurm (local_slurm.sh) runs `srun --mpi=pmix -n 2 -O dcae-trainer`
# on the tiny phase-1 recipe (synthetic images, DDP over MPI on the CPU) to completion; the job must exit 0, the
# trainer must see 2 ranks launched by srun, and both ranks must end with identical parameters (their digests).
# Usage: srun_trainer.sh DCAE_TRAINER SOURCE_DIR       Skips (77) without root or Slurm.
set -euo pipefail
trainer=$(realpath "${1:?usage: srun_trainer.sh DCAE_TRAINER SOURCE_DIR}")
source_dir=${2:?usage: srun_trainer.sh DCAE_TRAINER SOURCE_DIR}
# shellcheck source=tests/slurm/slurm_testing.sh
source "$(dirname "$0")/slurm_testing.sh"
start_cluster

cd "$work"
log="$work/srun.log"
t0=$SECONDS
code=0
# -O (overcommit): two ranks also on a one-core node, where a plain request would wait forever.
OMP_NUM_THREADS=1 DCAE_PARAM_DIGEST=1 DCAE_DIST_TIMEOUT_S=60 timeout 240 \
  srun --mpi=pmix -n 2 -O --kill-on-bad-exit=1 "$trainer" "$source_dir/recipes/tiny_phase1.toml" --out "$work/run" \
  --set data.source=synthetic --set data.resolution=32 --set data.synthetic_images=64 --set data.batch_size=2 \
  --set train.steps=4 --set schedule.warmup_steps=1 --set eval.every=4 --set eval.images=2 \
  --set checkpoint.every=4 --set log.every=1 >"$log" 2>&1 || code=$?
echo "srun finished in $((SECONDS - t0)) s with exit code $code"
[ "$code" = 0 ] || { tail -n 40 "$log" >&2; fail "srun exit code $code"; }

grep -q "rank 0 of 2 (srun)" "$log" || fail "the trainer did not see 2 ranks started by srun: $(head -n 5 "$log")"
grep -q "data parallel over 2 ranks (mpi)" "$log" || fail "no data parallel over 2 ranks in the log"
grep -q "finished at step 4" "$log" || fail "training did not finish at step 4: $(tail -n 5 "$log")"
[ -f "$work/run/checkpoints/step_00000004/COMPLETE" ] || fail "no complete checkpoint of step 4"
digest0=$(cat "$work/run/param_digest.rank0" 2>/dev/null || true)
digest1=$(cat "$work/run/param_digest.rank1" 2>/dev/null || true)
[ -n "$digest0" ] || fail "rank 0 wrote no parameter digest"
[ "$digest0" = "$digest1" ] || fail "the ranks' parameters differ: rank 0 $digest0, rank 1 $digest1"
pass "srun -n 2 dcae-trainer finished at step 4 with identical parameters on both ranks ($digest0)"
