#!/usr/bin/env bash
# Sets up a fresh machine if needed, builds everything and runs every test. Exits non-zero on any failure.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
build_dir="${DCAE_BUILD_DIR:-$here/build}"
"$here/scripts/setup.sh" --with-test-oracles "$build_dir"
cmake --build "$build_dir" --parallel "$(nproc)"
cd "$build_dir"
ctest --output-on-failure --parallel "$(nproc)" --timeout 900
