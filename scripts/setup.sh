#!/usr/bin/env bash
# Installs every Debian/Ubuntu package dcae needs (a no-op when they are present), then configures the build.
# Usage: scripts/setup.sh [--with-test-oracles] [build-dir] [extra cmake args...]
#   --with-test-oracles  also install what only the tests need: the Python packages the test suites compare against
#                        (PyTorch, diffusers, h5py, ...; about 5 GB, into build-dir/pyenv) and Slurm + munge for
#                        the local-cluster tests. Never needed to build or run dcae.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
oracles=0
if [ "${1:-}" = "--with-test-oracles" ]; then oracles=1; shift; fi
build_dir="${1:-$here/build}"; shift || true

packages=(build-essential cmake ninja-build ccache pkg-config
  libeigen3-dev libhdf5-dev libboost-program-options-dev libgoogle-glog-dev libgtest-dev libgmock-dev
  libopenmpi-dev openmpi-bin libtomlplusplus-dev nlohmann-json3-dev libpng-dev libjpeg-dev python3 python3-venv)
# The Slurm tests (tests/slurm/) start a throw-away single-node cluster from Debian's packages: test-only, so
# installed with the test oracles (about 45 packages, 66 MB; libopenmpi-dev above brings the PMIx library).
if [ "$oracles" = 1 ]; then packages+=(munge slurmctld slurmd slurm-client); fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  # Package scripts must not start daemons (munge, slurmctld, slurmd): the Slurm tests start their own cluster.
  # Container images usually block that with policy-rc.d; add one for the install where it is missing.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo_cmd tee /usr/sbin/policy-rc.d >/dev/null
    $sudo_cmd chmod +x /usr/sbin/policy-rc.d
    trap '$sudo_cmd rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Python test oracles (never a runtime dependency): a virtual environment inside the build folder.
if [ "$oracles" = 1 ]; then
  venv="$build_dir/pyenv"
  mkdir -p "$build_dir"
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" || { echo "setup: python3 -m venv failed (install python3-venv)"; exit 1; }
  fi
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$here/tests/python/requirements.txt"
fi

if [ ! -f "$build_dir/build.ninja" ]; then
  cmake -S "$here" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
fi
