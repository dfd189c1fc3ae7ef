#!/usr/bin/env bash
# Sets up a fresh machine if needed, builds the main job and runs it on the embedded default: dcae-trainer on
# recipes/tiny_default.toml, a small DC-AE trained on the CPU on photographs from Debian's python3-skimage package
# (made into dcae shards on first use; generated images when the package cannot be fetched). Extra arguments go to
# dcae-trainer (e.g. --set train.steps=300). Output: runs/tiny_default/{metrics.jsonl, grids/, checkpoints/}.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
build_dir="${DCAE_BUILD_DIR:-$here/build}"
"$here/scripts/setup.sh" "$build_dir"
cmake --build "$build_dir" --parallel "$(nproc)" --target dcae-trainer dcae-shard
if ! "$here/scripts/make_skimage_shards.sh" "$build_dir" "$here/runs/data/skimage"; then
  echo "run_default: no skimage photographs (apt-get download failed); training on generated images" >&2
  set -- --set data.source=synthetic "$@"
fi
cd "$here" && exec "$build_dir/bin/dcae-trainer" recipes/tiny_default.toml "$@"
