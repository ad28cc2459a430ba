"""Evaluation metrics, background hole filling, the SGBM baseline wrapper and a benchmark smoke run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from evalutil import load_benchmark

from scene_perception.evaluation import (
    depth_metrics,
    disparity_metrics,
    fill_holes_background,
    pool_metrics,
)
from scene_perception.pipelines.sgbm import SGBMMatcher, num_disparities_for, upsample_disparity

NAN = float("nan")


# ----------------------------------------------------------------------------------------- disparity
def test_epe_and_bad_thresholds_are_strict() -> None:
    gt = np.full((1, 5), 10.0, np.float32)
    err = np.array([[1.0, 2.0, 3.0, 4.0, 4.5]], np.float32)
    m = disparity_metrics(gt + err, gt)
    assert m["epe"] == pytest.approx(err.mean())
    # |err| > x strictly: an error of exactly x px is not bad-x.
    assert m["bad1"] == pytest.approx(80.0)
    assert m["bad2"] == pytest.approx(60.0)
    assert m["bad3"] == pytest.approx(40.0)
    assert m["bad4"] == pytest.approx(20.0)
    assert m["density"] == 100.0 and m["n_pixels"] == 5 and m["n_scored"] == 5


def test_epe_sign_independent() -> None:
    gt = np.array([[20.0, 20.0, 20.0, 20.0]])
    pred = gt + np.array([[0.5, -1.0, 2.0, -3.0]])
    assert disparity_metrics(pred, gt)["epe"] == pytest.approx(1.625)


def test_d1_needs_both_absolute_and_relative_error() -> None:
    gt = np.array([[100.0, 50.0, 10.0, 10.0]])
    err = np.array([[4.0, 4.0, 3.5, 3.0]])
    # 4 px at 100 px is only 4 % (not an outlier); 4 px at 50 px is 8 %; 3.5 > 3 px and 35 %; 3.0 is not > 3.
    assert disparity_metrics(gt + err, gt)["d1"] == pytest.approx(50.0)


def test_nan_prediction_lowers_density_not_accuracy() -> None:
    gt = np.full((2, 5), 30.0)
    pred = gt + 0.5
    pred[0, :2] = np.nan
    pred[1, 4] = np.inf
    m = disparity_metrics(pred, gt)
    assert m["n_pixels"] == 10 and m["n_scored"] == 7
    assert m["density"] == pytest.approx(70.0)
    assert m["epe"] == pytest.approx(0.5) and m["bad1"] == 0.0


def test_mask_and_invalid_gt_are_not_evaluated() -> None:
    gt = np.array([[10.0, 10.0, NAN, 10.0]])
    pred = np.array([[10.0, 90.0, 10.0, NAN]])
    mask = np.array([[True, False, True, True]])
    m = disparity_metrics(pred, gt, mask)
    assert m["n_pixels"] == 2  # the masked-out pixel and the NaN-GT pixel are not evaluated
    assert m["n_scored"] == 1 and m["density"] == pytest.approx(50.0)
    assert m["epe"] == 0.0 and m["bad1"] == 0.0


def test_nothing_scored_is_nan_not_perfect() -> None:
    m = disparity_metrics(np.full((2, 2), np.nan), np.ones((2, 2)))
    assert math.isnan(m["epe"]) and math.isnan(m["bad2"]) and m["density"] == 0.0


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="shape"):
        disparity_metrics(np.zeros((4, 4, 1)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="mask"):
        disparity_metrics(np.zeros((4, 4)), np.zeros((4, 4)), np.ones((4, 3), bool))


def test_pool_metrics_equals_scoring_all_pixels_together() -> None:
    rng = np.random.default_rng(0)
    gts = [rng.uniform(5, 60, (4, 7)), rng.uniform(5, 60, (3, 9))]
    preds = [g + rng.normal(0, 3, g.shape) for g in gts]
    preds[1][0, :4] = np.nan
    pooled = pool_metrics([disparity_metrics(p, g) for p, g in zip(preds, gts, strict=True)])
    together = disparity_metrics(
        np.concatenate([p.ravel() for p in preds]), np.concatenate([g.ravel() for g in gts])
    )
    for key in ("epe", "bad1", "bad2", "bad3", "bad4", "d1", "density", "n_pixels", "n_scored"):
        assert pooled[key] == pytest.approx(together[key])


# ----------------------------------------------------------------------------------------- hole filling
def test_fill_holes_takes_background_side() -> None:
    row = np.array([[np.nan, 5.0, np.nan, np.nan, 2.0, np.nan, 7.0, np.nan]], np.float32)
    before = row.copy()
    filled = fill_holes_background(row)
    # Between 5 and 2 the smaller (farther) disparity wins; borders take their only neighbour.
    np.testing.assert_array_equal(filled, [[5.0, 5.0, 2.0, 2.0, 2.0, 2.0, 7.0, 7.0]])
    np.testing.assert_array_equal(np.isnan(row), np.isnan(before))  # input untouched
    assert filled.dtype == np.float32


def test_fill_holes_empty_rows_and_empty_map() -> None:
    disp = np.array([[3.0, np.nan], [np.nan, np.nan], [np.nan, 1.0]], np.float32)
    filled = fill_holes_background(disp)
    assert np.isfinite(filled).all()
    # Rows first ([3, 3] and [1, 1]), then the empty row along columns: the smaller of above/below.
    np.testing.assert_array_equal(filled, [[3.0, 3.0], [1.0, 1.0], [1.0, 1.0]])
    assert np.isnan(fill_holes_background(np.full((2, 3), np.nan))).all()


# ----------------------------------------------------------------------------------------- depth
def test_depth_metrics() -> None:
    gt = np.array([[1.0, 2.0, 4.0, 0.0, np.inf]])
    exact = depth_metrics(gt.copy(), gt)
    assert exact["abs_rel"] == 0.0 and exact["rmse"] == 0.0 and exact["delta1"] == 1.0
    assert exact["n_pixels"] == 3  # zero and infinite GT are not evaluated
    double = depth_metrics(2.0 * gt, gt)
    assert double["abs_rel"] == pytest.approx(1.0)
    assert double["sq_rel"] == pytest.approx((1.0 + 2.0 + 4.0) / 3.0)
    assert double["rmse"] == pytest.approx(math.sqrt((1.0 + 4.0 + 16.0) / 3.0))
    assert double["rmse_log"] == pytest.approx(math.log(2.0))
    assert double["delta1"] == 0.0
    pred = gt.copy()
    pred[0, 0] = np.nan
    sparse = depth_metrics(pred, gt, mask=np.array([[True, True, False, True, True]]))
    assert sparse["n_pixels"] == 2 and sparse["n_scored"] == 1 and sparse["density"] == pytest.approx(50.0)


# ----------------------------------------------------------------------------------------- SGBM
def shifted_texture(h: int, w: int, disparity: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Blurred colour noise and a copy shifted by ``disparity`` px: left(x) = right(x - d) everywhere."""
    rng = np.random.default_rng(seed)
    tex = cv2.GaussianBlur(rng.integers(0, 256, (h, w + disparity, 3), dtype=np.uint8), (0, 0), 1.0)
    return np.ascontiguousarray(tex[:, :w]), np.ascontiguousarray(tex[:, disparity:])


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_sgbm_recovers_constant_disparity(scale: float) -> None:
    d = 12
    left, right = shifted_texture(96, 192, d)
    matcher = SGBMMatcher(32, scale=scale)
    disp = matcher(left, right)
    assert disp.shape == (96, 192) and disp.dtype == np.float32
    assert np.isnan(disp).any()  # the unsearchable left border is invalid, not a bogus -1
    core = disp[:, 40:]
    assert np.isfinite(core).mean() > 0.9
    assert abs(float(np.nanmedian(core)) - d) < 0.5


