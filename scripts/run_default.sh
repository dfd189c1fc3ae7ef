#!/usr/bin/env bash
# Sets up a fresh machine if needed, builds the main job and runs it on the embedded default: a tiny DC-AE-style
# autoencoder trained for a few steps on images it generates itself. Extra arguments go to the program.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
build_dir="${DCAE_BUILD_DIR:-$here/build}"
"$here/scripts/setup.sh" "$build_dir"
cmake --build "$build_dir" --parallel "$(nproc)" --target dcae-smoke
"$build_dir/bin/dcae-smoke" --out "$here/runs/smoke" "$@"
