#!/usr/bin/env bash
# Real stereo from Debian's opencv-doc package (no data set can be downloaded otherwise): Aloe for evaluation,
# the chessboard pairs as real unlabelled training data.
#   .cache/eval/middlebury_aloe/  aloeL.jpg aloeR.jpg aloeGT.png  (Middlebury 2006 Aloe, 1282x1110; the GT
#                                 PNG value is the disparity in px, 0 = unknown)
#   .cache/eval/chessboard/       left01..14.jpg right01..14.jpg stereo_calib.xml (real, raw, unlabelled
#                                 stereo, 640x480, 9x6-corner board; stereo_calib.xml is only the sample's
#                                 image list)
#   .cache/eval/middlebury_motorcycle/  motorcycle_left.png motorcycle_right.png motorcycle_disp.npz
#                                 (Middlebury 2014 Motorcycle, 741x500, as bundled in the scikit-image wheel
#                                 on PyPI, pinned below; float disparity in px, inf = unknown)
# Aloe and Motorcycle have ground truth: they are EVALUATION ONLY (never train, tune or take textures from it).  The chessboard
# pairs have no ground truth, so they may be trained on self-supervised (calibrate + rectify them first:
# python -m scene_perception.data.datasets.chessboard .cache/eval/chessboard \
#   .cache/real_unlabelled/chessboard_rectified --scale 0.5; then train stereo --mode mixed --dataset
# folder:.cache/real_unlabelled/chessboard_rectified), besides calibration / CameraInfo checks.
# Idempotent: files already in place are kept and nothing is downloaded when everything is there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
aloe=.cache/eval/middlebury_aloe
chess=.cache/eval/chessboard
moto=.cache/eval/middlebury_motorcycle
aloe_files=(aloeL.jpg aloeR.jpg aloeGT.png)
moto_files=(motorcycle_left.png motorcycle_right.png motorcycle_disp.npz)
SKIMAGE_WHEEL=scikit-image==0.26.0
py=python3
[ -x .venv/bin/python ] && py=.venv/bin/python

complete() {
  local f
  for f in "${aloe_files[@]}"; do [ -s "$aloe/$f" ] || return 1; done
  for f in "${moto_files[@]}"; do [ -s "$moto/$f" ] || return 1; done
  [ -s "$chess/stereo_calib.xml" ] && ls "$chess"/left[0-9][0-9].jpg >/dev/null 2>&1
}
if complete; then
  echo "eval data: already in $aloe, $moto and $chess"
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# apt downloads as its sandbox user _apt when it can write the target directory (else it warns and
# downloads as root); give it the private temp dir rather than making the dir world-writable.
if [ "$(id -u)" = 0 ] && id _apt >/dev/null 2>&1; then chown _apt "$tmp"; fi
(cd "$tmp" && apt-get download opencv-doc >/dev/null)
dpkg -x "$tmp"/opencv-doc_*.deb "$tmp/x"
# Motorcycle: only the three data files of the wheel are kept (nothing is installed).
"$py" -m pip download -q --no-deps --only-binary :all: -d "$tmp/wheel" "$SKIMAGE_WHEEL"
mkdir -p "$moto"
"$py" - "$tmp"/wheel/scikit_image-*.whl "$moto" "${moto_files[@]}" <<'PY'
import sys, zipfile
from pathlib import Path
wheel, out, names = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
with zipfile.ZipFile(wheel) as z:
    for n in names:
        (out / n).write_bytes(z.read(f"skimage/data/{n}"))
PY
(cd "$moto" && sha256sum -c --quiet <<'SUMS'
2e49c8cebff3fa20359a0cc6880c82e1c03bbb106da81a177218281bc2f113d7  motorcycle_disp.npz
db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179  motorcycle_left.png
5fc913ae870e42a4b662314bc904d1786bcad8e2f0b9b67dba5a229406357797  motorcycle_right.png
SUMS
) || { echo "error: Motorcycle files from $SKIMAGE_WHEEL do not match their sha256" >&2; rm -rf "$moto"; exit 1; }
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
echo "eval data: Aloe in $aloe, Motorcycle in $moto, $(ls "$chess"/left[0-9][0-9].jpg | wc -l) chessboard pairs in $chess"
