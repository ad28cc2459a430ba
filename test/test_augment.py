"""data/augment.py: real-camera augmentation keeps shapes, geometry and determinism."""

from __future__ import annotations

import numpy as np
import pytest

from scene_perception.data.augment import AugmentConfig, augment_pair
from scene_perception.data.procedural import ProceduralStereoDataset

NONE = AugmentConfig(asymmetric_colour=0.0, gamma=(1.0, 1.0), saturation=(1.0, 1.0), blur=0.0, jpeg=0.0,
                     y_jitter=0.0, eraser=0.0)


def pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (48, 64, 3)
    return rng.integers(0, 256, shape, dtype=np.uint8), rng.integers(0, 256, shape, dtype=np.uint8)


def test_identity_config_changes_nothing() -> None:
    left, right = pair()
    out_l, out_r = augment_pair(np.random.default_rng(1), left, right, NONE)
    np.testing.assert_array_equal(out_l, left)
    np.testing.assert_array_equal(out_r, right)


def test_deterministic_per_rng_and_shapes_kept() -> None:
    left, right = pair()
    a = augment_pair(np.random.default_rng(7), left, right)
    b = augment_pair(np.random.default_rng(7), left, right)
    c = augment_pair(np.random.default_rng(8), left, right)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    assert all(x.dtype == np.uint8 and x.shape == left.shape for x in a)


def test_symmetric_colour_is_the_same_transform_on_both_views() -> None:
    left, _ = pair()
    cfg = AugmentConfig(asymmetric_colour=0.0, blur=0.0, jpeg=0.0, y_jitter=0.0, eraser=0.0)
    out_l, out_r = augment_pair(np.random.default_rng(3), left, left.copy(), cfg)
    assert not np.array_equal(out_l, left)  # gamma/saturation did something ...
    np.testing.assert_array_equal(out_l, out_r)  # ... and the same thing to both views
    asym = AugmentConfig(asymmetric_colour=1.0, blur=0.0, jpeg=0.0, y_jitter=0.0, eraser=0.0)
    out_l, out_r = augment_pair(np.random.default_rng(3), left, left.copy(), asym)
    assert not np.array_equal(out_l, out_r)


def test_eraser_and_y_jitter_touch_only_the_right_view() -> None:
    left, right = pair()
    cfg = AugmentConfig(asymmetric_colour=0.0, gamma=(1.0, 1.0), saturation=(1.0, 1.0), blur=0.0, jpeg=0.0,
                        y_jitter=1.0, eraser=1.0)
    out_l, out_r = augment_pair(np.random.default_rng(5), left, right, cfg)
    np.testing.assert_array_equal(out_l, left)
    assert not np.array_equal(out_r, right)


def test_bad_input_is_refused() -> None:
    left, right = pair()
    with pytest.raises(ValueError, match="differ"):
        augment_pair(np.random.default_rng(0), left, right[:, :32])
    with pytest.raises(ValueError, match="uint8"):
        augment_pair(np.random.default_rng(0), left.astype(np.float32), right)


def test_dataset_augments_only_when_asked_and_keeps_gt() -> None:
    kw = dict(length=4, width=128, height=64, max_disparity=32.0, seed=3, crop=(48, 96), nuisance=False)
    plain = ProceduralStereoDataset(**kw)[1]
    aug = ProceduralStereoDataset(**kw, augment=True)
    again = ProceduralStereoDataset(**kw, augment=True)[1]
    item = aug[1]
    np.testing.assert_array_equal(item["disparity"].numpy(), plain["disparity"].numpy())
    assert not np.array_equal(item["right"].numpy(), plain["right"].numpy())
    np.testing.assert_array_equal(item["right"].numpy(), again["right"].numpy())  # same index, same item


def test_view_effects_pair_is_a_pure_function_of_the_seed_and_never_erases() -> None:
    """The evaluation renders "through a camera" (benchmarks/two_pass_adaptive.py, calibration.py
    --camera-effects): the same seed gives the same pair, another seed another; no eraser."""
    from scene_perception.data.augment import VIEW_EFFECTS, view_effects_pair

    rng = np.random.default_rng(0)
    left = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    right = np.roll(left, -3, axis=1)
    a, b = view_effects_pair(11, left, right), view_effects_pair(11, left, right)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    c = view_effects_pair(12, left, right)
    assert not (np.array_equal(a[0], c[0]) and np.array_equal(a[1], c[1]))
    assert VIEW_EFFECTS.eraser == 0.0 and VIEW_EFFECTS.vignetting > 0 and VIEW_EFFECTS.white_balance > 0
