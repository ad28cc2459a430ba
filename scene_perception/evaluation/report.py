"""Markdown reports with figures for bag evaluations (``scene-perception eval`` and the demo): stereo, the
scene node's semantics (plus calibration and instance scores) when the bag has semantic ground truth, and the
pose node's errors and covariance calibration when it has ground-truth poses."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from scene_perception.evaluation.figures import stereo_figure
from scene_perception.evaluation.pose import CHI2_2SIGMA_3DOF, CHI2_2SIGMA_6DOF, TWO_SIGMA_MASS, pose_errors
from scene_perception.evaluation.pose_bag_eval import PoseEvaluation
from scene_perception.evaluation.scene_bag_eval import SceneEvaluation, SceneOfflineEvaluation
from scene_perception.evaluation.stereo_bag_eval import SKY_VALID_NOTE, StereoEvaluation
from scene_perception.evaluation.uncertainty import sparsification


def sparsification_figure(path: Path, error: np.ndarray, uncertainty: np.ndarray, title: str) -> Path:
    """Model vs oracle sparsification curves (what AUSE integrates)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fractions, model = sparsification(error, uncertainty, steps=40)
    _, oracle = sparsification(error, error, steps=40)
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.plot(fractions, model, label="by predicted uncertainty")
    ax.plot(fractions, oracle, "--", label="oracle (by true error)")
    ax.set_xlabel("fraction of pixels removed (most uncertain first)")
    ax.set_ylabel("mean error / mean error of all")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def semantic_figure(path: Path, left: np.ndarray, gt: np.ndarray, pred: np.ndarray, title: str) -> Path:
    """Left image, GT and predicted class colours, and where they disagree."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from scene_perception.models.labels import colourise_semantic

    fig, axes = plt.subplots(2, 2, figsize=(9, 9 * left.shape[0] / left.shape[1] + 0.6))
    panels = (
        (left, "left image"),
        (colourise_semantic(gt), "ground truth"),
        (colourise_semantic(pred), "scene node semantic/labels"),
        (np.where((pred != gt)[..., None], np.uint8(255), np.uint8(0)).repeat(3, 2), "wrong (white)"),
    )
    for ax, (img, name) in zip(axes.ravel(), panels, strict=True):
        ax.imshow(img)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def scene_section(
    out_dir: Path, ev: SceneEvaluation, label: str, offline: SceneOfflineEvaluation | None = None
) -> tuple[list[str], list[str]]:
    """Markdown lines for the semantic results and the figures written for them (``semantic.png``);
    ``offline`` adds the pipeline's calibration (ECE) and instance scores."""
    figures: list[str] = []
    if ev.last:
        semantic_figure(
            out_dir / "semantic.png",
            ev.last["left"],
            ev.last["gt"],
            ev.last["pred"],
            f"last frame: mIoU {ev.frames[-1].miou * 100:.1f} %",
        )
        figures.append("semantic.png")
    iou = ev.iou()
    lines = [
        "## Semantics (scene node)",
        "",
        f"- scored: {label}; {len(ev.frames)} frames, {len(ev.missing_stamps)} without output",
        f"- mIoU {_fmt(ev.miou * 100, 1)} % (pooled confusion matrix, classes present in the GT), "
        f"pixel accuracy {_fmt(ev.pixel_accuracy * 100, 1)} %",
        *(offline_lines(offline) if offline is not None else []),
        "",
        "| " + " | ".join(iou) + " |",
        "|" + "---|" * len(iou),
        "| " + " | ".join(_fmt(v * 100, 1) for v in iou.values()) + " |",
        "",
        "| frame | stamp ns | mIoU % | pixel acc % |",
        "|---|---|---|---|",
    ]
    for i, fr in enumerate(ev.frames):
        lines.append(
            f"| {i} | {fr.stamp_ns} | {_fmt(fr.miou * 100, 1)} | {_fmt(fr.pixel_accuracy * 100, 1)} |"
        )
    return lines + [""], figures


def offline_lines(o: SceneOfflineEvaluation) -> list[str]:
    """Bullets for the scores only the pipeline can give (the node publishes no probabilities/offsets)."""
    return [
        f"- calibration (the same ScenePipeline offline on the bag's left images, mc_samples {o.mc_samples}, "
        f"{o.frames} frames): ECE {_fmt(o.ece, 4)}, MCE {_fmt(o.mce, 4)} ({o.ece_bins} bins, max class "
        f"probability vs label correct, all pixels; mean confidence {_fmt(o.mean_confidence * 100, 1)} %, "
        f"accuracy {_fmt(o.accuracy * 100, 1)} %)",
        f"- instances (same pipeline): offset error {_fmt(o.instance_error_px)} px (mean over "
        f"{o.instance_pixels} GT instance pixels); clustered instances >= 20 px, IoU > 0.5: recall "
        f"{_fmt(o.instance_recall * 100, 1)} %, precision {_fmt(o.instance_precision * 100, 1)} % "
        f"({o.instances_matched} of {o.instances_gt} GT matched, {o.instances_pred} predicted)",
    ]


