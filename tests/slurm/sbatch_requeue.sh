#!/usr/bin/env bash
# ctest slurm_sbatch_requeue: slurm/dcae_train.sbatch on a real single-node Slurm (local_slurm.sh), 2 CPU ranks on
# the tiny phase-1 recipe. Once training runs, the test sends what Slurm sends before the time limit (USR1 to the
# batch script); the job must write a checkpoint mid-run, exit, be requeued, resume from that checkpoint
# (checkpoint.resume = "auto") and finish at the last step, with exit code 0 and identical ranks.
# Usage: sbatch_requeue.sh DCAE_TRAINER SOURCE_DIR       Skips (77) without root or Slurm.
set -euo pipefail
trainer=$(realpath "${1:?usage: sbatch_requeue.sh DCAE_TRAINER SOURCE_DIR}")
source_dir=$(realpath "${2:?usage: sbatch_requeue.sh DCAE_TRAINER SOURCE_DIR}")
# shellcheck source=tests/slurm/slurm_testing.sh
source "$(dirname "$0")/slurm_testing.sh"
start_cluster

steps=60
cd "$work"  # the submit folder: the job's log lands here
t0=$SECONDS
# No periodic checkpoint and no evaluation before the end: the only checkpoint before the last step is the preemption's.
job=$(DCAE_BIN=$(dirname "$trainer") OMP_NUM_THREADS=1 DCAE_PARAM_DIGEST=1 DCAE_DIST_TIMEOUT_S=60 SBATCH_TIMELIMIT=10 \
  sbatch --parsable --ntasks=2 --job-name=dcae-requeue "$source_dir/slurm/dcae_train.sbatch" \
  "$source_dir/recipes/tiny_phase1.toml" --out "$work/run" --set data.source=synthetic --set data.resolution=32 \
  --set data.synthetic_images=64 --set data.batch_size=2 --set train.steps=$steps --set schedule.warmup_steps=1 \
  --set eval.every=0 --set eval.images=2 --set checkpoint.every=0 --set log.every=1)
log="$work/slurm-dcae-requeue-$job.out"
echo "submitted job $job"

# Preempt once two steps are done (metrics.jsonl gets a row per step).
end=$((SECONDS + 120))
train_rows() {
  local rows
  rows=$(grep -s -c '"split":"train"' "$work/run/metrics.jsonl" || true)
  echo "${rows:-0}"
}
until [ "$(train_rows)" -ge 2 ]; do
  [ $SECONDS -lt $end ] || fail "no training progress after 120 s (job $(job_field "$job" JobState)): $(tail -n 20 "$log" 2>/dev/null)"
  state=$(job_field "$job" JobState)
  case "$state" in PENDING | CONFIGURING | RUNNING) ;; *) fail "job $job is $state before it was preempted: $(tail -n 20 "$log")" ;; esac
  sleep 0.2
done
scancel --batch --signal=USR1 "$job"
echo "USR1 sent after $((SECONDS - t0)) s"

state=$(wait_job "$job" 240)
echo "job $job $state after $((SECONDS - t0)) s: restarts $(job_field "$job" Restarts), exit code $(job_field "$job" ExitCode)"
[ "$state" = COMPLETED ] || fail "job $job ended $state: $(tail -n 30 "$log")"
[ "$(job_field "$job" ExitCode)" = "0:0" ] || fail "job exit code $(job_field "$job" ExitCode)"
[ "$(job_field "$job" Restarts)" = 1 ] || fail "job $job was requeued $(job_field "$job" Restarts) times, expected once"

# First run: stopped at step k (0 < k < steps) with a checkpoint of step k. Second run: resumed there, finished.
grep -q "dcae: USR1: the ranks checkpoint and stop" "$log" || fail "the batch script did not trap USR1: $(cat "$log")"
stopped=$(sed -n 's/.*dcae-trainer: preempted at step \([0-9]*\).*/\1/p' "$log" | head -n 1)
[ -n "$stopped" ] || fail "the trainer did not report a preempted stop: $(cat "$log")"
if [ "$stopped" -lt 1 ] || [ "$stopped" -ge $steps ]; then
  fail "preempted at step $stopped, expected between 1 and $((steps - 1))"
fi
grep -q "dcae: job $job run 2 " "$log" || fail "no second run of job $job in its log"
printf -v checkpoint "step_%08d" "$stopped"
grep -q "resumed from .*$checkpoint at step $stopped" "$log" || fail "the requeued run did not resume from $checkpoint: $(cat "$log")"
grep -q "dcae-trainer: finished at step $steps" "$log" || fail "the requeued run did not finish at step $steps: $(tail -n 20 "$log")"
printf -v last "step_%08d" $steps
[ -f "$work/run/checkpoints/$last/COMPLETE" ] || fail "no complete checkpoint of step $steps"
# The metrics continue the stopped run: one train row per step, steps 1..60 in order.
rows=$(grep '"split":"train"' "$work/run/metrics.jsonl" | sed -n 's/.*"step":\([0-9]*\).*/\1/p' | tr '\n' ' ')
[ "$rows" = "$(seq -s ' ' 1 $steps) " ] || fail "metrics.jsonl train steps are '$rows', expected 1..$steps once each"
digest0=$(cat "$work/run/param_digest.rank0" 2>/dev/null || true)
if [ -z "$digest0" ] || [ "$digest0" != "$(cat "$work/run/param_digest.rank1")" ]; then
  fail "the ranks' final parameters differ (or were not written)"
fi
pass "job $job: preempted at step $stopped, requeued, resumed and finished at step $steps in $((SECONDS - t0)) s"
