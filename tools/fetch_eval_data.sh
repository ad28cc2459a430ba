#!/usr/bin/env bash
# Real stereo from Debian's opencv-doc package (no data set can be downloaded otherwise): Aloe for evaluation,
# the chessboard pairs as real unlabelled training data.
#   .cache/eval/middlebury_aloe/  aloeL.jpg aloeR.jpg aloeGT.png  (Middlebury 2006 Aloe, 1282x1110; the GT
#                                 PNG value is the disparity in px, 0 = unknown)
#   .cache/eval/chessboard/       left01..14.jpg right01..14.jpg stereo_calib.xml (real, raw, unlabelled
#                                 stereo, 640x480, 9x6-corner board; stereo_calib.xml is only the sample's
#                                 image list)
# Aloe has ground truth: it is EVALUATION ONLY (never train, tune or take textures from it).  The chessboard
# pairs have no ground truth, so they may be trained on self-supervised (calibrate + rectify them first:
# python -m scene_perception.data.datasets.chessboard .cache/eval/chessboard \
#   .cache/real_unlabelled/chessboard_rectified --scale 0.5; then train stereo --mode mixed --dataset
# folder:.cache/real_unlabelled/chessboard_rectified), besides calibration / CameraInfo checks.
# Idempotent: files already in place are kept and nothing is downloaded when everything is there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
aloe=.cache/eval/middlebury_aloe
chess=.cache/eval/chessboard
aloe_files=(aloeL.jpg aloeR.jpg aloeGT.png)

complete() {
  local f
  for f in "${aloe_files[@]}"; do [ -s "$aloe/$f" ] || return 1; done
  [ -s "$chess/stereo_calib.xml" ] && ls "$chess"/left[0-9][0-9].jpg >/dev/null 2>&1
}
if complete; then
  echo "eval data: already in $aloe and $chess"
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# apt downloads as its sandbox user _apt when it can write the target directory (else it warns and
# downloads as root); give it the private temp dir rather than making the dir world-writable.
if [ "$(id -u)" = 0 ] && id _apt >/dev/null 2>&1; then chown _apt "$tmp"; fi
(cd "$tmp" && apt-get download opencv-doc >/dev/null)
dpkg -x "$tmp"/opencv-doc_*.deb "$tmp/x"
src="$tmp/x/usr/share/doc/opencv-doc/examples/data"
[ -d "$src" ] || { echo "error: $src not found in opencv-doc" >&2; exit 1; }

mkdir -p "$aloe" "$chess"
for f in "${aloe_files[@]}"; do
  [ -f "$src/$f" ] || { echo "error: $f missing from opencv-doc" >&2; exit 1; }
  cp "$src/$f" "$aloe/"
done
# Chessboard pairs: keep only complete left/right pairs plus the calibration file list/result.
for l in "$src"/left[0-9][0-9].jpg; do
  r="$src/right${l##*/left}"
  [ -f "$r" ] && cp "$l" "$r" "$chess/"
done
for f in stereo_calib.xml stereo_calib.cpp; do
  [ -f "$src/$f" ] && cp "$src/$f" "$chess/"
done
[ -s "$chess/stereo_calib.xml" ] || { echo "error: stereo_calib.xml missing from opencv-doc" >&2; exit 1; }
echo "eval data: Aloe in $aloe, $(ls "$chess"/left[0-9][0-9].jpg | wc -l) chessboard pairs in $chess"
