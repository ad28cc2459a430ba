#!/usr/bin/env bash
# Photo textures for the synthetic stereo world, taken from Debian's opencv-doc sample images.
# Only an allowlist of ordinary photos is extracted: images that come with stereo or optical-flow ground
# truth (aloe*, left*/right* chessboard pairs, rubberwhale*, basketball*) are evaluation-only and are never
# used as textures (see README "Data rules").  Output: .cache/textures/*.jpg|png (gitignored).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=.cache/textures
[ -n "$(ls -A "$out" 2>/dev/null)" ] && { echo "textures: $out already populated"; exit 0; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download opencv-doc >/dev/null)
dpkg -x "$tmp"/opencv-doc_*.deb "$tmp/x"
src="$tmp/x/usr/share/doc/opencv-doc/examples/data"
mkdir -p "$out"
for f in aero1.jpg apple.jpg baboon.jpg blox.jpg board.jpg building.jpg butterfly.jpg fruits.jpg \
         graf1.png HappyFish.jpg home.jpg leuvenA.jpg messi5.jpg orange.jpg smarties.png squirrel_cls.jpg \
         starry_night.jpg stuff.jpg box_in_scene.png ela_original.jpg; do
  [ -f "$src/$f" ] && cp "$src/$f" "$out/"
done
echo "textures: $(ls "$out" | wc -l) photos in $out"
