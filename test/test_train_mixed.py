"""``train stereo --mode mixed``: supervised loss on the samples with GT, self-supervised (with an occlusion
mask) on those without, in one run (scene_perception/training/stereo.py).

Runs are 1-3 steps of the lite model on 64x128 crops; the unlabelled pairs are procedural pairs written as
PNGs without their GT into a folder (``--dataset folder:DIR``).  Besides the run itself: a batch with GT only
is exactly a ``supervised`` step and one without GT (occlusion mask off) exactly a ``self_supervised`` step
(same weights, bit for bit), and ``supervised`` / ``self_supervised`` give the step-1 losses they gave before
the mixed mode existed (measured on the commit before it; rel 1e-5 leaves room for another CPU's rounding).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import cv2
import pytest
import torch
from safetensors.torch import load_file

from scene_perception.data.procedural import make_stereo_sample
from scene_perception.losses.stereo import left_right_visibility
from scene_perception.training.stereo import LOG_NAME, TrainConfig, build_parser, train_stereo


def _tiny(out_dir: Path, **overrides) -> TrainConfig:
    base = {
        "model": "lite", "steps": 3, "batch_size": 2, "crop_height": 64, "crop_width": 128,
        "max_disparity": 24.0, "checkpoint_every": 10, "num_threads": 1, "progress": False,
        "warmup_steps": 0, "lr_schedule": "constant", "log_every": 1, "out_dir": str(out_dir),
    }
    base.update(overrides)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three procedural pairs (160x96, disparity <= 20 px) as PNGs, their GT thrown away."""
    root = tmp_path_factory.mktemp("unlabelled")
    for i in range(3):
        s = make_stereo_sample(seed=100 + i, width=160, height=96, max_disparity=20.0)
        cv2.imwrite(str(root / f"left{i:02d}.png"), s.left[..., ::-1])
        cv2.imwrite(str(root / f"right{i:02d}.png"), s.right[..., ::-1])
    return root


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / LOG_NAME).read_text().splitlines()]


def _same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.mark.slow
def test_mixed_run_logs_both_parts(tmp_path: Path, folder: Path) -> None:
    """3 steps of synthetic pairs (GT) and folder pairs (none): finite losses, both parts in the log, each
    where its kind of sample was in the batch; the card records the mode."""
    out = tmp_path / "mixed"
    final = train_stereo(_tiny(out, mode="mixed", dataset=f"folder:{folder}:1", unlabelled_weight=0.5))
    rows = _log(out)
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert math.isfinite(r["loss"]) and r["loss"] > 0
        assert {"sup", "l1", "nll", "self_sup", "photo", "smooth", "lrc", "self_nll", "occluded",
                "unlabelled"} <= r.keys()
        assert (r["sup"] is None) == (r["unlabelled"] == 1.0) and (r["epe"] is None) == (r["sup"] is None)
        assert (r["self_sup"] is None) == (r["unlabelled"] == 0.0)
        if r["self_sup"] is not None:
            assert all(math.isfinite(r[k]) for k in ("self_sup", "photo", "smooth", "lrc", "self_nll"))
            assert 0.0 <= r["occluded"] <= 1.0
    # With seed 0 the draws give both kinds: an all-unlabelled step and at least one step with GT.
    assert any(r["unlabelled"] == 1.0 for r in rows) and any(r["unlabelled"] < 1.0 for r in rows)
    card = json.loads(final.with_suffix(".json").read_text())
    assert card["training"]["mode"] == "mixed" and card["training"]["config"]["unlabelled_weight"] == 0.5
    assert math.isfinite(card["metrics"]["train_epe_px"])  # over the steps that had GT only


def test_mixed_without_unlabelled_samples_is_supervised(tmp_path: Path, folder: Path) -> None:
    """A folder weight so small that no folder pair is drawn: every batch has GT, and the run is the
    supervised one bit for bit (with and without the cost-volume loss)."""
    spec = f"folder:{folder}:1e-9"
    for extra in ({}, {"volume_weight": 0.5}):
        name = "volume" if extra else "plain"
        mixed = train_stereo(_tiny(tmp_path / f"mixed_{name}", mode="mixed", dataset=spec, **extra))
        sup = train_stereo(_tiny(tmp_path / f"sup_{name}", dataset=spec, **extra))
        assert all(r["unlabelled"] == 0.0 and r["self_sup"] is None for r in _log(tmp_path / f"mixed_{name}"))
        assert _same_weights(mixed, sup)
        sup_rows = _log(tmp_path / f"sup_{name}")
        for a, b in zip(_log(tmp_path / f"mixed_{name}"), sup_rows, strict=True):
            assert a["loss"] == b["loss"] and a["l1"] == b["l1"] and a["sup"] == b["loss"]


