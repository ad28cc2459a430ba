"""Dataset evaluation (issue 23): metrics against numbers computed by hand on tiny arrays, pooling, the
range rule, the JSON / report of a run, the CLI's dataset mode, and one smoke run on Middlebury Aloe (from
Debian's opencv-doc, converted to the MiddEval3 layout; evaluation only)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from scene_perception.data.datasets import DatasetSample, open_dataset, write_pfm
from scene_perception.data.datasets.convert import aloe_to_middlebury
from scene_perception.evaluation.dataset_eval import (
    add_counts,
    disparity_range,
    error_counts,
    evaluate_dataset,
    rates,
    write_report,
)

REPO = Path(__file__).resolve().parents[1]
ALOE = REPO / ".cache" / "eval" / "middlebury_aloe"
NAN = np.nan


# ----------------------------------------------------------------------------------------- by hand
def test_rates_by_hand() -> None:
    gt = np.array([[10.0, 10.0, 10.0, 100.0],
                   [10.0, 10.0, NAN, 100.0]])
    pred = np.array([[10.4, 11.0, 12.5, 104.0],
                     [NAN, 6.0, 50.0, 106.0]])
    # Evaluated: the 7 pixels with GT.  Errors where predicted: 0.4, 1.0, 2.5, 4.0, 4.0, 6.0; one missing.
    m = rates(error_counts(pred, gt))
    assert m["n_pixels"] == 7 and m["n_scored"] == 6 and m["density"] == pytest.approx(600 / 7)
    assert m["epe"] == pytest.approx((0.4 + 1.0 + 2.5 + 4.0 + 4.0 + 6.0) / 6)
    assert m["rms"] == pytest.approx(math.sqrt((0.16 + 1 + 6.25 + 16 + 16 + 36) / 6))
    # bad-x: errors > x (strict) plus the missing pixel, over all 7.
    assert m["bad0_5"] == pytest.approx(100 * (5 + 1) / 7)  # 1.0, 2.5, 4, 4, 6 and the hole
    assert m["bad1"] == pytest.approx(100 * (4 + 1) / 7)  # 1.0 is not > 1
    assert m["bad2"] == pytest.approx(100 * (4 + 1) / 7)
    assert m["bad3"] == pytest.approx(100 * (3 + 1) / 7)
    assert m["bad4"] == pytest.approx(100 * (1 + 1) / 7)  # 4.0 is not > 4
    # D1: > 3 px and > 5 % of GT: 4.0 at GT 10 (40 %) yes; 4.0 at GT 100 (4 %) no; 6.0 at GT 100 (6 %) yes.
    assert m["d1"] == pytest.approx(100 * (2 + 1) / 7)


def test_mask_and_empty() -> None:
    gt = np.array([[1.0, 2.0], [3.0, NAN]])
    pred = np.array([[1.0, 5.0], [3.0, 3.0]])
    mask = np.array([[True, False], [True, True]])
    m = rates(error_counts(pred, gt, mask))
    assert m["n_pixels"] == 2 and m["epe"] == 0.0 and m["bad0_5"] == 0.0
    empty = rates(error_counts(pred, gt, np.zeros((2, 2), bool)))
    assert empty["n_pixels"] == 0 and math.isnan(empty["epe"]) and math.isnan(empty["bad2"])
    none = rates(error_counts(np.full((2, 2), NAN), gt))
    assert none["bad0_5"] == 100.0 and none["density"] == 0.0 and math.isnan(none["epe"])
    with pytest.raises(ValueError, match="shape"):
        error_counts(pred[:1], gt)
    with pytest.raises(ValueError, match="mask shape"):
        error_counts(pred, gt, mask[:1])


def test_pooling_is_pixel_weighted() -> None:
    rng = np.random.default_rng(0)
    gts = [rng.uniform(1, 50, (5, 7)), rng.uniform(1, 50, (3, 4))]
    preds = [g + rng.normal(0, 3, g.shape) for g in gts]
    preds[0][0, :3] = NAN
    gts[1][1, 1] = NAN
    pooled = None
    for p, g in zip(preds, gts, strict=True):
        pooled = add_counts(pooled, error_counts(p, g))
    together = error_counts(np.concatenate([preds[0].ravel(), preds[1].ravel()]),
                            np.concatenate([gts[0].ravel(), gts[1].ravel()]))
    a, b = rates(pooled), rates(together)
    for k in a:
        assert a[k] == pytest.approx(b[k]), k


def test_disparity_range_rule() -> None:
    img = np.zeros((2, 3, 3), np.uint8)
    gt = np.array([[1.0, 41.2, NAN], [3.0, 4.0, 5.0]], np.float32)
    assert disparity_range(DatasetSample("a", img, img, gt, max_disparity=96.0)) == (96.0, "dataset")
    assert disparity_range(DatasetSample("a", img, img, gt)) == (42.0, "gt max")
    assert disparity_range(DatasetSample("a", img, img)) == (None, "network")


# ----------------------------------------------------------------------------------------- a run
@dataclass
class _Result:
    disparity: np.ndarray
    disparity_std: np.ndarray
    valid: np.ndarray
    scale: float = 1.0


class _FakePipeline:
    """GT + 1.5 px everywhere (where GT is unknown: 0), so every number is known in advance."""

    network_max_disparity = 128.0

    def __init__(self, gts: dict[bytes, np.ndarray]) -> None:
        self.gts = gts
        self.max_disparity: float | None = None
        self.ranges: list[float | None] = []

    def __call__(self, left: np.ndarray, right: np.ndarray) -> _Result:
        self.ranges.append(self.max_disparity)
        gt = self.gts[left.tobytes()[:64]]
        d = np.where(np.isfinite(gt), gt + 1.5, 0.0).astype(np.float32)
        return _Result(d, np.ones_like(d), np.ones(d.shape, bool))


def _scene(d: Path, seed: int, w: int = 96, h: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    left = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    # The right view is the left shifted by 6 px, so SGBM has something to match.
    right = np.roll(left, -6, axis=1)
    d.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(d / "im0.png"), left[:, :, ::-1])
    cv2.imwrite(str(d / "im1.png"), right[:, :, ::-1])
    gt = np.full((h, w), 6.0, np.float32)
    gt[:2] = np.inf
    write_pfm(d / "disp0GT.pfm", gt)
    mask = np.full((h, w), 255, np.uint8)
    mask[:, :8] = 128
    cv2.imwrite(str(d / "mask0nocc.png"), mask)
    (d / "calib.txt").write_text(f"width={w}\nheight={h}\nndisp=32\n")
    return left, np.where(np.isfinite(gt), gt, np.nan)


def test_evaluate_dataset_json_and_report(tmp_path: Path) -> None:
    gts = {}
    for i, name in enumerate(("Adirondack", "Jadeplant")):
        left, gt = _scene(tmp_path / "trainingQ" / name, i)
        gts[left.tobytes()[:64]] = gt
    ds = open_dataset("middlebury", tmp_path)
    fake = _FakePipeline(gts)
    ev = evaluate_dataset(ds, fake, baseline="sgbm", worst=1, progress=False, settings={"model": "fake"})
    assert fake.ranges == [32.0, 32.0, 32.0]  # the warm-up call, then both scenes: calib ndisp
    doc = json.loads(json.dumps(ev.to_json()))
    assert doc["dataset"] == "middlebury" and doc["pairs"] == 2
    o = doc["overall"]
    assert o["epe"] == pytest.approx(1.5) and o["bad1"] == 100.0 and o["bad2"] == 0.0 and o["density"] == 100
    assert o["n_pixels"] == 2 * 38 * 96 and o["n_pixels_noc"] == 2 * 38 * 88
    assert o["epe_noc"] == pytest.approx(1.5)
    assert set(doc["methods"]) == {"ours", "sgbm", "sgbm_filled"}
    assert doc["methods"]["sgbm_filled"]["density"] == 100.0
    sgbm = doc["methods"]["sgbm"]
    # SGBM on an exact 6 px shift: right where it answers; its holes (the left border) count as errors.
    assert sgbm["epe"] < 0.5 and sgbm["density"] < 100.0
    assert sgbm["bad2"] == pytest.approx(100.0 - sgbm["density"], abs=1.0)
    s0 = doc["scenes"][0]
    assert s0["name"] == "trainingQ/Adirondack" and s0["range_source"] == "dataset" and s0["sgbm"]["ms"] > 0
    report = write_report(ev, tmp_path / "out", "scene-perception eval ...")
    text = report.read_text()
    assert "| ours (dense) |" in text and "| SGBM_3WAY hole-filled |" in text and "noc bad-2 %" in text
    assert (tmp_path / "out" / "figures" / "worst_1.png").is_file() and "figures/worst_1.png" in text


# ----------------------------------------------------------------------------------------- CLI
def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scene_perception.cli", "eval", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.mark.slow
def test_cli_dataset_mode_errors(tmp_path: Path) -> None:
    proc = _cli("--dataset", "middlebury")
    assert proc.returncode != 0 and "needs --root" in proc.stderr
    proc = _cli("--dataset", "middlebury", "--root", str(tmp_path), "--bag", str(tmp_path))
    assert proc.returncode != 0 and "two modes" in proc.stderr
    proc = _cli("--dataset", "kitti2015", "--root", str(tmp_path))
    assert proc.returncode != 0 and "no left/right image folders" in proc.stderr
    proc = _cli()
    assert proc.returncode != 0 and "--bag DIR" in proc.stderr


@pytest.mark.slow
@pytest.mark.skipif(not (ALOE / "aloeGT.png").is_file(),
                    reason="Aloe not fetched (bash tools/fetch_eval_data.sh, Debian opencv-doc)")
def test_cli_smoke_middlebury_aloe(tmp_path: Path) -> None:
    """The one real pair with GT on hand, half size (641x555), shipped weights, SGBM beside (evaluation
    only)."""
    root = aloe_to_middlebury(ALOE, tmp_path / "middlebury", resolutions=("H",))
    out, js = tmp_path / "eval", tmp_path / "aloe.json"
    proc = _cli("--dataset", "middlebury", "--root", str(root), "--baseline", "sgbm", "--threads", "2",
                "--out", str(out), "--json", str(js))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(js.read_text())
    assert doc["dataset"] == "middlebury" and doc["pairs"] == 1
    scene = doc["scenes"][0]
    assert scene["name"] == "trainingH/Aloe" and scene["max_disparity"] == 128  # ndisp 256 at F, halved
    ours, filled = doc["overall"], doc["methods"]["sgbm_filled"]
    assert ours["density"] == 100.0 and 60 < doc["methods"]["sgbm"]["density"] < 80
    # Measured 7.97 vs 13.20 % bad-2 (H px) when this test was written; generous bounds against drift.
    assert ours["bad2"] < 11.0 and ours["bad2"] < filled["bad2"]
    assert (out / "report.md").is_file() and (out / "figures" / "worst_1.png").is_file()
    assert "| ours (dense) |" in proc.stdout


# ----------------------------------------------------------------------------------------- semantics
def _cityscapes_frame(root: Path, stem: str, ids: np.ndarray, seed: int) -> None:
    """One Cityscapes val frame in its layout (left, right, gtFine labelIds, camera; no disparity)."""
    city = stem.split("_")[0]
    rng = np.random.default_rng(seed)
    h, w = ids.shape
    for side in ("left", "right"):
        path = root / f"{side}Img8bit" / "val" / city / f"{stem}_{side}Img8bit.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    path = root / "gtFine" / "val" / city / f"{stem}_gtFine_labelIds.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), ids)
    cam = {"extrinsic": {"baseline": 0.2}, "intrinsic": {"fx": 200.0, "fy": 200.0, "u0": w / 2, "v0": h / 2}}
    path = root / "camera" / "val" / city / f"{stem}_camera.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cam))


@dataclass
class _Labels:
    labels: np.ndarray


class _LabelPipeline:
    """Predicts one fixed class everywhere: the pooled IoUs can then be computed by hand."""

    def __init__(self, cls: int) -> None:
        self.cls = cls
        self.class_names: tuple[str, ...] = ()

    def __call__(self, image: np.ndarray) -> _Labels:
        return _Labels(np.full(image.shape[:2], self.cls, np.uint8))


def test_semantics_pooled_by_hand(tmp_path: Path) -> None:
    from scene_perception.data.datasets.cityscapes import map_cityscapes_labels

    # Cityscapes labelIds 7 = road, 26 = car, 0 = unlabelled (ignored); two frames of 4x8.
    a = np.full((4, 8), 7, np.uint8)
    a[:, 6:] = 26
    b = np.full((4, 8), 26, np.uint8)
    b[0] = 0
    _cityscapes_frame(tmp_path, "aachen_000000_000019", a, 0)
    _cityscapes_frame(tmp_path, "aachen_000001_000019", b, 1)
    ds = open_dataset("cityscapes", tmp_path)
    road, car = (int(v) for v in map_cityscapes_labels(np.array([7, 26])))
    assert ds[0].disparity is None and ds[0].semantic is not None

    names = [f"c{i}" for i in range(max(road, car) + 1)]
    labeller = _LabelPipeline(car)
    labeller.class_names = tuple(names)
    ev = evaluate_dataset(ds, _FakePipeline({}), progress=False, scene_pipeline=labeller)
    sem = ev.semantics
    assert ev.scenes == [] and ev.skipped_without_gt == 2  # no disparity GT: semantics only
    assert sem["frames"] == 2
    # Labelled pixels: road 24 (frame a), car 8 (a) + 24 (b, first row ignored) = 32; all predicted car.
    assert sem["per_class_iou"][names[car]] == pytest.approx(100 * 32 / 56)
    assert sem["per_class_iou"][names[road]] == 0.0
    assert sem["miou"] == pytest.approx(100 * (32 / 56 + 0) / 2)
    assert sem["pixel_accuracy"] == pytest.approx(100 * 32 / 56)
    assert sem["scenes"][1]["miou"] == 100.0  # frame b: only car, all right
    doc = json.loads(json.dumps(ev.to_json()))
    assert doc["semantics"]["frames"] == 2
    report = write_report(ev, tmp_path / "out").read_text()
    assert "## Semantics" in report and "mIoU %" in report


@pytest.mark.slow
def test_cli_cityscapes_scores_the_shipped_scene_network(tmp_path: Path) -> None:
    ids = np.full((64, 128), 7, np.uint8)  # road below, sky (23) above
    ids[:24] = 23
    _cityscapes_frame(tmp_path, "lindau_000000_000019", ids, 2)
    proc = _cli("--dataset", "cityscapes", "--root", str(tmp_path), "--out", str(tmp_path / "out"),
                "--device", "cpu", "--threads", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    sem = doc["semantics"]
    assert sem["frames"] == 1 and 0.0 <= sem["miou"] <= 100.0
    assert set(sem["per_class_iou"]) >= {"road", "sky"} and "mIoU" in proc.stdout
    assert doc["settings"]["scene_weights"] == "models/scene.safetensors"
