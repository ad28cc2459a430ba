"""Middlebury 2006 Aloe (from Debian's opencv-doc, ``tools/fetch_eval_data.sh``) in the MiddEval3 layout, so
``scene-perception eval --dataset middlebury`` can score the one real pair with GT on hand.  Evaluation only.

Writes ``<out>/trainingF/Aloe`` (1282x1110, the files as fetched) and ``<out>/trainingH/Aloe`` (641x555:
images shrunk with INTER_AREA, GT with nearest neighbour and halved): ``im0.png``, ``im1.png``,
``disp0GT.pfm`` (inf where the PNG has 0 = unknown) and a ``calib.txt`` with only ``width``, ``height`` and
``ndisp``: Aloe ships no calibration, so no camera is made up; ``ndisp`` is
``stereo_accuracy.py``'s width rule (0.2 x 1282 rounded to 16 = 256 px), never taken from the GT.  Both
folders carry the *full-resolution* calib (as the brief for MiddEval3 H/Q describes it), so the reader's
width scaling gives 128 px at H.  Aloe has no occlusion mask, so no non-occluded numbers.

    python -m scene_perception.data.datasets.convert .cache/eval/middlebury_aloe .cache/eval/middlebury
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from scene_perception.data.datasets.pfm import write_pfm
from scene_perception.data.datasets.real_pairs import RANGE_FRACTION, range_from_width
from scene_perception.data.datasets.sample import DatasetError

__all__ = ["ALOE_RANGE_FRACTION", "aloe_to_middlebury"]

#: ``benchmarks/stereo_accuracy.py``'s default ``--range-fraction``: the range from the width alone.
ALOE_RANGE_FRACTION = RANGE_FRACTION


def aloe_to_middlebury(src: str | Path, out: str | Path, resolutions: tuple[str, ...] = ("F", "H")) -> Path:
    """Convert ``src`` (aloeL.jpg, aloeR.jpg, aloeGT.png) into ``out/training<R>/Aloe`` for each of
    ``resolutions`` (F, H, Q); returns ``out``.  Idempotent (files are rewritten)."""
    src, out = Path(src), Path(out)
    paths = [src / n for n in ("aloeL.jpg", "aloeR.jpg", "aloeGT.png")]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise DatasetError(f"Aloe files {missing} not in {src}; run `bash tools/fetch_eval_data.sh`")
    left, right = (cv2.imread(str(p), cv2.IMREAD_COLOR) for p in paths[:2])
    gt_png = cv2.imread(str(paths[2]), cv2.IMREAD_UNCHANGED)
    if left is None or right is None or gt_png is None or gt_png.ndim != 2:
        raise DatasetError(f"unreadable Aloe files in {src}")
    gt = gt_png.astype(np.float32)
    gt[gt_png == 0] = np.inf
    h, w = gt.shape
    calib = f"width={w}\nheight={h}\nndisp={range_from_width(w)}\n"
    for res in resolutions:
        factor = {"F": 1, "H": 2, "Q": 4}[res]
        scene = out / f"training{res}" / "Aloe"
        scene.mkdir(parents=True, exist_ok=True)
        size = (round(w / factor), round(h / factor))
        if factor == 1:
            images, disp = (left, right), gt
        else:
            images = tuple(cv2.resize(img, size, interpolation=cv2.INTER_AREA) for img in (left, right))
            disp = cv2.resize(gt, size, interpolation=cv2.INTER_NEAREST) * np.float32(size[0] / w)
        cv2.imwrite(str(scene / "im0.png"), images[0])
        cv2.imwrite(str(scene / "im1.png"), images[1])
        write_pfm(scene / "disp0GT.pfm", disp)
        (scene / "calib.txt").write_text(calib, encoding="ascii")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Aloe (opencv-doc) -> MiddEval3 layout, evaluation only")
    p.add_argument("src", nargs="?", default=".cache/eval/middlebury_aloe")
    p.add_argument("out", nargs="?", default=".cache/eval/middlebury")
    p.add_argument("--resolutions", default="FH", help="any of F, H, Q (default FH)")
    args = p.parse_args(argv)
    try:
        out = aloe_to_middlebury(args.src, args.out, tuple(args.resolutions.upper()))
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {', '.join(str(out / f'training{r}' / 'Aloe') for r in args.resolutions.upper())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