def test_mixed_without_labelled_samples_is_self_supervised(tmp_path: Path, folder: Path) -> None:
    """Folder pairs only (synthetic weight 0) and the occlusion mask off: the self_supervised run bit for bit;
    with the mask (mixed's default) the run differs."""
    spec = f"folder:{folder}"
    plain = train_stereo(_tiny(tmp_path / "self", mode="self_supervised", dataset=spec, synthetic_weight=0.0))
    mixed = train_stereo(_tiny(tmp_path / "mixed", mode="mixed", dataset=spec, synthetic_weight=0.0,
                               occlusion_check_px=0.0))
    assert _same_weights(mixed, plain)
    for a, b in zip(_log(tmp_path / "mixed"), _log(tmp_path / "self"), strict=True):
        assert a["loss"] == b["loss"] and a["photo"] == b["photo"] and a["self_nll"] == b["nll"]
        assert a["sup"] is None and a["unlabelled"] == 1.0 and "occluded" not in a
    masked = train_stereo(_tiny(tmp_path / "masked", mode="mixed", dataset=spec, synthetic_weight=0.0))
    assert not _same_weights(masked, plain)
    assert all(0.0 < r["occluded"] < 1.0 for r in _log(tmp_path / "masked"))


# Step-1 values of the commit before the mixed mode (same seed, data and init).
BEFORE = {
    "supervised": ({}, {"loss": 57.09707260131836, "l1": 55.5570182800293, "nll": 15.400550842285156}),
    "volume": ({"volume_weight": 0.5}, {"loss": 58.97780990600586, "volume": 3.761474847793579}),
    "self_supervised": ({"mode": "self_supervised"},
                        {"loss": 0.9618854522705078, "photo": 0.30403250455856323,
                         "smooth": 0.059625498950481415, "lrc": 0.08275532722473145,
                         "nll": 2.710054874420166}),
}


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_other_modes_unchanged(tmp_path: Path, name: str) -> None:
    overrides, expected = BEFORE[name]
    train_stereo(_tiny(tmp_path, steps=1, **overrides))
    row = _log(tmp_path)[0]
    assert set(row) <= {"step", "lr", "loss", "epe", "l1", "nll", "volume", "photo", "smooth", "lrc",
                        "samples_per_s", "pairs_per_s", "data_wait_frac", "elapsed_s"}  # no mixed columns
    for key, value in expected.items():
        assert row[key] == pytest.approx(value, rel=1e-5), key


def test_left_right_visibility_flags_the_occluded_band() -> None:
    """Background at d=2 with a foreground strip at d=10 (left x 30..39): the left pixels whose match the
    strip hides in the right view (x 22..29) fail the check, and the right pixels 30..37 hidden in the left
    view; everything else passes."""
    w = 64
    d_left = torch.full((1, 1, 4, w), 2.0)
    d_left[..., 30:40] = 10.0
    d_right = torch.full((1, 1, 4, w), 2.0)
    d_right[..., 20:30] = 10.0
    vis_l, vis_r = left_right_visibility(d_left, d_right)
    expected_l = torch.ones(w, dtype=torch.bool)
    expected_l[22:30] = False
    expected_r = torch.ones(w, dtype=torch.bool)
    expected_r[30:38] = False
    assert torch.equal(vis_l[0, 0, 0], expected_l) and torch.equal(vis_r[0, 0, 0], expected_r)
    assert vis_l.shape == d_left.shape and vis_l.dtype == torch.bool
    flat = torch.full((1, 1, 4, w), 5.0)
    assert all(v.all() for v in left_right_visibility(flat, flat))  # consistent views: nothing occluded


def test_config_validation_and_cli(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ValueError, match="needs --dataset"):
        _tiny(Path("unused"), mode="mixed").validate()
    with pytest.raises(ValueError, match="unlabelled_weight"):
        _tiny(Path("unused"), unlabelled_weight=-1.0).validate()
    with pytest.raises(ValueError, match="occlusion_check_px"):
        _tiny(Path("unused"), occlusion_check_px=-1.0).validate()
    with caplog.at_level(logging.WARNING, logger="scene_perception.training.stereo"):
        _tiny(Path("unused"), mode="mixed", dataset="kitti2015:/nowhere").validate()
    assert "without a folder dataset" in caplog.text
    assert _tiny(Path("unused"), mode="mixed").occlusion_px == 1.0
    assert _tiny(Path("unused"), mode="self_supervised").occlusion_px == 0.0
    ns = vars(build_parser().parse_args(["--mode", "mixed", "--dataset", "folder:x:0.5",
                                         "--unlabelled-weight", "0.25", "--occlusion-check-px", "2"]))
    ns.pop("log_level")
    cfg = TrainConfig(**ns)
    assert (cfg.mode, cfg.unlabelled_weight, cfg.occlusion_check_px) == ("mixed", 0.25, 2.0)
