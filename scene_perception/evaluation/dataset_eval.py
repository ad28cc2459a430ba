"""Score the stereo pipeline (and optionally OpenCV SGBM_3WAY in the same run) on a public dataset: each
benchmark's own metrics per scene and pooled, density, latency, a JSON file and ``report.md`` with figures.

What ``scene-perception eval --dataset NAME --root DIR`` runs.  Pure (no ROS).

Conventions (also written into every report):

* **Rates are dense**: bad-x and D1 are % of the pixels with valid GT (inside the mask), and a pixel the
  method gave no finite disparity for counts as an error.  ``density`` is the % of those pixels with a
  finite prediction; EPE (= Middlebury's avgerr) and RMS average over the finite ones.  Our pipeline's
  disparity is dense (the network answers everywhere); SGBM's holes count as errors in its ``sgbm`` row, and
  ``sgbm_filled`` scores SGBM after :func:`~scene_perception.evaluation.metrics.fill_holes_background` (the
  hole filling the KITTI devkit applies to sparse submissions).
* bad-x is ``|error| > x`` (strict, as Middlebury); D1 is ``|error| > 3 px and > 5 % of the GT`` (KITTI).
* Thresholds are px **at the resolution the dataset is read at** (MiddEval3 H: H pixels; the official
  MiddEval3 table quotes thresholds in full-resolution pixels, so its bad-2.0 at H is our bad-1 there).
* ``_noc`` keys use the dataset's non-occluded mask (Middlebury/ETH3D ``mask0nocc``, KITTI ``disp_noc``);
  they are absent where the dataset has none.  Pooled numbers weigh every pixel equally (a scene with more
  valid GT counts more), as KITTI's tables; Middlebury's own table averages per-scene numbers instead.
* The disparity range given to both methods is the dataset's bound when it has one (Middlebury ``ndisp``
  scaled to the resolution, SceneFlow 192), else the GT maximum of that pair; the pipeline runs the pair
  shrunk when that exceeds the network's range (``StereoDepthPipeline.max_disparity``).
"""

from __future__ import annotations

import heapq
import logging
import math
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from scene_perception.data.datasets.sample import DatasetSample, StereoDataset
from scene_perception.evaluation.metrics import fill_holes_background

__all__ = [
    "BENCHMARK_THRESHOLDS",
    "DatasetEvaluation",
    "add_counts",
    "disparity_range",
    "error_counts",
    "evaluate_dataset",
    "json_safe",
    "markdown_overall",
    "markdown_semantics",
    "rates",
    "write_report",
]

log = logging.getLogger(__name__)

#: bad-x thresholds (px) reported for every dataset.
BENCHMARK_THRESHOLDS: tuple[float, ...] = (0.5, 1.0, 2.0, 3.0, 4.0)

#: Columns of each benchmark's table: (header, key); ``_noc`` keys are dropped when absent.
_MIDDLEBURY_COLUMNS = [
    ("bad-0.5 %", "bad0_5"), ("bad-1 %", "bad1"), ("bad-2 %", "bad2"), ("bad-4 %", "bad4"),
    ("avgerr px", "epe"), ("rms px", "rms"),
    ("noc bad-0.5 %", "bad0_5_noc"), ("noc bad-1 %", "bad1_noc"), ("noc bad-2 %", "bad2_noc"),
    ("noc bad-4 %", "bad4_noc"), ("noc avgerr px", "epe_noc"), ("noc rms px", "rms_noc"),
]
_KITTI_COLUMNS = [("D1-all %", "d1"), ("D1-noc %", "d1_noc"), ("EPE px", "epe"), ("EPE-noc px", "epe_noc"),
                  ("bad-3 %", "bad3")]
