"""StereoDepthPipeline: input checks, padding/cropping, validity rules and disparity -> depth."""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from scene_perception.geometry.stereo_camera import StereoCamera
from scene_perception.models.gcnet import GCNet
from scene_perception.pipelines.local_refinement_config import LocalRefinementConfig
from scene_perception.pipelines.stereo_depth import (
    AUTO_MIN_DISPARITY_PX,
    StereoDepthPipeline,
    StereoDepthResult,
)


class ColumnModel(nn.Module):
    """Stand-in network with a known answer: disparity = scale * column, constant log-scale.

    It records the (padded) inputs so the test can check padding and what the pipeline fed it.
    """

    size_divisor = 16

    def __init__(self, scale: float = 0.5, log_scale: float = 0.0) -> None:
        super().__init__()
        self.scale, self.log_scale = scale, log_scale
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert left.shape[-2] % 16 == 0 and left.shape[-1] % 16 == 0
        self.seen.append((left.clone(), right.clone()))
        b, _, h, w = left.shape
        cols = torch.arange(w, dtype=torch.float32).expand(b, 1, h, w)
        return cols * self.scale, torch.full((b, 1, h, w), self.log_scale)


@pytest.fixture(scope="module")
def lite_pipeline() -> StereoDepthPipeline:
    torch.manual_seed(0)
    return StereoDepthPipeline(GCNet("lite"))


