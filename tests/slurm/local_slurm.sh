#!/usr/bin/env bash
# A throw-away single-node Slurm cluster (munged, slurmctld, slurmd) for tests, with no systemd: Debian's packages,
# per shared/notes/slurm-local.md. Everything Slurm writes (slurm.conf, state, spool, logs, PID files) lives in DIR,
# and clients find the cluster through SLURM_CONF=DIR/slurm.conf, so /etc/slurm is never touched.
#
#   local_slurm.sh start DIR     # prints nothing on success; exits 77 when it cannot run here (not root, no Slurm)
#   export SLURM_CONF=DIR/slurm.conf; srun ... / sbatch ...
#   local_slurm.sh stop DIR      # cancels jobs, stops what start started (by PID), keeps DIR (logs) for the caller
#
# Environment: DCAE_SLURM_PORT (slurmctld's port, slurmd takes the next; default 16817, away from a real cluster's
# 6817), DCAE_SLURM_CPUS (CPUs the node advertises, default nproc; more than nproc oversubscribes).
# munged: the system one at /run/munge when it already runs (left running), else one started here as the munge
# user (stopped by stop). The node is called "localhost": slurmd falls back to that name whatever the hostname.
set -euo pipefail

skip=77
action=${1:?usage: local_slurm.sh start|stop DIR}
dir=${2:?usage: local_slurm.sh start|stop DIR}
conf="$dir/slurm.conf"

logs_tail() {
  for f in "$dir"/log/*.log; do
    [ -f "$f" ] && { echo "--- $f"; tail -n 25 "$f"; }
  done >&2
}

# Ends the process whose PID is in file $1 (if it is still there) and waits up to 10 s for it.
stop_pid_file() {
  local file=$1 pid
  [ -s "$file" ] || return 0
  pid=$(cat "$file")
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  echo "local_slurm: pid $pid ($file) did not stop within 10 s; killing it" >&2
  kill -9 "$pid" 2>/dev/null || true
}

start() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "local_slurm: SKIP: needs root (slurmd runs jobs as their users; munged needs the munge user)" >&2
    exit $skip
  fi
  local tool
  for tool in slurmctld slurmd srun sbatch munged; do
    command -v "$tool" >/dev/null || PATH=$PATH:/usr/sbin:/sbin command -v "$tool" >/dev/null || {
      echo "local_slurm: SKIP: '$tool' is not installed (scripts/setup.sh --with-test-oracles installs Slurm)" >&2
      exit $skip
    }
  done
  export PATH=$PATH:/usr/sbin:/sbin
  local port=${DCAE_SLURM_PORT:-16817} cpus=${DCAE_SLURM_CPUS:-$(nproc)} override=""
  [ "$cpus" -gt "$(nproc)" ] && override="SlurmdParameters=config_overrides"  # else the node is INVAL
  # A cluster left behind (a test killed before its cleanup) would answer in place of ours: refuse instead.
  local p
  for p in "$port" $((port + 1)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "local_slurm: port $p is in use (a Slurm left running? set DCAE_SLURM_PORT to another port)" >&2
      exit 1
    fi
  done
  mkdir -p "$dir/state" "$dir/spool" "$dir/log"
  cat >"$conf" <<EOF
# Written by tests/slurm/local_slurm.sh: one node, no cgroups, no accounting, PMIx for Open MPI.
ClusterName=dcaetest
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=pmix
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
SchedulerType=sched/backfill
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
$override
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=1024 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
  export SLURM_CONF=$conf

  # munged: reuse a running one (its socket answers), else start one as the munge user. /run/munge is made by
  # systemd's tmpfiles on a normal boot, so it may be missing here.
  if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    [ -s /etc/munge/munge.key ] || mungekey --create
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    runuser -u munge -- munged
    cp /run/munge/munged.pid "$dir/munged.pid"  # ours to stop
    munge -n | unmunge >/dev/null || { echo "local_slurm: munged started but does not answer" >&2; exit 1; }
  fi

  slurmctld  # forks; PID in $dir/slurmctld.pid
  local answered=0
  for _ in $(seq 1 100); do
    if scontrol ping >/dev/null 2>&1; then answered=1; break; fi
    sleep 0.1
  done
  [ $answered = 1 ] || { echo "local_slurm: slurmctld does not answer on port $port" >&2; logs_tail; exit 1; }
  slurmd
  local state=""
  for _ in $(seq 1 300); do
    state=$(sinfo -h -n localhost -o %T 2>/dev/null || true)
    case "$state" in idle | inval* | drain* | down*) break ;; esac
    sleep 0.1
  done
  if [ "$state" != idle ]; then
    echo "local_slurm: node state '$state' after 30 s, expected idle" >&2
    logs_tail
    exit 1
  fi
}

stop() {
  export PATH=$PATH:/usr/sbin:/sbin SLURM_CONF=$conf
  if [ -s "$dir/slurmctld.pid" ] && kill -0 "$(cat "$dir/slurmctld.pid")" 2>/dev/null; then
    scancel --quiet --full --partition=debug 2>/dev/null || true  # every job of this throw-away cluster
    for _ in $(seq 1 50); do
      [ -z "$(squeue -h -t running,completing 2>/dev/null)" ] && break
      sleep 0.1
    done
  fi
  stop_pid_file "$dir/slurmd.pid"
  stop_pid_file "$dir/slurmctld.pid"
  stop_pid_file "$dir/munged.pid"
  rm -f "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munged.pid"
}

case "$action" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: local_slurm.sh start|stop DIR" >&2; exit 2 ;;
esac