def test_sgbm_settings_and_upsampling() -> None:
    assert num_disparities_for(96) == 96 and num_disparities_for(100) == 112 and num_disparities_for(3) == 16
    assert SGBMMatcher(224, scale=0.5).num_disparities == 112
    cfg = SGBMMatcher(64).config
    assert (cfg.block_size, cfg.p1, cfg.p2) == (5, 8 * 3 * 25, 32 * 3 * 25)
    assert (cfg.uniqueness_ratio, cfg.speckle_window_size, cfg.speckle_range) == (10, 100, 2)
    small = np.array([[1.0, np.nan], [2.0, 3.0]], np.float32)
    up = upsample_disparity(small, (4, 4))
    np.testing.assert_array_equal(np.isnan(up), np.kron(np.isnan(small), np.ones((2, 2))).astype(bool))
    assert up[0, 0] == 2.0 and up[3, 3] == 6.0  # values scale with the width ratio


# ----------------------------------------------------------------------------------------- benchmark
def test_benchmark_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from scene_perception.models.gcnet import CONFIGS, GCNet
    from scene_perception.models.weights import save_stereo_model

    torch.manual_seed(0)
    weights = tmp_path / "lite.safetensors"
    save_stereo_model(GCNet(CONFIGS["lite"]), weights, {"trained": False})
    bench = load_benchmark("stereo_accuracy")
    out = tmp_path / "acc.json"
    # A Motorcycle stand-in in the fetched layout (rendered, so the test needs no download).
    from evalutil import write_motorcycle_standin

    moto = tmp_path / "moto"
    write_motorcycle_standin(moto, seed=20_000_005)
    results = bench.main([
        "--weights", str(weights), "--synthetic-pairs", "2", "--synthetic-size", "64x128",
        "--synthetic-max-disparity", "32", "--train-samples", "1000", "--aloe-dir", str(tmp_path / "absent"),
        "--motorcycle-dir", str(moto), "--repeats", "1", "--threads", "1", "--json", str(out),
    ])
    text = capsys.readouterr().out
    assert "UNTRAINED" in text and "| SGBM_3WAY filled |" in text
    assert "fetch_eval_data.sh" in text  # Aloe absent: says how to get it
    assert results["aloe"] is None and results["model"]["trained"] is False
    methods = [r["method"] for r in results["synthetic"]["rows"]]
    assert methods == ["ours (dense)", "SGBM_3WAY sparse", "SGBM_3WAY filled"]
    assert results["synthetic"]["rows"][0]["density"] == 100.0
    assert results["synthetic"]["rows"][2]["density"] == 100.0
    assert results["goals"][0]["goal"].startswith("synthetic EPE")
    saved = json.loads(out.read_text())
    assert saved["synthetic"]["pairs"] == 2 and saved["synthetic"]["seeds"][0] >= 10_000_000
    assert "## Middlebury 2014 Motorcycle 160x96" in text
    m = saved["motorcycle"]
    assert m["name"] == "Motorcycle" and m["size"] == [96, 160] and m["range_full"] == 32
    assert [r["method"] for r in m["rows"][:2]] == ["ours (dense)", "ours (dense)"]
    assert all(0.0 <= r["bad2"] <= 100.0 for r in m["rows"])
    # How ours ran each input: the gate is off by default (no residual), the half input at scale 1.
    runs = [r["run"] for r in m["rows"][:2]]
    assert [r["refinement_gated"] for r in runs] == [False, False] and runs[1]["scale"] == 1.0
    assert "Ours' network run: 160x96: scale" in text


