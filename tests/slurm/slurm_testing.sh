# shellcheck shell=bash
# Sourced by the Slurm tests: a throw-away cluster in a scratch folder that is always stopped (trap), and a fast
# wait for batch jobs. Usage in a test:  source slurm_testing.sh; start_cluster; ...; pass
# Exit codes: 0 passed, 77 skipped (not root, no Slurm: ctest's SKIP_RETURN_CODE), anything else failed.
# DCAE_SLURM_TEST_KEEP=1 keeps the scratch folder (cluster logs, job log, run folder) of a passed test too.
here_slurm_testing=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/dcae_slurm_test.XXXXXX")
cluster="$work/cluster"
test_passed=0

# On exit, also after a failure: stop the daemons; keep the folder (logs) of a failed run, remove a passed one.
finish() {
  local code=$?
  "$here_slurm_testing/local_slurm.sh" stop "$cluster" || true
  if [ "$test_passed" = 1 ]; then
    if [ "${DCAE_SLURM_TEST_KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
  elif [ "$code" != 77 ]; then
    echo "FAILED (exit $code); cluster logs and run folder kept in $work" >&2
    for f in "$cluster"/log/*.log; do [ -f "$f" ] && { echo "--- $f (last 15 lines)"; tail -n 15 "$f"; } >&2; done
  else
    rm -rf "$work"
  fi
  exit "$code"
}
trap finish EXIT
trap 'exit 130' INT TERM

fail() {
  echo "FAILED: $*" >&2
  exit 1
}

start_cluster() {
  local t0=$SECONDS code=0
  "$here_slurm_testing/local_slurm.sh" start "$cluster" || code=$?
  [ "$code" = 77 ] && { echo "SKIPPED: no local Slurm cluster here (see the line above)"; exit 77; }
  [ "$code" = 0 ] || fail "could not start the local Slurm cluster"
  export SLURM_CONF="$cluster/slurm.conf" PATH="$PATH:/usr/sbin:/sbin"
  echo "local Slurm cluster up in $((SECONDS - t0)) s: $(sinfo -h -o '%P %T %c CPUs')"
}

# Field $2 (JobState, Restarts, ExitCode, ...) of job $1.
job_field() {
  scontrol show job -o "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1
}

# Waits (polling every 0.25 s; sbatch --wait polls every 2-32 s) until job $1 ends, at most $2 seconds; a
# requeued job is let go at once instead of after Slurm's requeue delay of about two minutes.
wait_job() {
  local job=$1 limit=$2 state end=$((SECONDS + $2))
  while [ $SECONDS -lt $end ]; do
    state=$(job_field "$job" JobState)
    case "$state" in
      COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | PREEMPTED | BOOT_FAIL | DEADLINE)
        echo "$state"
        return 0
        ;;
      PENDING)
        if [ "$(job_field "$job" Restarts)" -gt 0 ]; then scontrol update JobId="$job" StartTime=now 2>/dev/null || true; fi
        ;;
    esac
    sleep 0.25
  done
  scancel "$job" || true
  fail "job $job still $(job_field "$job" JobState) after $limit s"
}

pass() {
  test_passed=1
  echo "PASSED: $*"
  exit 0
}