def _images(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    left = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return left, np.roll(left, -6, axis=1)  # right(x) = left(x + 6): disparity 6


def _camera(h: int, w: int) -> StereoCamera:
    return StereoCamera(
        width=w,
        height=h,
        fx=400.0,
        fy=400.0,
        cx=w / 2,
        cy=h / 2,
        cx_right=w / 2,
        baseline=0.12,
        frame_id="left_optical",
    )


def test_real_model_odd_size_is_cropped_back(lite_pipeline: StereoDepthPipeline) -> None:
    left, right = _images(241, 321)
    res = lite_pipeline(left, right)
    assert isinstance(res, StereoDepthResult)
    for arr in (res.disparity, res.disparity_std, res.valid):
        assert arr.shape == (241, 321)
    assert res.disparity.dtype == np.float32 and res.disparity_std.dtype == np.float32
    assert res.valid.dtype == np.bool_
    assert res.depth is None and res.depth_std is None and res.points is None
    assert res.inference_ms > 0
    assert np.isfinite(res.disparity).all() and (res.disparity_std > 0).all()
    # Untrained output is meaningless, but the column rule must still hold.
    cols = np.arange(321)[None, :]
    assert not (res.valid & (res.disparity > cols)).any()


def test_grey_input_is_replicated(lite_pipeline: StereoDepthPipeline) -> None:
    left, right = _images(48, 64)
    grey_l, grey_r = left[..., 0], right[..., 0]
    res_grey = lite_pipeline(grey_l, grey_r)
    res_rgb = lite_pipeline(np.repeat(grey_l[..., None], 3, 2), np.repeat(grey_r[..., None], 3, 2))
    np.testing.assert_array_equal(res_grey.disparity, res_rgb.disparity)


def test_input_validation() -> None:
    pipe = StereoDepthPipeline(ColumnModel())
    left, right = _images(40, 50)
    with pytest.raises(ValueError, match="differ in size"):
        pipe(left, right[:, :-1])
    with pytest.raises(ValueError, match="uint8"):
        pipe(left.astype(np.float32), right.astype(np.float32))
    with pytest.raises(ValueError, match="HxWx3"):
        pipe(np.zeros((40, 50, 4), np.uint8), np.zeros((40, 50, 4), np.uint8))
    with pytest.raises(ValueError, match="camera.scaled"):
        pipe(left, right, _camera(80, 100))


def test_replicate_padding_and_crop() -> None:
    model = ColumnModel(scale=0.5, log_scale=math.log(2.0))
    pipe = StereoDepthPipeline(model, local_refinement=None)  # the network's output, untouched
    left, right = _images(37, 45)
    res = pipe(left, right)
    assert not model.seen, "the engine runs its own copy; the caller's module is not touched"
    padded_left, padded_right = pipe.engine.runner.seen[-1]
    assert padded_left.shape == padded_right.shape == (1, 3, 48, 48)
    expect_left = torch.from_numpy(left).permute(2, 0, 1).float() / 255.0
    torch.testing.assert_close(padded_left[0, :, :37, :45], expect_left)
    # Replicate padding: the border repeats the last real column / row.
    torch.testing.assert_close(padded_left[0, :, :37, 45:], expect_left[:, :, -1:].expand(3, 37, 3))
    torch.testing.assert_close(padded_left[0, :, 37:, :45], expect_left[:, -1:, :].expand(3, 11, 45))

    assert res.disparity.shape == (37, 45)
    np.testing.assert_allclose(res.disparity, np.tile(np.arange(45, dtype=np.float32) * 0.5, (37, 1)))
    np.testing.assert_allclose(res.disparity_std, 2.0 * math.sqrt(2.0), rtol=1e-6)


def test_validity_rules() -> None:
    left, right = _images(32, 48)
    # d = 0.5 x: d > min_disparity=2 needs x > 4; d <= x holds everywhere.
    res = StereoDepthPipeline(ColumnModel(0.5), min_disparity=2.0, local_refinement=None)(left, right)
    np.testing.assert_array_equal(res.valid, np.tile(np.arange(48) * 0.5 > 2.0, (32, 1)))
    # d = 1.5 x points outside the right image for every x > 0.
    res = StereoDepthPipeline(ColumnModel(1.5), local_refinement=None)(left, right)
    assert not res.valid.any()
    # std = sqrt(2) * e^1 ~ 3.84 px > 3: everything rejected; a looser bound keeps it.
    # (The network's own std: the refinement would correct, and so re-scale, some of it.)
    assert not StereoDepthPipeline(ColumnModel(0.5, 1.0), max_uncertainty=3.0,
                                   local_refinement=None)(left, right).valid.any()
    assert StereoDepthPipeline(ColumnModel(0.5, 1.0), max_uncertainty=4.0,
                               local_refinement=None)(left, right).valid.any()


def test_depth_matches_focal_baseline_over_disparity() -> None:
    h, w = 32, 48
    cam = _camera(h, w)
    left, right = _images(h, w)
    res = StereoDepthPipeline(ColumnModel(0.5), min_disparity=1.0)(left, right, cam)
    assert res.depth is not None and res.depth_std is not None and res.points is not None
    assert res.depth.dtype == np.float32 and res.points.shape == (h, w, 3)
    v = res.valid
    assert v.any() and not v.all()
    np.testing.assert_allclose(res.depth[v], cam.fx * cam.baseline / res.disparity[v], rtol=1e-5)
    assert np.isnan(res.depth[~v]).all() and np.isnan(res.depth_std[~v]).all()
    assert np.isnan(res.points[~v]).all()
    np.testing.assert_allclose(res.points[..., 2][v], res.depth[v], rtol=1e-6)
    # First-order propagation: sigma_Z = fB / d^2 * sigma_d.
    expect_std = cam.fx * cam.baseline / res.disparity[v] ** 2 * res.disparity_std[v]
    np.testing.assert_allclose(res.depth_std[v], expect_std, rtol=1e-5)

    no_points = StereoDepthPipeline(ColumnModel(0.5), compute_points=False)(left, right, cam)
    assert no_points.points is None and no_points.depth is not None


def test_real_model_with_camera(lite_pipeline: StereoDepthPipeline) -> None:
    h, w = 48, 160
    cam = _camera(h, w)
    left, right = _images(h, w, seed=2)
    res = lite_pipeline(left, right, cam)
    assert res.depth is not None and res.points is not None
    v = res.valid
    assert v.any()
    np.testing.assert_allclose(res.depth[v], cam.fx * cam.baseline / res.disparity[v], rtol=1e-5)
    assert np.array_equal(np.isfinite(res.depth), v)


def test_local_refinement_corrects_the_network_and_can_be_turned_off() -> None:
    """A network 1.2 px off on a textured pair: the default pipeline snaps to the true shift of 6 px."""
    left, right = _images(40, 96)
    model = ColumnModel(scale=0.0)  # disparity 0 * column + 7.2 below
    model.forward = lambda a, b: (torch.full_like(a[:, :1], 7.2), torch.zeros_like(a[:, :1]))  # noqa: E731
    refined = StereoDepthPipeline(model)(left, right).disparity
    raw = StereoDepthPipeline(model, local_refinement=None)(left, right).disparity
    np.testing.assert_allclose(raw, 7.2, rtol=1e-6)
    interior = refined[4:-4, 16:-8]  # away from the wrapped-around columns of np.roll and the border
    # i.i.d. pixel noise is the worst case for the parabola fit (a sharp, non-parabolic peak): ~0.15 px.
    assert np.median(np.abs(interior - 6.0)) < 0.25
    assert (np.abs(interior - 6.0) < 0.5).mean() > 0.95


def test_sgbm_candidate_repairs_a_grossly_wrong_network_and_can_be_turned_off() -> None:
    """A network 24 px off everywhere: out of the local search's reach; SGBM's answer brings it back."""
    left, right = _images(48, 160)  # true disparity 6
    model = ColumnModel(scale=0.0)
    model.forward = lambda a, b: (torch.full_like(a[:, :1], 30.0), torch.zeros_like(a[:, :1]))  # noqa: E731
    local_only = dataclasses.replace(LocalRefinementConfig(), sgbm_candidate=False)
    stuck = StereoDepthPipeline(model, local_refinement=local_only)(left, right)
    fixed = StereoDepthPipeline(model)(left, right)  # the default has the SGBM candidate
    interior = np.s_[6:-6, 36:-10]  # away from the border fill and np.roll's wrapped columns
    assert (np.abs(stuck.disparity[interior] - 6.0) > 10).mean() > 0.9
    assert (np.abs(fixed.disparity[interior] - 6.0) < 0.5).mean() > 0.9
    # The candidate the refinement was offered comes back with the result (live quality's second opinion):
    # SGBM's own answer, about the true 6 px where it answered; none when the setting has no candidate.
    assert stuck.sgbm_disparity is None
    sgbm = fixed.sgbm_disparity
    assert sgbm is not None and sgbm.shape == left.shape[:2] and sgbm.dtype == np.float32
    answered = np.isfinite(sgbm[interior])
    assert answered.mean() > 0.5 and np.median(np.abs(sgbm[interior][answered] - 6.0)) < 0.5
    # The big correction is not trusted blindly: its std carries the correction floor (times the frame's
    # one-pass factor, which the default puts on the changed pixels and lets fall to 0.5 on clean views).
    assert 0.5 <= fixed.one_pass_factor <= 6.0
    assert np.median(fixed.disparity_std[interior]) >= 0.3 * 24 * 0.9 * fixed.one_pass_factor


def test_sgbm_candidate_overlapped_with_the_network_gives_the_same_outputs() -> None:
    """SGBM in the worker thread during the forward pass (the accelerator default), forced on the CPU: the
    outputs are bit-identical to the serial order, SGBM really ran on the worker, and it is off by default
    for a CPU engine (where it would only compete for the same cores)."""
    import threading

    left, right = _images(48, 160, seed=3)
    model = ColumnModel(scale=0.0)
    model.forward = lambda a, b: (torch.full_like(a[:, :1], 30.0), torch.zeros_like(a[:, :1]))  # noqa: E731
    serial = StereoDepthPipeline(model)
    assert serial.overlap_sgbm is False
    overlapped = StereoDepthPipeline(model, overlap_sgbm=True)
    threads: list[str] = []
    sgbm = overlapped._sgbm_disparity

    def recording(*args: object) -> np.ndarray:
        threads.append(threading.current_thread().name)
        return sgbm(*args)

    overlapped._sgbm_disparity = recording  # type: ignore[method-assign]
    for seed in (3, 4):  # twice: the worker is made once and reused
        left, right = _images(48, 160, seed=seed)
        a, b = serial(left, right), overlapped(left, right)
        for field in ("disparity", "disparity_std", "valid"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert len(threads) == 2 and all(t.startswith("sgbm_candidate") for t in threads)
    # Without an SGBM candidate in the setting nothing is started.
    no_candidate = dataclasses.replace(LocalRefinementConfig(), sgbm_candidate=False)
    quiet = StereoDepthPipeline(model, local_refinement=no_candidate, overlap_sgbm=True)
    quiet(left, right)
    assert quiet._sgbm_worker is None


def test_uncertainty_of_refined_pixels_is_scaled() -> None:
    """Where the refinement corrects the network, the network's std is scaled; elsewhere it is untouched."""
    from scene_perception.pipelines.local_refinement import LocalRefinementConfig

    left, right = _images(40, 96)
    left[:, 40:60] = 128  # a flat band: nothing to match, nothing changed
    right = np.roll(left, -6, axis=1)
    model = ColumnModel(scale=0.0)
    model.forward = lambda a, b: (torch.full_like(a[:, :1], 7.2), torch.zeros_like(a[:, :1]))  # noqa: E731
    setting = LocalRefinementConfig(uncertainty_scale=0.25, fill_border=False, correction_std=0.0,
                                    one_pass_std_measure="none", one_pass_unchanged_scale=1.0)  # update only
    res = StereoDepthPipeline(model, local_refinement=setting)(left, right)
    changed = np.abs(res.disparity - 7.2) > 1e-6
    assert changed.mean() > 0.5 and not changed[:, 44:56].any()
    np.testing.assert_allclose(res.disparity_std[changed], 0.25 * math.sqrt(2.0), rtol=1e-5)
    np.testing.assert_allclose(res.disparity_std[~changed], math.sqrt(2.0), rtol=1e-5)
    # The border fill changes pixels x < d without evidence from matching: their std stays the network's.
    with_fill = dataclasses.replace(setting, fill_border=True)
    filled = StereoDepthPipeline(model, local_refinement=with_fill)(left, right)
    border = np.abs(filled.disparity[:, :7] - res.disparity[:, :7]) > 1e-3
    assert border.mean() > 0.5
    np.testing.assert_allclose(filled.disparity_std[:, :7][border], math.sqrt(2.0), rtol=1e-5)


def test_refine_applies_the_pipelines_refinement_to_a_given_disparity() -> None:
    """``refine`` corrects a disparity estimated elsewhere and scales the std of what it changed."""
    left, right = _images(40, 96)  # true disparity 6 everywhere (right = left shifted by 6)
    setting = LocalRefinementConfig(uncertainty_scale=0.5, fill_border=False)
    pipe = StereoDepthPipeline(ColumnModel(), local_refinement=setting)
    start = np.full((40, 96), 7.4, np.float32)
    std = np.full((40, 96), 2.0, np.float32)
    refined, refined_std = pipe.refine(left, right, start, std)
    assert refined.dtype == refined_std.dtype == np.float32 and refined.shape == (40, 96)
    changed = np.abs(refined - start) > 1e-6
    assert changed[:, 12:].mean() > 0.9
    assert np.median(np.abs(refined[:, 12:] - 6.0)) < 0.1
    np.testing.assert_allclose(refined_std[changed], 1.0, rtol=1e-5)
    np.testing.assert_allclose(refined_std[~changed], 2.0, rtol=1e-5)
    # No refinement setting: the inputs come back as they are.
    pipe.local_refinement = None
    same, same_std = pipe.refine(left, right, start, std)
    np.testing.assert_array_equal(same, start)
    np.testing.assert_allclose(same_std, std, rtol=1e-6)
    with pytest.raises(ValueError, match="equal-sized"):
        pipe.refine(left, right, start[:, 1:], std)


def test_a_range_beyond_the_network_is_run_shrunk_and_refined_again_at_the_input_resolution() -> None:
    """Above the network's range the pair is shrunk; the scaled-up result is refined at full resolution."""
    rng = np.random.default_rng(3)
    noise = cv2.GaussianBlur(rng.random((64, 256 + 64)).astype(np.float32), (0, 0), 1.5)
    noise = (255 * (noise - noise.min()) / np.ptp(noise)).astype(np.uint8)
    truth = 20.0
    left = np.repeat(noise[:, 32:32 + 256, None], 3, axis=2)
    right = np.repeat(noise[:, 32 + int(truth):32 + int(truth) + 256, None], 3, axis=2)
    model = ColumnModel(scale=0.0)
    model.max_disparity = 32  # the network's range: 64 needs the pair at half size
    # A network that is 1 px off at its own (half) scale, so 2 px off once scaled back up.
    off = truth / 2 + 1.0
    model.forward = lambda a, b: (torch.full_like(a[:, :1], off), torch.zeros_like(a[:, :1]))  # noqa: E731
    pipe = StereoDepthPipeline(model, local_refinement=None, max_disparity=64)
    result = pipe(left, right)
    assert result.scale == 0.5 and result.max_disparity == 64.0 and result.disparity.shape == (64, 256)
    coarse = result.disparity
    assert np.median(np.abs(coarse[:, 40:-8] - truth)) > 1.9
    pipe.local_refinement = LocalRefinementConfig()
    fine = pipe(left, right).disparity
    assert np.median(np.abs(fine[:, 40:-8] - truth)) < 0.2


def test_correction_std_sets_a_floor_from_the_size_of_the_correction() -> None:
    """Where the refinement moved the disparity by delta, the std is at least correction_std * |delta|."""
    left, right = _images(40, 96)  # true disparity 6
    model = ColumnModel(scale=0.0, log_scale=math.log(0.1))  # a confident network: std 0.1 * sqrt(2)
    model.forward = lambda a, b: (torch.full_like(a[:, :1], 8.5), torch.full_like(a[:, :1], math.log(0.1)))  # noqa: E731
    base = LocalRefinementConfig(uncertainty_scale=0.5, fill_border=False, correction_std=0.0,
                                 one_pass_std_measure="none", one_pass_unchanged_scale=1.0)  # update only
    plain = StereoDepthPipeline(model, local_refinement=base)(left, right)
    with_floor = dataclasses.replace(base, correction_std=0.4)
    floored = StereoDepthPipeline(model, local_refinement=with_floor)(left, right)
    np.testing.assert_array_equal(plain.disparity, floored.disparity)  # disparities do not depend on it
    delta = np.abs(floored.disparity - 8.5)
    moved = delta > 1.0  # corrected by about 2.5 px
    assert moved[:, 12:].mean() > 0.9
    np.testing.assert_allclose(plain.disparity_std[moved], 0.5 * 0.1 * math.sqrt(2.0), rtol=1e-5)
    np.testing.assert_allclose(floored.disparity_std[moved], 0.4 * delta[moved], rtol=1e-5)
    untouched = delta == 0
    assert untouched.any()
    np.testing.assert_allclose(floored.disparity_std[untouched], 0.1 * math.sqrt(2.0), rtol=1e-5)


def test_min_texture_invalidates_flat_regions_only() -> None:
    """A flat band has nothing to match: with min_texture its pixels are invalid, textured ones stay."""
    left, right = _images(48, 160, seed=5)
    left[:, 60:100] = 90  # flat (grey-level std 0) band
    right = np.roll(left, -6, axis=1)
    model = ColumnModel(scale=0.0)
    model.forward = lambda a, b: (torch.full_like(a[:, :1], 6.0), torch.zeros_like(a[:, :1]))  # noqa: E731
    off = StereoDepthPipeline(model, local_refinement=None)(left, right)
    on_pipe = StereoDepthPipeline(model, local_refinement=None, min_texture=0.01)
    on = on_pipe(left, right)
    assert off.valid[:, 66:94].all()
    assert not on.valid[:, 66:94].any()  # 3 px inside the band: the 7x7 window sees only the band
    np.testing.assert_array_equal(on.valid[:, 10:50], off.valid[:, 10:50])  # random texture is untouched
    np.testing.assert_array_equal(on.disparity, off.disparity)  # only the mask changes
    on_pipe.min_texture = 0.0  # live: the node sets the attribute on a parameter change
    assert on_pipe(left, right).valid[:, 66:94].all()


def test_far_sigma_invalidates_disparities_not_separable_from_the_floor() -> None:
    """far_sigma drops a pixel whose disparity is within K std of the floor (its depth is unbounded), keeps
    the same disparity when its std is small, and follows the floor that max_depth raises."""
    left, right = _images(48, 160, seed=6)
    model = ColumnModel(scale=0.0)
    std = 0.5
    log_scale = math.log(std / math.sqrt(2.0))  # the pipeline publishes std = sqrt(2) exp(log_scale)

    def forward(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = torch.full_like(a[:, :1], 6.0)
        d[:, :, : a.shape[-2] // 2] = 1.3  # top half: 0.3 px above the automatic 1 px floor
        ls = torch.full_like(a[:, :1], log_scale)
        ls[:, :, : a.shape[-2] // 2, 80:] = math.log(0.05 / math.sqrt(2.0))  # ... sharp on the right
        return d, ls

    model.forward = forward  # type: ignore[method-assign]
    off = StereoDepthPipeline(model, local_refinement=None)(left, right)
    pipe = StereoDepthPipeline(model, local_refinement=None, far_sigma=1.0)
    on = pipe(left, right)
    assert off.min_disparity == on.min_disparity == 1.0
    assert off.valid[:24, 10:].all() and off.valid[24:, 10:].all()
    assert not on.valid[:24, 10:80].any()  # 1.3 - 1 x 0.5 <= 1: could be at infinity
    assert on.valid[:24, 80:].all()  # 1.3 - 1 x 0.05 > 1: bounded
    np.testing.assert_array_equal(on.valid[24:], off.valid[24:])  # 6 px, std 0.5: untouched
    np.testing.assert_array_equal(on.disparity, off.disparity)  # only the mask changes
    # A nearer max_depth raises the floor: f*B / max_depth = 5.2 px, and 6 - 1 x 0.5 = 5.5 > 5.2 stays,
    # 6 - 2 x 0.5 = 5.0 does not.
    camera = _camera(48, 160)
    pipe.max_depth = camera.focal_baseline / (5.2 + camera.doffs)
    assert pipe(left, right, camera).valid[24:, 10:].all()
    pipe.far_sigma = 2.0  # live: the node sets the attribute on a parameter change
    assert not pipe(left, right, camera).valid[24:].any()
    with pytest.raises(ValueError, match="far_sigma"):
        StereoDepthPipeline(model, local_refinement=None, far_sigma=-1.0)


def _constant_network(value: float, max_disparity: int = 128) -> ColumnModel:
    """A network answering ``value`` everywhere; its inputs are recorded in ``sizes`` (shared with the
    engine's copy: the function, not the module, does the recording)."""
    model = ColumnModel(scale=0.0)
    model.max_disparity = max_disparity
    sizes: list[tuple[int, ...]] = []

    def forward(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sizes.append(tuple(a.shape))
        return torch.full_like(a[:, :1], value), torch.zeros_like(a[:, :1])

    model.forward = forward
    model.sizes = sizes
    return model


def test_saturated_disparities_are_invalid_and_counted() -> None:
    """A soft arg-min at the top of its range means "this far or nearer": such pixels are never published
    (as farther than they are); one step lower is an ordinary valid value."""
    left, right = _images(32, 160)
    cam = _camera(32, 160)
    # No disparity_step on this stand-in: the pipeline assumes lite's 4 px, so >= 128 - 6 is saturated.
    top = StereoDepthPipeline(_constant_network(124.0), local_refinement=None)(left, right, cam)
    assert top.saturated == left.shape[0] * left.shape[1] and not top.valid.any()
    assert top.saturated_mask is not None and top.saturated_mask.all()  # the depth image's -Inf (REP 117)
    assert np.isnan(top.depth).all()
    below = StereoDepthPipeline(_constant_network(121.0), local_refinement=None)(left, right, cam)
    assert below.saturated == 0 and below.valid[:, 121:].all()
    assert below.saturated_mask is not None and not below.saturated_mask.any()
    assert top.max_disparity == below.max_disparity == 128.0


def test_max_depth_sets_the_disparity_floor() -> None:
    """Default (auto): disparities at or below 1 px are invalid, so no depth of hundreds of km is published;
    an explicit max_depth sets the floor at f*B / max_depth."""
    left, right = _images(32, 96)
    cam = _camera(32, 96)  # f*B in px*m below
    fb = cam.focal_baseline
    auto = StereoDepthPipeline(_constant_network(0.8), local_refinement=None)(left, right, cam)
    assert not auto.valid.any() and auto.min_disparity == AUTO_MIN_DISPARITY_PX
    ok = StereoDepthPipeline(_constant_network(1.5), local_refinement=None)(left, right, cam)
    assert ok.valid[:, 2:].all() and np.nanmax(ok.depth) == pytest.approx(fb / 1.5, rel=1e-5)
    far = fb / 3.0  # depth of a 3 px disparity
    near_only = StereoDepthPipeline(_constant_network(2.5), local_refinement=None, max_depth=far)
    res = near_only(left, right, cam)
    assert not res.valid.any() and res.min_disparity == pytest.approx(3.0)
    assert StereoDepthPipeline(_constant_network(3.5), local_refinement=None, max_depth=far)(
        left, right, cam).valid[:, 4:].all()


def test_max_network_pixels_runs_the_network_on_a_smaller_pair() -> None:
    model = _constant_network(5.0)
    left, right = _images(64, 128)
    pipe = StereoDepthPipeline(model, local_refinement=None, max_network_pixels=32 * 64)
    res = pipe(left, right)
    assert model.sizes[-1] == (1, 3, 32, 64)
    assert res.scale == pytest.approx(0.5) and res.disparity.shape == (64, 128)
    # 5 px at half size are 10 px at the input size; the range searched doubles too.
    np.testing.assert_allclose(res.disparity[4:-4, 8:-8], 10.0, rtol=1e-5)
    assert res.max_disparity == 256.0