def test_held_out_check_catches_training_seed() -> None:
    bench = load_benchmark("stereo_accuracy")
    train_item = int(np.random.SeedSequence([0, 7]).generate_state(1)[0])
    with pytest.raises(RuntimeError, match="training item 7"):
        bench.check_held_out([train_item], train_seed=0, train_samples=10)
    bench.check_held_out(bench.held_out_seeds(3), train_seed=0, train_samples=10)


def test_benchmark_validation_split_chooses_without_touching_test_data(tmp_path: Path) -> None:
    """The validation split scores other seeds, never Aloe, sets no goals and cannot write a card; a
    regression-window override scores the same weights with another setting."""
    import torch

    from scene_perception.models.gcnet import CONFIGS, GCNet
    from scene_perception.models.weights import save_stereo_model

    torch.manual_seed(0)
    weights = tmp_path / "lite.safetensors"
    save_stereo_model(GCNet(CONFIGS["lite"]), weights, {"trained": False})
    aloe = tmp_path / "aloe"
    aloe.mkdir()  # present-but-bogus Aloe files: reading them would raise, so not reading them is visible
    for name in ("aloeL.jpg", "aloeR.jpg", "aloeGT.png", "motorcycle_left.png", "motorcycle_right.png",
                 "motorcycle_disp.npz"):
        (aloe / name).write_bytes(b"not an image")
    bench = load_benchmark("stereo_accuracy")
    common = ["--weights", str(weights), "--synthetic-pairs", "2", "--synthetic-size", "64x128",
              "--synthetic-max-disparity", "32", "--train-samples", "100", "--aloe-dir", str(aloe),
              "--motorcycle-dir", str(aloe), "--threads", "1"]
    plain = bench.main([*common, "--split", "validation", "--regression-window", "0"])
    windowed = bench.main([*common, "--split", "validation", "--regression-window", "3"])
    assert plain["synthetic"]["split"] == "validation" and plain["synthetic"]["seeds"][0] == 20_000_000
    assert plain["aloe"] is None and plain["motorcycle"] is None and plain["goals"] == []
    assert (plain["model"]["regression_window"], windowed["model"]["regression_window"]) == (0, 3)
    assert plain["synthetic"]["rows"][0]["epe"] != windowed["synthetic"]["rows"][0]["epe"]
    sgbm = [{k: v for k, v in r["synthetic"]["rows"][1].items() if k != "ms"} for r in (plain, windowed)]
    assert sgbm[0] == sgbm[1]  # SGBM saw the same pairs
    with pytest.raises(SystemExit):
        bench.main([*common, "--split", "validation", "--update-card", str(tmp_path / "lite.json")])
    with pytest.raises(SystemExit):
        bench.main([*common, "--regression-window", "2", "--update-card", str(tmp_path / "lite.json")])