TABLE_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "middlebury": _MIDDLEBURY_COLUMNS,
    "eth3d": _MIDDLEBURY_COLUMNS,
    "kitti2012": _KITTI_COLUMNS,
    "kitti2015": _KITTI_COLUMNS,
    "sceneflow": [("EPE px", "epe"), ("bad-1 %", "bad1"), ("bad-3 %", "bad3"), ("D1 %", "d1")],
    "cityscapes": [("EPE px", "epe"), ("bad-1 %", "bad1"), ("bad-3 %", "bad3"), ("D1 %", "d1")],
}
#: The few columns of the per-scene table.
SCENE_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "middlebury": [("bad-1 %", "bad1"), ("bad-2 %", "bad2"), ("avgerr px", "epe"),
                   ("noc bad-2 %", "bad2_noc")],
    "eth3d": [("bad-1 %", "bad1"), ("bad-2 %", "bad2"), ("avgerr px", "epe"), ("noc bad-1 %", "bad1_noc")],
    "kitti2012": [("D1-all %", "d1"), ("D1-noc %", "d1_noc"), ("EPE px", "epe")],
    "kitti2015": [("D1-all %", "d1"), ("D1-noc %", "d1_noc"), ("EPE px", "epe")],
    "sceneflow": [("EPE px", "epe"), ("bad-1 %", "bad1"), ("bad-3 %", "bad3")],
    "cityscapes": [("EPE px", "epe"), ("bad-3 %", "bad3"), ("D1 %", "d1")],
}
#: The metric that ranks a dataset's scenes from worst (figures, the shortened per-scene table).
WORST_BY: dict[str, str] = {"middlebury": "bad2", "eth3d": "bad1", "kitti2012": "d1", "kitti2015": "d1",
                            "sceneflow": "epe", "cityscapes": "d1"}
#: Figures keep at most this width (px), enough to see the errors; values stay px of the dataset.
_FIGURE_WIDTH = 640
#: Scenes listed one by one in report.md (all of them are in the JSON).
_REPORT_SCENES = 40


def _bad_key(t: float) -> str:
    return f"bad{t:g}".replace(".", "_")