def pose_section(ev: PoseEvaluation, label: str, warning: str = "") -> list[str]:
    """Markdown lines for the pose node: median errors and the 2-sigma calibration fractions."""
    lines = ["## Camera pose (pose node)", ""]
    if warning:
        lines += [f"**WARNING: {warning}.**", ""]
    lines.append(f"- scored: {label}; {len(ev.stamps_ns)} frames, {len(ev.missing_stamps)} without output")
    m = ev.metrics
    if not m:
        return lines + [""]
    t_err, r_err, _ = pose_errors(ev.pred_position, ev.pred_quaternion, ev.gt_position, ev.gt_quaternion)
    lines += [
        f"- median translation error {_fmt(m['median_translation_m'], 3)} m, median rotation error "
        f"{_fmt(m['median_rotation_deg'], 3)} deg (mean {_fmt(m['mean_translation_m'], 3)} m, "
        f"{_fmt(m['mean_rotation_deg'], 3)} deg)",
        f"- inside the predicted 2-sigma ellipsoid (squared Mahalanobis <= {CHI2_2SIGMA_3DOF:.3f} for 3 DoF, "
        f"{CHI2_2SIGMA_6DOF:.3f} for 6; calibrated = {TWO_SIGMA_MASS:.3f}): translation "
        f"{_fmt(m['inside_2sigma_translation'], 3)}, rotation {_fmt(m['inside_2sigma_rotation'], 3)}, "
        f"6-DoF pose {_fmt(m['inside_2sigma_pose'], 3)}",
        f"- median predicted std: {_fmt(m['median_predicted_std_translation_m'], 3)} m, "
        f"{_fmt(m['median_predicted_std_rotation_deg'], 3)} deg",
        "",
        "| frame | stamp ns | t err m | R err deg |",
        "|---|---|---|---|",
    ]
    for i, (stamp, t, r) in enumerate(zip(ev.stamps_ns, t_err, r_err, strict=True)):
        lines.append(f"| {i} | {stamp} | {_fmt(float(t), 3)} | {_fmt(float(r), 3)} |")
    return lines + [""]


def _fmt(x: float, digits: int = 2) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def write_stereo_report(
    out_dir: Path,
    ev: StereoEvaluation,
    latencies: list[float],
    title: str,
    label: str,
    bag: Path,
    out_bag: Path,
    scene: SceneEvaluation | None = None,
    scene_label: str = "",
    scene_offline: SceneOfflineEvaluation | None = None,
    pose: PoseEvaluation | None = None,
    pose_label: str = "",
    pose_warning: str = "",
) -> Path:
    """Write ``report.md``, ``stereo.png`` (last frame) and ``sparsification.png`` into ``out_dir``; with
    ``scene``, also a semantics section (ECE / instances from ``scene_offline``) and ``semantic.png``; with
    ``pose``, a camera pose section."""
    out_dir.mkdir(parents=True, exist_ok=True)
    last = ev.last
    f = ev.frames[-1].disparity
    stereo_figure(
        out_dir / "stereo.png",
        last["left"],
        last["gt"],
        last["pred"],
        last.get("std"),
        last["mask"],
        f"{title}\nlast frame: EPE {f['epe']:.2f} px, bad-2 {f['bad2']:.1f} %",
    )
    figures = ["stereo.png"]
    if "std" in last:
        scored = last["mask"] & np.isfinite(last["pred"]) & np.isfinite(last["std"])
        if scored.any():
            sparsification_figure(
                out_dir / "sparsification.png",
                np.abs(last["pred"] - last["gt"])[scored],
                last["std"][scored],
                "sparsification, last frame",
            )
            figures.append("sparsification.png")
    p = ev.pooled
    finite = sorted(x for x in latencies if math.isfinite(x))
    pct = (lambda q: finite[min(len(finite) - 1, int(q * len(finite)))]) if finite else (lambda q: math.nan)
    lines = [
        f"# {title}",
        "",
        f"- ground truth: `{bag}`",
        f"- node outputs (rosbag2): `{out_bag}`",
        f"- scored: {label}; {len(ev.frames)} frames, {len(ev.missing_stamps)} without output",
        f"- written {time.strftime('%Y-%m-%d %H:%M:%S')}",
        "",
        "## Pooled over all frames",
        "",
        "| EPE px | bad-1 % | bad-2 % | bad-4 % | D1 % | density % | depth abs-rel | depth RMSE m | AUSE "
        "| sky valid % |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {_fmt(p['epe'])} | {_fmt(p['bad1'], 1)} | {_fmt(p['bad2'], 1)} | {_fmt(p['bad4'], 1)} | "
        f"{_fmt(p['d1'], 1)} | {_fmt(p['density'], 1)} | {_fmt(ev.depth_mean.get('abs_rel', math.nan), 3)} | "
        f"{_fmt(ev.depth_mean.get('rmse', math.nan))} | {_fmt(ev.ause_mean, 3)} | "
        f"{_fmt(ev.far_published, 1)} |",
        "",
        f"sky valid %: {SKY_VALID_NOTE}",
        "",
        "Latency (publish -> all outputs recorded, lock-step replay, ms): "
        f"p50 {_fmt(pct(0.5), 0)}, p95 {_fmt(pct(0.95), 0)}, "
        f"max {_fmt(finite[-1] if finite else math.nan, 0)}",
        "",
        "## Per frame",
        "",
        "| frame | stamp ns | EPE px | bad-2 % | D1 % | density % | depth abs-rel | AUSE | sky valid % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, fr in enumerate(ev.frames):
        d = fr.disparity
        lines.append(
            f"| {i} | {fr.stamp_ns} | {_fmt(d['epe'])} | {_fmt(d['bad2'], 1)} | {_fmt(d['d1'], 1)} | "
            f"{_fmt(d['density'], 1)} | {_fmt(fr.depth.get('abs_rel', math.nan), 3)} | "
            f"{_fmt(fr.uncertainty.get('ause', math.nan), 3)} | "
            f"{_fmt(fr.far.get('published', math.nan), 1)} |"
        )
    lines.append("")
    if scene is not None:
        scene_lines, scene_figures = scene_section(out_dir, scene, scene_label, scene_offline)
        lines += scene_lines
        figures += scene_figures
    if pose is not None:
        lines += pose_section(pose, pose_label, pose_warning)
    lines += ["## Figures", ""] + [f"![{name}]({name})" for name in figures] + [""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