def test_sgbm_full_width_answers_in_the_band_plain_sgbm_leaves_empty() -> None:
    """``match_full_width`` fills the first num_disparities columns; elsewhere it agrees with ``match``."""
    rng = np.random.default_rng(11)
    tex = cv2.GaussianBlur(rng.random((60, 260)).astype(np.float32), (0, 0), 1.0)
    tex = (255 * (tex - tex.min()) / np.ptp(tex)).astype(np.uint8)
    left = np.repeat(tex[:, 40:240, None], 3, axis=2)
    right = np.repeat(tex[:, 50:250, None], 3, axis=2)  # left(x) = right(x - 10): disparity 10
    matcher = SGBMMatcher(32.0)
    plain, full = matcher.match(left, right), matcher.match_full_width(left, right)
    assert full.shape == plain.shape == (60, 200)
    assert np.isnan(plain[:, :32]).all()
    band = full[4:-4, 14:32]  # x >= d + block radius: the match lies inside the right image
    assert np.isfinite(band).mean() > 0.9 and np.nanmedian(np.abs(band - 10.0)) < 0.5
    both = np.isfinite(plain[:, 64:]) & np.isfinite(full[:, 64:])
    assert both.mean() > 0.9 and (np.abs(plain[:, 64:] - full[:, 64:])[both] < 0.5).mean() > 0.98


def test_refinement_set_changes_one_field_and_refuses_typos() -> None:
    """stereo_accuracy --refinement-set: score a non-default refinement; a typo is an error, not ignored."""
    from scene_perception.pipelines.local_refinement_config import DEFAULT_LOCAL_REFINEMENT

    bench = load_benchmark("stereo_accuracy")
    cfg = bench.refinement_setting(["min_x_snr=8", "sgbm_candidate=false"])
    assert cfg.min_x_snr == 8.0 and cfg.sgbm_candidate is False
    assert cfg.radius == DEFAULT_LOCAL_REFINEMENT.radius
    with pytest.raises(ValueError, match="min_x_snr"):
        bench.refinement_setting(["min_x_snrr=8"])
    args = bench.parse_args(["--refinement-set", "iterations=1"])
    assert args.refinement.iterations == 1
    with pytest.raises(SystemExit):
        bench.parse_args(["--refinement-set", "iterations=1", "--update-card", "x.md"])