# ----------------------------------------------------------------------------------------- metrics
def error_counts(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """Pixel counts and error sums of ``pred`` against ``gt`` (px, same shape) over ``mask`` & finite GT.

    Keys: ``n_pixels`` (evaluated), ``n_scored`` (evaluated with a finite prediction), ``sum_abs``,
    ``sum_sq`` (over scored pixels), ``bad0_5`` .. ``bad4`` and ``d1``: evaluated pixels that are errors
    (a non-finite prediction always is).  Sums, so that scenes pool exactly with :func:`add_counts`.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
    evaluated = np.isfinite(gt)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != gt.shape:
            raise ValueError(f"mask shape {mask.shape} differs from ground truth shape {gt.shape}")
        evaluated &= mask
    scored = evaluated & np.isfinite(pred)
    err = np.abs(pred[scored] - gt[scored])
    n_pixels, n_scored = int(evaluated.sum()), int(scored.sum())
    missing = n_pixels - n_scored
    out: dict[str, float] = {"n_pixels": n_pixels, "n_scored": n_scored, "sum_abs": float(err.sum()),
                             "sum_sq": float(np.square(err).sum())}
    for t in BENCHMARK_THRESHOLDS:
        out[_bad_key(t)] = missing + int(np.count_nonzero(err > t))
    out["d1"] = missing + int(np.count_nonzero((err > 3.0) & (err > 0.05 * np.abs(gt[scored]))))
    return out


def add_counts(total: dict[str, float] | None, counts: dict[str, float]) -> dict[str, float]:
    """``total + counts`` key by key (``total`` None: a copy of ``counts``)."""
    if total is None:
        return dict(counts)
    return {k: total[k] + counts[k] for k in total}


def rates(counts: dict[str, float]) -> dict[str, float]:
    """Metrics from :func:`error_counts` sums: ``epe``, ``rms`` (px, over scored pixels), ``bad0_5`` ..
    ``bad4``, ``d1`` and ``density`` (% of evaluated pixels), ``n_pixels``, ``n_scored``.  NaN when
    there is nothing to divide by, so an empty prediction never looks perfect."""
    n, s = counts["n_pixels"], counts["n_scored"]
    nan = float("nan")
    out: dict[str, float] = {
        "epe": counts["sum_abs"] / s if s else nan,
        "rms": math.sqrt(counts["sum_sq"] / s) if s else nan,
    }
    for t in BENCHMARK_THRESHOLDS:
        out[_bad_key(t)] = 100.0 * counts[_bad_key(t)] / n if n else nan
    out["d1"] = 100.0 * counts["d1"] / n if n else nan
    out["density"] = 100.0 * s / n if n else nan
    out["n_pixels"] = int(n)
    out["n_scored"] = int(s)
    return out


def _flat(all_counts: dict[str, float], noc_counts: dict[str, float] | None) -> dict[str, float]:
    out = rates(all_counts)
    if noc_counts is not None:
        out.update({f"{k}_noc": v for k, v in rates(noc_counts).items()})
    return out


def disparity_range(sample: DatasetSample, gt: np.ndarray | None = None) -> tuple[float | None, str]:
    """(range px, where it came from): the dataset's bound (``sample.max_disparity``), else the largest
    finite GT disparity of the pair (rounded up), else None (the network's own range)."""
    if sample.max_disparity:
        return float(sample.max_disparity), "dataset"
    gt = sample.disparity if gt is None else gt
    if gt is not None and np.isfinite(gt).any():
        return float(math.ceil(float(np.nanmax(gt)))), "gt max"
    return None, "network"


# ----------------------------------------------------------------------------------------- evaluation
@dataclass
class _Method:
    """Pooled counts and timings of one method."""

    all: dict[str, float] | None = None
    noc: dict[str, float] | None = None
    ms: list[float] = field(default_factory=list)

    def add(self, all_counts: dict[str, float], noc_counts: dict[str, float] | None) -> None:
        self.all = add_counts(self.all, all_counts)
        if noc_counts is not None:
            self.noc = add_counts(self.noc, noc_counts)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = _flat(self.all, self.noc) if self.all is not None else {}
        if self.ms:
            out["latency_ms_median"] = statistics.median(self.ms)
            out["latency_ms_mean"] = statistics.fmean(self.ms)
        return out


@dataclass
class DatasetEvaluation:
    """What :func:`evaluate_dataset` measured (``to_json`` gives the ``--json`` document)."""

    dataset: str
    root: str
    methods: dict[str, dict[str, Any]]
    scenes: list[dict[str, Any]]
    settings: dict[str, Any]
    skipped_without_gt: int = 0
    worst: list[dict[str, Any]] = field(default_factory=list)  # figure payloads, worst first
    # With a scene pipeline and labelled frames (Cityscapes gtFine): mIoU, pixel accuracy, per-class IoU
    # over the frames, and per frame; None when nothing was scored for semantics.
    semantics: dict[str, Any] | None = None

    @property
    def overall(self) -> dict[str, Any]:
        return self.methods.get("ours", {})

    def to_json(self) -> dict[str, Any]:
        return json_safe({
            "dataset": self.dataset,
            "root": self.root,
            "pairs": len(self.scenes),
            "skipped_without_gt": self.skipped_without_gt,
            "overall": self.overall,
            "methods": self.methods,
            "settings": self.settings,
            "scenes": self.scenes,
            **({"semantics": self.semantics} if self.semantics is not None else {}),
        })


def json_safe(obj: Any) -> Any:
    """NaN / inf are not JSON: null (numpy scalars become Python numbers first); the benchmarks use it too."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    return obj


def _shrunk(img: np.ndarray, width: int, interpolation: int) -> np.ndarray:
    h, w = img.shape[:2]
    if w <= width:
        return img
    size = (width, max(1, round(h * width / w)))
    if img.dtype == bool:
        return cv2.resize(img.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    return cv2.resize(img, size, interpolation=interpolation)


def evaluate_dataset(
    dataset: StereoDataset,
    pipeline: Any,
    *,
    baseline: str | None = None,
    worst: int = 3,
    progress: bool = True,
    warmup: bool = True,
    settings: dict[str, Any] | None = None,
    scene_pipeline: Any = None,
) -> DatasetEvaluation:
    """Run ``pipeline`` (a :class:`~scene_perception.pipelines.stereo_depth.StereoDepthPipeline`) on every
    pair of ``dataset`` with GT and score it; ``baseline="sgbm"`` also runs OpenCV SGBM_3WAY (the notes'
    settings, :mod:`scene_perception.pipelines.sgbm`) over the same range.  Pairs without GT are skipped
    and counted.  ``worst`` figures' data are kept for :func:`write_report`.  ``warmup`` runs the pipeline
    once on the first pair, untimed, so that one-off start-up costs (oneDNN kernel selection, engine
    builds) do not land in the first pair's latency.

    ``scene_pipeline`` (a :class:`~scene_perception.pipelines.scene.ScenePipeline`) also scores semantics on
    the samples that carry labels (``sample.semantic``, 255 = ignore): a confusion matrix pooled over the
    frames gives mIoU (classes present in the labels), pixel accuracy and per-class IoU; a labelled frame
    without disparity GT is scored for semantics only."""
    from tqdm import tqdm

    from scene_perception.evaluation.scene_metrics import ConfusionMatrix
    from scene_perception.pipelines.sgbm import SGBMMatcher, num_disparities_for

    if baseline not in (None, "none", "sgbm"):
        raise ValueError(f"baseline must be 'sgbm' or None, got {baseline!r}")
    use_sgbm = baseline == "sgbm"
    name = dataset.name
    key = WORST_BY.get(name, "bad2")
    methods: dict[str, _Method] = {"ours": _Method()}
    if use_sgbm:
        methods.update(sgbm=_Method(), sgbm_filled=_Method())
    matchers: dict[int, SGBMMatcher] = {}
    scenes: list[dict[str, Any]] = []
    heap: list[tuple[float, int, dict[str, Any]]] = []
    skipped = 0
    bar = tqdm(dataset, total=len(dataset), desc=f"eval {name}", unit="pair", disable=not progress,
               dynamic_ncols=True)
    confusion = None
    semantic_frames: list[dict[str, Any]] = []
    if scene_pipeline is not None:
        class_names = tuple(scene_pipeline.class_names)
        confusion = ConfusionMatrix(len(class_names))
    for index, sample in enumerate(bar):
        if confusion is not None and sample.semantic is not None:
            t0 = time.perf_counter()
            labels = scene_pipeline(sample.left).labels
            frame = ConfusionMatrix(confusion.num_classes)
            frame.update(labels, sample.semantic)
            confusion.matrix += frame.matrix
            semantic_frames.append({"name": sample.name, "miou": 100.0 * frame.miou(),
                                    "pixel_accuracy": 100.0 * frame.pixel_accuracy(),
                                    "ms": (time.perf_counter() - t0) * 1000.0})
        if sample.disparity is None:
            skipped += 1
            continue
        gt = sample.disparity
        if sample.max_evaluated_disparity:
            gt = np.where(gt < sample.max_evaluated_disparity, gt, np.nan).astype(np.float32)
        rng, source = disparity_range(sample, gt)
        pipeline.max_disparity = rng
        if warmup:
            pipeline(sample.left, sample.right)
            warmup = False
        t0 = time.perf_counter()
        result = pipeline(sample.left, sample.right)
        ms = (time.perf_counter() - t0) * 1000.0
        pred = np.where(np.isfinite(result.disparity), result.disparity, np.nan).astype(np.float32)
        noc = sample.nonoccluded
        ours_all = error_counts(pred, gt)
        ours_noc = error_counts(pred, gt, noc) if noc is not None else None
        methods["ours"].add(ours_all, ours_noc)
        methods["ours"].ms.append(ms)
        evaluated = np.isfinite(gt)
        h, w = gt.shape
        scene: dict[str, Any] = {
            "name": sample.name, "size": [h, w], "max_disparity": rng, "range_source": source,
            "scale": float(result.scale), "ms": ms,
            # The pipeline's own validity (what the node publishes) over the scored pixels; not a metric.
            "valid_pct": 100.0 * float(result.valid[evaluated].mean()) if evaluated.any() else float("nan"),
            **_flat(ours_all, ours_noc),
        }
        if use_sgbm:
            search = float(rng) if rng else float(pipeline.network_max_disparity)
            nd = num_disparities_for(search)
            if w <= nd:
                log.warning("%s: %d px wide, SGBM needs more than its %d disparities; not run", sample.name,
                            w, nd)
            else:
                if nd not in matchers:
                    matchers[nd] = SGBMMatcher(float(nd))
                matcher = matchers[nd]
                t0 = time.perf_counter()
                sparse = matcher(sample.left, sample.right)
                sgbm_ms = (time.perf_counter() - t0) * 1000.0
                filled = fill_holes_background(sparse)
                for label, disp in (("sgbm", sparse), ("sgbm_filled", filled)):
                    a = error_counts(disp, gt)
                    b = error_counts(disp, gt, noc) if noc is not None else None
                    methods[label].add(a, b)
                    scene[label] = _flat(a, b)
                methods["sgbm"].ms.append(sgbm_ms)
                scene["sgbm"]["ms"] = sgbm_ms
        scenes.append(scene)
        score = scene.get(key, float("nan"))
        score = score if math.isfinite(score) else -math.inf
        if worst > 0 and (len(heap) < worst or score > heap[0][0]):
            payload = {
                "name": sample.name, "score": scene.get(key), "key": key,
                "left": _shrunk(sample.left, _FIGURE_WIDTH, cv2.INTER_AREA),
                "gt": _shrunk(gt, _FIGURE_WIDTH, cv2.INTER_NEAREST),
                "pred": _shrunk(pred, _FIGURE_WIDTH, cv2.INTER_NEAREST),
                "std": _shrunk(result.disparity_std.astype(np.float32), _FIGURE_WIDTH, cv2.INTER_NEAREST),
                "mask": None if noc is None else _shrunk(noc, _FIGURE_WIDTH, cv2.INTER_NEAREST),
            }
            item = (score, index, payload)
            if len(heap) < worst:
                heapq.heappush(heap, item)
            else:
                heapq.heapreplace(heap, item)
        if progress and key in scene:
            bar.set_postfix({key: f"{scene[key]:.2f}"})
    bar.close()
    semantics = None
    if confusion is not None and semantic_frames:
        iou = confusion.iou()
        semantics = {
            "frames": len(semantic_frames), "miou": 100.0 * confusion.miou(),
            "pixel_accuracy": 100.0 * confusion.pixel_accuracy(),
            "per_class_iou": {c: 100.0 * float(v) for c, v in zip(class_names, iou, strict=True)},
            "latency_ms_median": statistics.median(f["ms"] for f in semantic_frames),
            "scenes": semantic_frames,
        }
    return DatasetEvaluation(
        dataset=name, root=str(dataset.root),
        methods={k: m.summary() for k, m in methods.items()},
        scenes=scenes, settings=dict(settings or {}), skipped_without_gt=skipped,
        worst=[p for _, _, p in sorted(heap, key=lambda t: (-t[0], t[1]))], semantics=semantics,
    )


def markdown_semantics(semantics: dict[str, Any]) -> str:
    """The semantic scores as a markdown table: mIoU, pixel accuracy, then one column per class."""
    names = list(semantics["per_class_iou"])
    head = "| frames | mIoU % | pixel acc % | " + " | ".join(f"{n} IoU %" for n in names) + " |"
    sep = "|---|---|---|" + "---|" * len(names)
    row = (f"| {semantics['frames']} | {_fmt(semantics['miou'], 1)} | "
           f"{_fmt(semantics['pixel_accuracy'], 1)} | "
           + " | ".join(_fmt(semantics["per_class_iou"][n], 1) for n in names) + " |")
    return "\n".join([head, sep, row])


# ----------------------------------------------------------------------------------------- report
def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else "n/a"
    return str(value)


_METHOD_NAMES = {"ours": "ours (dense)", "sgbm": "SGBM_3WAY (holes = errors)",
                 "sgbm_filled": "SGBM_3WAY hole-filled"}


def _columns(ev: DatasetEvaluation, table: dict[str, list[tuple[str, str]]] = TABLE_COLUMNS
             ) -> list[tuple[str, str]]:
    cols = table.get(ev.dataset, table["sceneflow"])
    has_noc = any(k.endswith("_noc") for k in ev.overall)
    return [c for c in cols if has_noc or not c[1].endswith("_noc")]


def markdown_overall(ev: DatasetEvaluation) -> str:
    """The pooled table: one row per method, the benchmark's columns, density and median latency."""
    cols = [*_columns(ev), ("density %", "density")]
    header = ["method", *(c[0] for c in cols), "ms (median)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, m in ev.methods.items():
        if not m:
            continue
        ms = m.get("latency_ms_median") if method != "sgbm_filled" else None
        lines.append("| " + " | ".join([_METHOD_NAMES.get(method, method),
                                        *(_fmt(m.get(k)) for _, k in cols), _fmt(ms, 0)]) + " |")
    return "\n".join(lines)


def _markdown_scenes(ev: DatasetEvaluation) -> tuple[str, str]:
    cols = _columns(ev, SCENE_COLUMNS)
    key = WORST_BY.get(ev.dataset, "bad2")
    key_header = next((h for h, k in TABLE_COLUMNS.get(ev.dataset, []) if k == key), key)
    scenes = ev.scenes
    note = ""
    if len(scenes) > _REPORT_SCENES:

        def badness(scene: dict[str, Any]) -> float:
            value = scene.get(key, math.nan)
            return value if math.isfinite(value) else -math.inf

        scenes = sorted(scenes, key=badness, reverse=True)[:_REPORT_SCENES]
        note = f"the {_REPORT_SCENES} worst of {len(ev.scenes)} by ours' {key} (all of them are in the JSON)"
    has_sgbm = "sgbm_filled" in ev.methods
    header = ["scene", "size", "range px (source)", "scale", *(f"ours {c[0]}" for c in cols)]
    if has_sgbm:
        header += [f"SGBM filled {key_header}", "SGBM density %"]
    header += ["ours ms"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for s in scenes:
        row = [s["name"], f"{s['size'][1]}x{s['size'][0]}",
               f"{_fmt(s['max_disparity'], 0)} ({s['range_source']})", _fmt(s["scale"]),
               *(_fmt(s.get(k)) for _, k in cols)]
        if has_sgbm:
            row += [_fmt(s.get("sgbm_filled", {}).get(key)), _fmt(s.get("sgbm", {}).get("density"), 1)]
        row += [_fmt(s["ms"], 0)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines), note


def write_report(ev: DatasetEvaluation, out_dir: str | Path, command: str = "") -> Path:
    """``out_dir/report.md`` with the pooled and per-scene tables, the conventions, and figures of the
    worst scenes (left image, GT, prediction, |error|, uncertainty, bad-2) in ``out_dir/figures``."""
    from scene_perception.evaluation.figures import stereo_figure

    out = Path(out_dir)
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    s = ev.settings
    lines = [f"# Stereo benchmark: {ev.dataset} ({len(ev.scenes)} pairs)", ""]
    if command:
        lines += ["```bash", command, "```", ""]
    lines += [
        f"- data: `{ev.root}`" + (f" ({s['reader']})" if s.get("reader") else ""),
        f"- model: {s.get('model', '?')}, weights `{s.get('weights') or 'none'}`"
        + ("" if s.get("trained", True) else " **(UNTRAINED: numbers meaningless)**"),
        f"- backend {s.get('backend', '?')} on {s.get('device', '?')}; local refinement "
        f"{'on' if s.get('local_refinement') else 'off'}"
        + (f"; baseline {s['baseline']}" if s.get("baseline") else ""),
    ]
    if ev.skipped_without_gt:
        lines.append(f"- {ev.skipped_without_gt} pair(s) without GT skipped")
    lines += ["", "## Overall (pixel-pooled)", "", markdown_overall(ev), "",
              "Rates are % of the pixels with valid GT, a missing prediction counting as an error (dense); "
              "EPE (avgerr) and RMS average over the pixels with a finite prediction; density is the % of "
              "valid-GT pixels with one.  Thresholds are px at the resolution the data were read at.  "
              "SGBM's `holes = errors` row scores its raw output; `hole-filled` fills its holes with the "
              "background neighbour first.  Latency is the wall time of one pair (ours: the whole "
              "pipeline, refinement included).", ""]
    if ev.dataset == "cityscapes":
        lines += ["**Cityscapes' disparity is SGM output, not ground truth**: these numbers are agreement "
                  "with SGM.", ""]
    if ev.semantics is not None:
        lines += ["## Semantics (scene network on the left image)", "", markdown_semantics(ev.semantics), "",
                  "IoU pooled over the frames' pixels (confusion matrix), labels mapped to this package's "
                  "classes, unmapped labels ignored; mIoU over the classes present in the labels.", ""]
    table, note = _markdown_scenes(ev)
    lines += ["## Per scene" + (f" ({note})" if note else ""), "", table, ""]
    if ev.worst:
        lines += ["## Worst scenes", ""]
        for i, p in enumerate(ev.worst, 1):
            path = figures / f"worst_{i}.png"
            title = f"{p['name']}: ours {p['key']} {_fmt(p['score'])}"
            stereo_figure(path, p["left"], p["gt"], p["pred"], p["std"], p["mask"], title)
            lines += [f"### {i}. {p['name']} ({p['key']} {_fmt(p['score'])})", "",
                      f"![{p['name']}](figures/{path.name})", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def scenes_summary(scenes: Iterable[dict[str, Any]]) -> str:
    """One line: how many pairs ran shrunk and the range sources (for the console)."""
    scenes = list(scenes)
    shrunk = sum(1 for s in scenes if s["scale"] < 1.0)
    sources = sorted({s["range_source"] for s in scenes})
    return f"{len(scenes)} pairs, {shrunk} run shrunk for their range; range from {', '.join(sources)}"
