"""PoseNet model, rotation helpers, pose losses, MC-dropout pipeline and pose metrics (pure torch/numpy)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from scene_perception.evaluation.pose import (
    CHI2_2SIGMA_3DOF,
    CHI2_2SIGMA_6DOF,
    TWO_SIGMA_MASS,
    inside_fraction,
    pose_errors,
    pose_metrics,
)
from scene_perception.geometry.rotations import (
    canonical_quaternion,
    matrix_to_quaternion,
    mean_quaternion,
    quaternion_angle_deg,
    quaternion_to_matrix,
    quaternion_to_matrix_torch,
    rotation_vector_between,
    rotvec_to_quaternion,
)
from scene_perception.losses.pose import (
    HomoscedasticPoseLoss,
    project_points,
    quaternion_error,
    reprojection_loss,
    robust_pixel_distance,
)
from scene_perception.models.posenet import CONFIGS, PoseNet, PoseNetConfig
from scene_perception.models.weights import ModelLoadError, load_pose_model, save_model
from scene_perception.pipelines.pose import PosePipeline, pose_covariance

TINY = CONFIGS["tiny"]


def _model(seed: int = 0, **changes) -> PoseNet:
    torch.manual_seed(seed)
    return PoseNet(dataclasses.replace(TINY, **changes)).eval()


def _random_quaternions(n: int, seed: int = 0) -> np.ndarray:
    return canonical_quaternion(np.random.default_rng(seed).normal(size=(n, 4)))


# ----------------------------------------------------------------------------------------- model
def test_outputs_have_the_right_shapes_and_unit_canonical_quaternions():
    model = _model()
    model.train()
    x = torch.rand(5, 3, TINY.input_height, TINY.input_width)
    for mode in (True, False):
        model.train(mode)
        pos, q = model(x)
        assert pos.shape == (5, 3) and q.shape == (5, 4)
        assert torch.allclose(q.norm(dim=1), torch.ones(5), atol=1e-5)
        assert (q[:, 3] >= 0).all()


def test_position_is_denormalised_with_the_configs_mean_and_scale():
    model = _model(position_mean=(100.0, -2.0, 1.5), position_scale=(50.0, 1.0, 0.1))
    with torch.no_grad():
        model.position_head.weight.zero_()
        model.position_head.bias.copy_(torch.tensor([1.0, 2.0, -1.0]))
    pos, _ = model(torch.rand(1, 3, TINY.input_height, TINY.input_width))
    assert torch.allclose(pos[0], torch.tensor([150.0, 0.0, 1.4]), atol=1e-4)


def test_eval_is_deterministic_and_mc_sampling_is_not():
    model = _model(dropout=0.5)
    x = torch.rand(1, 3, TINY.input_height, TINY.input_width)
    a, b = model(x), model(x)
    assert torch.equal(a[0], b[0])
    pos, quat = model.sample(x, 16)
    assert pos.shape == (16, 3) and quat.shape == (16, 4)
    assert pos.std(0).sum() > 0
    assert model.mc is False  # restored after sampling
    with pytest.raises(ValueError):
        model.sample(torch.rand(2, 3, TINY.input_height, TINY.input_width), 4)


def test_config_round_trips_through_json_and_rejects_unknown_fields():
    cfg = dataclasses.replace(TINY, position_mean=(1.0, 2.0, 3.0), dropout=0.2)
    again = PoseNetConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    with pytest.raises(ValueError, match="unknown"):
        PoseNetConfig.from_dict({**cfg.to_dict(), "colour": 3})
    with pytest.raises(ValueError):
        PoseNetConfig(dropout=1.0)


def test_weights_save_and_load_with_card_and_sha(tmp_path):
    cfg = dataclasses.replace(TINY, position_mean=(10.0, 0.0, 1.5), position_scale=(5.0, 0.5, 0.1))
    torch.manual_seed(3)
    model = PoseNet(cfg).eval()
    path = tmp_path / "pose.safetensors"
    sha = save_model(model, path, {"architecture": "posenet", "metrics": {"x": 1.0}})
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["sha256"] == sha and card["config"]["position_mean"] == [10.0, 0.0, 1.5]
    loaded, info = load_pose_model(weights=path)
    assert info.trained and info.sha256 == sha
    x = torch.rand(2, 3, cfg.input_height, cfg.input_width)
    assert torch.allclose(loaded(x)[0], model(x)[0]) and torch.allclose(loaded(x)[1], model(x)[1])
    # A tampered file is refused by its card's sha256.
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    with pytest.raises(ModelLoadError, match="sha256"):
        load_pose_model(weights=path)


def test_missing_pose_weights_are_an_error_not_an_untrained_model(tmp_path, monkeypatch):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_pose_model(weights=tmp_path / "nope.safetensors")
    monkeypatch.setenv("SCENE_PERCEPTION_MODELS", str(tmp_path))
    with pytest.raises(ModelLoadError, match="no PoseNet weights"):
        load_pose_model("tiny")


# ----------------------------------------------------------------------------------------- rotations
def test_quaternion_matrix_round_trip_and_sign_conventions():
    qs = _random_quaternions(50)
    mats = quaternion_to_matrix(qs)
    assert np.allclose(mats @ np.swapaxes(mats, 1, 2), np.eye(3), atol=1e-9)
    back = np.stack([matrix_to_quaternion(m) for m in mats])
    assert np.allclose(back, qs, atol=1e-9)
    assert np.allclose(quaternion_to_matrix(-qs), mats)
    torch_mats = quaternion_to_matrix_torch(torch.from_numpy(-qs))
    assert np.allclose(torch_mats.numpy(), mats, atol=1e-9)


def test_rotation_vectors_and_means():
    q0 = _random_quaternions(1, seed=4)[0]
    r = np.array([0.01, -0.02, 0.03])
    q1 = canonical_quaternion(np.stack([rotvec_to_quaternion(r)]) @ np.eye(4))[0]
    # q = exp(r) * q0: the rotation vector between q0 and q is r (fixed-frame perturbation).
    from scene_perception.geometry.rotations import quaternion_multiply

    q = canonical_quaternion(quaternion_multiply(q1, q0))
    assert np.allclose(rotation_vector_between(q0, q), r, atol=1e-9)
    assert math.isclose(float(quaternion_angle_deg(q0, q)), math.degrees(np.linalg.norm(r)), rel_tol=1e-6)
    assert math.isclose(float(quaternion_angle_deg(q0, -q0)), 0.0, abs_tol=1e-6)
    # Tiny angles keep their relative precision (2 acos(|a.b|) resolves nothing below ~2e-6 degrees).
    tiny = np.array([1e-9, -2e-9, 3e-9])
    q_tiny = quaternion_multiply(rotvec_to_quaternion(tiny), q0)
    tiny_deg = math.degrees(np.linalg.norm(tiny))
    assert math.isclose(float(quaternion_angle_deg(q0, q_tiny)), tiny_deg, rel_tol=1e-4)
    # Batched, with each pair's sign flipped independently.
    batch = np.stack([q, -q])
    assert np.allclose(quaternion_angle_deg(np.stack([q0, q0]), batch), math.degrees(np.linalg.norm(r)))
    # Mean of +-r perturbations (with sign flips) is q0.
    qs = np.stack([canonical_quaternion(quaternion_multiply(rotvec_to_quaternion(s * r), q0))
                   for s in (1, -1)])
    qs[1] *= -1
    assert quaternion_angle_deg(mean_quaternion(qs), q0) < 1e-9


# ----------------------------------------------------------------------------------------- losses
def _scene(batch: int = 2, points: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.from_numpy(_random_quaternions(batch, seed)).float()
    t = torch.randn(batch, 3, generator=g) * 5
    rot = quaternion_to_matrix_torch(q)
    u = torch.rand(batch, points, 3, generator=g)
    cam = torch.stack([u[..., 0] * 8 - 4, u[..., 1] * 4 - 2, u[..., 2] * 30 + 3], -1)
    world = torch.einsum("bij,bpj->bpi", rot, cam) + t[:, None]
    k = torch.tensor([100.0, 100.0, 64.0, 32.0])
    return t, q, world, k


def test_losses_are_zero_at_the_ground_truth():
    t, q, pts, k = _scene()
    loss, parts = reprojection_loss(t.clone(), q.clone(), t, q, pts, k)
    assert loss.item() < 1e-3 and parts["reproj_px"] < 1e-3
    assert quaternion_error(q, q).abs().max().item() < 1e-6
    crit = HomoscedasticPoseLoss(sx=0.0, sq=0.0)
    loss, parts = crit(t, q, t, q)
    assert abs(loss.item()) < 1e-6 and parts["lx"] == 0.0


def test_quaternion_losses_are_invariant_to_the_sign():
    t, q, pts, k = _scene(seed=1)
    q_pred = torch.from_numpy(canonical_quaternion(q.numpy() + 0.05)).float()
    for sign in (1.0, -1.0):
        assert torch.allclose(quaternion_error(sign * q_pred, q), quaternion_error(q_pred, q), atol=1e-6)
        assert torch.allclose(quaternion_error(q_pred, sign * q), quaternion_error(q_pred, q), atol=1e-6)
    a, _ = reprojection_loss(t, q_pred, t, q, pts, k)
    b, _ = reprojection_loss(t, -q_pred, t, -q, pts, k)
    assert torch.allclose(a, b, atol=1e-4)
    crit = HomoscedasticPoseLoss()
    assert torch.allclose(crit(t, q_pred, t, q)[0], crit(t, -q_pred, t, q)[0], atol=1e-6)


def test_reprojection_gradient_points_back_to_the_true_position_and_rotation():
    t, q, pts, k = _scene(seed=2)
    offset = torch.tensor([[0.3, -0.2, 0.4], [-0.5, 0.1, 0.2]])
    pos = (t + offset).requires_grad_(True)
    q_pred = torch.from_numpy(canonical_quaternion(q.numpy() + np.array([0.01, -0.01, 0.0, 0.0]))).float()
    q_pred.requires_grad_(True)
    loss, _ = reprojection_loss(pos, q_pred, t, q, pts, k)
    loss.backward()
    # Descent direction has a positive component towards the truth, per frame.
    assert ((-pos.grad * (t - pos.detach())).sum(1) > 0).all()
    with torch.no_grad():
        pos_step = pos - 0.01 * pos.grad / pos.grad.norm()
        q_step = q_pred - 1e-4 * q_pred.grad / q_pred.grad.norm()
        after, _ = reprojection_loss(pos_step, q_step, t, q, pts, k)
    assert after.item() < loss.item()


def test_reprojection_grows_with_the_error_and_is_robust_beyond_the_clip():
    t, q, pts, k = _scene(seed=3)
    values = [reprojection_loss(t + torch.tensor([d, 0.0, 0.0]), q, t, q, pts, k, clip_px=0)[0].item()
              for d in (0.05, 0.2, 0.8)]
    assert values[0] < values[1] < values[2]
    d = torch.tensor([1.0, 49.0, 50.0, 51.0, 500.0, 5000.0])
    r = robust_pixel_distance(d, 50.0)
    assert torch.allclose(r[:3], d[:3]) and r[3] < 51.0 and r[5] < 300.0
    assert (r[1:] > r[:-1]).all()  # monotone: a farther miss is never cheaper
    # A point behind the predicted camera stays finite.
    behind = t + torch.tensor([0.0, 0.0, 0.0])
    far_q = torch.from_numpy(canonical_quaternion(np.array([[0.0, 1.0, 0.0, 0.0]] * 2))).float()
    loss, _ = reprojection_loss(behind, far_q, t, q, pts, k)
    assert torch.isfinite(loss)


def test_homoscedastic_weights_learn_the_balance():
    t, q, _, _ = _scene()
    crit = HomoscedasticPoseLoss(sx=0.0, sq=-3.0)
    loss, parts = crit(t + 2.0, q, t, q)
    loss.backward()
    # dL/dsx = 1 - Lx exp(-sx): with Lx = 6 m (L1 of a 2 m offset per axis) the noise level must grow.
    assert math.isclose(crit.sx.grad.item(), 1 - parts["lx"], rel_tol=1e-5) and crit.sx.grad.item() < 0
    assert math.isclose(crit.sq.grad.item(), 1.0, rel_tol=1e-5)  # zero rotation error: sq decreases


def test_projection_matches_the_pinhole_model():
    t = torch.zeros(1, 3)
    q = torch.tensor([[0.0, 0.0, 0.0, 1.0]])
    pts = torch.tensor([[[1.0, -0.5, 10.0]]])
    uv = project_points(t, q, pts, torch.tensor([200.0, 100.0, 64.0, 32.0]))
    assert torch.allclose(uv, torch.tensor([[[84.0, 27.0]]]))


# ----------------------------------------------------------------------------------------- pipeline
def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (48, 96, 3), dtype=np.uint8)


def test_pipeline_covariance_is_symmetric_psd_and_grows_with_dropout():
    traces = []
    for p in (0.0, 0.1, 0.5):
        model = _model(seed=5, dropout=p)
        result = PosePipeline(model, mc_samples=64)(_image())
        cov = result.covariance
        assert cov.shape == (6, 6) and np.array_equal(cov, cov.T)
        assert np.linalg.eigvalsh(cov).min() >= -1e-12
        assert result.position.shape == (3,) and math.isclose(np.linalg.norm(result.quaternion), 1.0)
        assert result.quaternion[3] >= 0 and result.latency_ms > 0
        traces.append(np.trace(cov))
    assert traces[0] < 1e-10 < traces[1] < traces[2]


def test_pipeline_runs_the_encoder_once_for_all_samples():
    model = _model(dropout=0.3)
    calls = []
    model.encoder.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    PosePipeline(model, mc_samples=32)(_image())
    assert calls == [1]
    with pytest.raises(ValueError):
        PosePipeline(model, mc_samples=1)
    with pytest.raises(ValueError):
        PosePipeline(model, mc_samples=8)(np.zeros((10, 10), np.uint8))


def test_pose_covariance_of_known_samples():
    rng = np.random.default_rng(0)
    sigma = np.diag([0.5, 0.2, 0.1, 0.02, 0.01, 0.03])
    dev = rng.normal(size=(20000, 6)) @ sigma
    q0 = _random_quaternions(1, seed=9)[0]
    from scene_perception.geometry.rotations import quaternion_multiply

    quats = canonical_quaternion(quaternion_multiply(rotvec_to_quaternion(dev[:, 3:]), q0))
    quats[::2] *= -1  # sign flips must not matter
    mean_p, mean_q, cov = pose_covariance(dev[:, :3] + 5.0, quats)
    assert np.allclose(mean_p, 5.0, atol=0.02)
    assert quaternion_angle_deg(mean_q, q0) < 0.05
    assert np.allclose(np.sqrt(np.diag(cov)), np.diag(sigma), rtol=0.03)


# ----------------------------------------------------------------------------------------- metrics
def _chi2_cdf(x: float, dof: int) -> float:
    if dof == 3:
        return math.erf(math.sqrt(x / 2)) - math.sqrt(2 * x / math.pi) * math.exp(-x / 2)
    return 1 - math.exp(-x / 2) * (1 + x / 2 + (x / 2) ** 2 / 2)


def test_chi_square_thresholds_hold_two_sigma_mass():
    assert math.isclose(TWO_SIGMA_MASS, 0.9545, abs_tol=1e-4)
    assert math.isclose(_chi2_cdf(CHI2_2SIGMA_3DOF, 3), TWO_SIGMA_MASS, abs_tol=1e-9)
    assert math.isclose(_chi2_cdf(CHI2_2SIGMA_6DOF, 6), TWO_SIGMA_MASS, abs_tol=1e-9)


def test_inside_fraction_is_calibrated_for_gaussian_errors_and_low_when_overconfident():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(6, 6))
    cov = a @ a.T + np.eye(6) * 0.1
    errors = rng.multivariate_normal(np.zeros(6), cov, size=5000)
    covs = np.broadcast_to(cov, (5000, 6, 6))
    assert abs(inside_fraction(errors, covs) - TWO_SIGMA_MASS) < 0.01
    assert abs(inside_fraction(errors[:, :3], covs[:, :3, :3]) - TWO_SIGMA_MASS) < 0.01
    assert inside_fraction(errors, covs * 0.25) < 0.7


def test_pose_errors_and_metrics():
    q = _random_quaternions(3, seed=2)
    r = np.array([[0.0, 0.0, math.radians(2.0)]] * 3)
    from scene_perception.geometry.rotations import quaternion_multiply

    q_gt = canonical_quaternion(quaternion_multiply(rotvec_to_quaternion(r), q))
    t_pred = np.zeros((3, 3))
    t_gt = np.array([[3.0, 4.0, 0.0]] * 3)
    t_err, r_err, e = pose_errors(t_pred, q, t_gt, q_gt)
    assert np.allclose(t_err, 5.0) and np.allclose(r_err, 2.0, atol=1e-6)
    assert np.allclose(e[:, 3:], r, atol=1e-9)
    m = pose_metrics(t_pred, q, np.broadcast_to(np.eye(6) * 100.0, (3, 6, 6)), t_gt, q_gt)
    assert m["median_translation_m"] == pytest.approx(5.0) and m["inside_2sigma_pose"] == 1.0
    m = pose_metrics(t_pred, q, np.broadcast_to(np.eye(6) * 1e-4, (3, 6, 6)), t_gt, q_gt)
    assert m["inside_2sigma_translation"] == 0.0 and m["inside_2sigma_pose"] == 0.0


def test_covariance_scale_is_fitted_per_axis_and_applied_by_the_pipeline():
    from scene_perception.evaluation.pose import fit_covariance_scale

    rng = np.random.default_rng(3)
    sigma_pred = np.array([1.0, 0.1, 0.01, 0.02, 0.02, 0.05])
    truth = np.array([0.5, 3.0, 1.0, 2.0, 1.0, 4.0])  # true std / predicted std per axis
    errors = rng.normal(size=(20000, 6)) * sigma_pred * truth
    covs = np.broadcast_to(np.diag(sigma_pred**2), (20000, 6, 6))
    scale = fit_covariance_scale(errors, covs)
    assert np.allclose(scale, truth, rtol=0.05)
    calibrated = covs[:, :3, :3] * np.outer(scale, scale)[:3, :3]
    assert abs(inside_fraction(errors[:, :3], calibrated) - TWO_SIGMA_MASS) < 0.02

    model = _model(seed=5, dropout=0.3)
    torch.manual_seed(0)
    raw = PosePipeline(model, mc_samples=16)(_image()).covariance
    s = (2.0, 1.0, 1.0, 1.0, 1.0, 3.0)
    scaled_model = PoseNet(dataclasses.replace(model.config, covariance_scale=s)).eval()
    scaled_model.load_state_dict(model.state_dict())
    torch.manual_seed(0)
    scaled = PosePipeline(scaled_model, mc_samples=16)(_image()).covariance
    assert np.allclose(scaled, raw * np.outer(s, s)) and np.array_equal(scaled, scaled.T)
    with pytest.raises(ValueError):
        PoseNetConfig(covariance_scale=(1.0, 1.0))


def test_shipped_weights_load_and_their_card_records_a_held_out_drive_of_the_training_world():
    from pathlib import Path

    card_path = Path(__file__).resolve().parents[1] / "models" / "posenet.json"
    model, info = load_pose_model()  # models/posenet.safetensors, sha256 verified against the card
    card = json.loads(card_path.read_text())
    assert info.trained and info.sha256 == card["sha256"] and info.weights_path.name == "posenet.safetensors"
    assert list(model.config.covariance_scale) == card["config"]["covariance_scale"]
    # the cross-covariance factor shipped is the one its recorded fit chose (calibration_pose_joint_rule.md)
    cross = card["covariance_calibration"]["cross_scale"]
    assert model.config.covariance_cross_scale == cross["value"] < 1.0
    assert all(0.85 <= v <= 0.99 for k, v in cross["six_dof_two_sigma"].items() if k != "validation")
    train, held = card["training"]["data"]["synth"], card["metrics"]["heldout"]["heldout_bag_synth"]
    assert train["seed"] == held["seed"] and train["world_length"] == held["world_length"]  # same world
    assert train["trajectory_seed"] != held["trajectory_seed"]  # another drive: never trained on
    heldout = card["metrics"]["heldout"]
    for key in ("median_translation_m", "median_rotation_deg", "inside_2sigma_translation"):
        assert key in heldout["raw_mc_dropout"] and key in heldout["calibrated"]
    assert card["training"]["command"].startswith("scene-perception train pose --bag")


def test_cross_covariance_factor_shrinks_only_the_cross_blocks_and_keeps_a_covariance():
    from scene_perception.pipelines.pose import shrink_cross_covariance

    rng = np.random.default_rng(4)
    a = rng.normal(size=(50, 6, 6))
    covs = a @ np.swapaxes(a, 1, 2) + 1e-3 * np.eye(6)  # PSD, strongly correlated
    for factor in (0.0, 0.3, 1.0):
        out = shrink_cross_covariance(covs, factor)
        assert np.allclose(out[:, :3, :3], covs[:, :3, :3]) and np.allclose(out[:, 3:, 3:], covs[:, 3:, 3:])
        assert np.allclose(out[:, :3, 3:], factor * covs[:, :3, 3:])
        assert np.allclose(out, np.swapaxes(out, 1, 2)) and np.linalg.eigvalsh(out).min() > 0
    assert np.array_equal(shrink_cross_covariance(covs, 1.0), covs)
    with pytest.raises(ValueError):
        shrink_cross_covariance(covs, 1.5)
    with pytest.raises(ValueError):
        PoseNetConfig(covariance_cross_scale=-0.1)

    model = _model(seed=5, dropout=0.3)
    torch.manual_seed(0)
    full = PosePipeline(model, mc_samples=16)(_image()).covariance
    shrunk_model = PoseNet(dataclasses.replace(model.config, covariance_cross_scale=0.0)).eval()
    shrunk_model.load_state_dict(model.state_dict())
    torch.manual_seed(0)
    shrunk = PosePipeline(shrunk_model, mc_samples=16)(_image()).covariance
    assert np.abs(full[:3, 3:]).max() > 0 and not shrunk[:3, 3:].any()
    assert np.allclose(shrunk[:3, :3], full[:3, :3]) and np.allclose(shrunk[3:, 3:], full[3:, 3:])
