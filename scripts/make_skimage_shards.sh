#!/usr/bin/env bash
# Real photographs for the tiny default job: the sample images Debian's python3-skimage package ships in its
# data/ folder (astronaut, coffee, hubble deep field, ...), turned into dcae shards with dcae-shard:
#   OUT/train  12 photographs, stored at 128^2 (the tiny recipes train on random 64^2 crops)
#   OUT/eval   3 held-out photographs (chelsea the cat, the cameraman, a rocket)
# Usage: scripts/make_skimage_shards.sh [BUILD_DIR] [OUT]. Does nothing when OUT already holds both sets; exits
# non-zero when the package cannot be downloaded (apt-get download needs the network).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
build_dir="${1:-$here/build}"
out="${2:-$here/runs/data/skimage}"
if [[ -f "$out/train/manifest.json" && -f "$out/eval/manifest.json" ]]; then
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download python3-skimage >/dev/null 2>&1) || {
  echo "make_skimage_shards: apt-get download python3-skimage failed" >&2
  exit 1
}
dpkg-deb -x "$tmp"/python3-skimage_*.deb "$tmp/pkg"
data="$(dirname "$(find "$tmp/pkg" -name astronaut.png -path '*skimage/data/*' | head -n 1)")"
[[ -f "$data/astronaut.png" ]] || { echo "make_skimage_shards: no skimage/data in the package" >&2; exit 1; }
mkdir -p "$tmp/train" "$tmp/eval"
for f in astronaut.png coffee.png motorcycle_left.png motorcycle_right.png hubble_deep_field.jpg retina.jpg ihc.png \
         coins.png moon.png brick.png grass.png gravel.png; do
  cp "$data/$f" "$tmp/train/"
done
for f in chelsea.png camera.png rocket.jpg; do
  cp "$data/$f" "$tmp/eval/"
done
"$build_dir/bin/dcae-shard" --input "$tmp/train" --output "$out/train" --resolution 128 --overwrite
"$build_dir/bin/dcae-shard" --input "$tmp/eval" --output "$out/eval" --resolution 128 --overwrite
