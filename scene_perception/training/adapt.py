"""Online self-supervised adaptation of the stereo network to the stream it sees (issue 26 item 3).

Why: the shipped weights were trained on a synthetic world; a robot's cameras see other lighting, textures
and optics.  The self-supervised loss (:func:`~scene_perception.training.stereo.self_supervised_loss`:
photometric reprojection in both views, smoothness, left-right consistency, occlusion-masked) needs no
labels, so the network can keep training on the live frames.  That is only safe with guards, which are
what this module is about:

* **A held-out set decides.**  Every ``holdout_every``-th usable frame goes to a rolling held-out set that
  is never trained on.  A round trains a *candidate* copy for ``steps_per_round`` steps on random crops of
  the rolling training buffer; the candidate replaces the published weights only when its held-out
  photometric error (median over the held-out frames of the per-frame p50 of
  :func:`~scene_perception.pipelines.quality.assess`, the number the node publishes) is at least
  ``min_improvement`` (relative) below the published weights' on the *same* frames.  Otherwise the
  candidate rolls back to the published weights and its optimizer state is dropped.
* **An anchor vetoes.**  A candidate must also keep its end-point error on ``anchor_pairs`` rendered
  validation pairs of the training domain (GT known; scored, never trained on): at most
  ``max_anchor_rise`` (relative) above the published weights'.  It catches a network that forgets how to
  match: with a photometric-only loss on periodic surfaces, candidates' anchor EPE rose 10-28 %.  It does
  **not** catch a network that gets worse on the new domain only: in the audit of docs/adaptation.md a
  round lowered the held-out photometric error by 6.6 % and the anchor EPE by 3.1 %, and was accepted,
  while its EPE on test pairs of that domain rose 10 % (a disparity off by one period of a periodic
  texture warps as well as the true one).  The photometric error cannot certify depth there.
* **A second matcher vetoes.**  Each held-out frame gets OpenCV SGBM's disparity of its centre crop once,
  when it is held out.  A candidate whose share of disparities SGBM confirms within 2 px
  (:func:`~scene_perception.pipelines.quality.agreement`, mean over the held-out frames) falls more than
  ``max_sgbm_drop`` below the published weights' is rolled back: SGBM refuses ambiguous matches (uniqueness,
  left-right check), so it answers with other errors than the network's and can see a period-off disparity
  that warps well.  Off by default (``max_sgbm_drop`` < 0): in the audit's failing setting the worse
  candidate *raised* its SGBM agreement by 3 points, so the veto let it through
  (``benchmarks/results/2026-12-07_cpu/adaptation_sgbm_veto/``); SGBM is fooled by the same periodic
  texture.
* **Enough held-out frames.**  No round runs before ``min_holdout_frames`` (8) frames are held out: the
  first decisions would otherwise rest on one or two frames.
* **Bad frames never enter.**  :func:`frame_problem` refuses black or covered views, textureless ones and
  pairs whose two cameras differ grossly in brightness (one camera covered or failing): on those the
  photometric loss has a trivial or wrong minimum.  A stream of only such frames leaves the model as it was.
* **Bounded.**  The buffers hold at most ``buffer_frames`` + ``holdout_frames`` frames (as bytes); a round
  costs ``steps_per_round`` training steps of ``batch_size`` crops, a pass of the published weights and
  of the candidate over the held-out frames, and one of the candidate over the anchor (the published
  weights' anchor EPE is kept until a version is accepted).
* **Every accepted version is kept** as safetensors + model card (``adapted_vNNNN``, the newest
  ``keep_versions``) through :func:`~scene_perception.models.weights.save_stereo_model`, so a version can be
  loaded (with the usual sha256 checks), compared or rolled back to by hand.

It is an aid with measured limits, not a guarantee: the photometric error can fall while the depth gets
worse (a textureless wall warps perfectly at any disparity), which is why the acceptance threshold is
relative and the held-out frames are a rolling sample of the same stream (docs/live_quality.md).

:class:`OnlineAdapter` is the in-process core (the CLI and the benchmark drive it frame by frame);
:class:`AdaptationProcess` runs it in a background process at low priority so that training never delays
the caller (the node), handing accepted weights back as files.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import logging
import math
import multiprocessing as mp
import os
import queue
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from scene_perception.models.gcnet import GCNet
from scene_perception.models.weights import save_stereo_model
from scene_perception.pipelines.quality import agreement, assess
from scene_perception.pipelines.sgbm import SGBMMatcher
from scene_perception.training.loop import optimizer_step
from scene_perception.training.stereo import TrainConfig, self_supervised_loss

__all__ = ["LOSSES", "AdaptConfig", "AdaptationProcess", "OnlineAdapter", "RoundResult", "acceptance",
           "adapt_stream", "anchor_set", "frame_problem"]

_LOG = logging.getLogger(__name__)

#: The self-supervised loss variants (weights of :class:`TrainConfig`): ``full`` is what ``train stereo
#: --mode self_supervised`` optimises (photometric in both views, smoothness, left-right consistency, the
#: uncertainty head's NLL, occlusion-masked); ``photometric`` keeps only photometric + smoothness, which
#: moves the held-out error more but is the variant that fooled the photometric gate (module docstring).
LOSSES: dict[str, dict[str, float]] = {
    "full": {},
    "photometric": {"nll_weight": 0.0, "lr_consistency_weight": 0.0, "occlusion_check_px": 0.0},
}


@dataclass
class AdaptConfig:
    """Settings of online adaptation (bounds on memory and compute, and the acceptance rule)."""

    crop_height: int = 128
    crop_width: int = 256
    batch_size: int = 2
    steps_per_round: int = 20
    lr: float = 2e-5
    grad_clip: float = 5.0
    occlusion_check_px: float = 1.0
    buffer_frames: int = 32
    holdout_frames: int = 16
    holdout_every: int = 4
    min_train_frames: int = 4
    min_holdout_frames: int = 8
    min_improvement: float = 0.02
    anchor_pairs: int = 8
    max_anchor_rise: float = 0.03
    max_sgbm_drop: float = -1.0
    loss: str = "full"
    min_brightness: float = 0.04
    min_texture: float = 0.01
    max_brightness_ratio: float = 4.0
    keep_versions: int = 5
    seed: int = 0
    out_dir: str = "runs/adapt"

    def validate(self) -> None:
        """Refuse settings that cannot work, naming the field."""
        for name in ("crop_height", "crop_width", "batch_size", "steps_per_round", "buffer_frames",
                     "holdout_frames", "holdout_every", "min_train_frames", "min_holdout_frames",
                     "keep_versions"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.holdout_every < 2:
            raise ValueError("holdout_every must be >= 2 (every frame held out leaves none to train on)")
        if not self.lr > 0 or self.grad_clip < 0 or self.min_improvement < 0:
            raise ValueError("lr must be > 0, grad_clip and min_improvement >= 0")
        if self.min_holdout_frames > self.holdout_frames:
            raise ValueError(f"min_holdout_frames ({self.min_holdout_frames}) must be <= holdout_frames "
                             f"({self.holdout_frames})")
        if self.anchor_pairs < 0 or self.max_anchor_rise < 0:
            raise ValueError("anchor_pairs and max_anchor_rise must be >= 0")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {self.loss!r}")
        if self.max_brightness_ratio <= 1:
            raise ValueError(f"max_brightness_ratio must be > 1, got {self.max_brightness_ratio}")


def frame_problem(left: np.ndarray, right: np.ndarray, config: AdaptConfig) -> str | None:
    """Why this pair must not be trained or scored on, or None when it is usable.

    (H, W, 3) uint8 images.  Checks, in order: equal sizes, at least the crop size, each view's mean
    brightness (black frames, a covered lens), each view's texture (grey std), and the ratio of the two
    views' mean brightness (one camera covered, failing or wildly mis-exposed).
    """
    if left.shape != right.shape or left.ndim != 3:
        return f"left {left.shape} and right {right.shape} differ or are not HxWx3"
    h, w = left.shape[:2]
    if h < config.crop_height or w < config.crop_width:
        return f"frame {h}x{w} is smaller than the crop {config.crop_height}x{config.crop_width}"
    stats = []
    for side, img in (("left", left), ("right", right)):
        grey = img.astype(np.float32).mean(axis=2) / 255.0
        mean, std = float(grey.mean()), float(grey.std())
        if mean < config.min_brightness:
            return (f"{side} image is dark (mean {mean:.3f} < {config.min_brightness}): black frame or "
                    "covered lens")
        if std < config.min_texture:
            return f"{side} image has no texture (std {std:.4f} < {config.min_texture})"
        stats.append(mean)
    ratio = max(stats) / min(stats)
    if ratio > config.max_brightness_ratio:
        return (f"the views differ in brightness x{ratio:.1f} (> {config.max_brightness_ratio}): one camera "
                "covered, failing or mis-exposed")
    return None


def acceptance(before: float, after: float, anchor_before: float, anchor_after: float,
               config: AdaptConfig, sgbm_before: float = math.nan, sgbm_after: float = math.nan
               ) -> tuple[bool, str]:
    """The acceptance rule (module docstring): (accepted, why).  The held-out photometric error must drop
    by ``min_improvement``; with the SGBM veto on (``max_sgbm_drop`` >= 0) the held-out SGBM agreement
    must not fall by more than ``max_sgbm_drop`` (skipped when either is unknown: SGBM answered nowhere);
    with an anchor, the anchor EPE must not rise by more than ``max_anchor_rise``.  An unscoreable (NaN)
    held-out error never accepts."""
    photometric = f"held-out photometric error {before:.4f} -> {after:.4f}"
    needed = before * (1.0 - config.min_improvement)
    if not (math.isfinite(before) and math.isfinite(after)) or after > needed:
        return False, f"rolled back: {photometric} (needs <= {needed:.4f})"
    if config.max_sgbm_drop >= 0 and math.isfinite(sgbm_before) and math.isfinite(sgbm_after):
        floor = sgbm_before - config.max_sgbm_drop
        if sgbm_after < floor:
            return False, (f"rolled back by SGBM: held-out SGBM agreement {100 * sgbm_before:.1f} -> "
                           f"{100 * sgbm_after:.1f} % (allowed >= {100 * floor:.1f} %); {photometric}")
        photometric += f"; SGBM agreement {100 * sgbm_before:.1f} -> {100 * sgbm_after:.1f} %"
    if config.anchor_pairs > 0:
        anchor = f"anchor EPE {anchor_before:.3f} -> {anchor_after:.3f} px"
        limit = anchor_before * (1.0 + config.max_anchor_rise)
        if not (math.isfinite(anchor_before) and math.isfinite(anchor_after)) or anchor_after > limit:
            return False, f"rolled back by the anchor: {anchor} (allowed <= {limit:.3f}); {photometric}"
        return True, f"{photometric}; {anchor}"
    return True, photometric


def anchor_set(config: AdaptConfig) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """``config.anchor_pairs`` procedural *validation* pairs at the crop size (left, right as uint8 CHW,
    GT disparity, scored-pixel mask): the training domain, with GT, rendered here (no file to ship).
    Validation split: scored to veto a candidate, never trained on, never the test split."""
    from scene_perception.data.procedural import make_stereo_sample
    from scene_perception.data.splits import held_out_seeds

    out = []
    for seed in held_out_seeds(config.anchor_pairs, "validation") if config.anchor_pairs else []:
        s = make_stereo_sample(seed, width=config.crop_width, height=config.crop_height,
                               max_disparity=config.crop_width / 4.0, nuisance=True)
        gt = torch.from_numpy(np.ascontiguousarray(s.disparity, dtype=np.float32))
        mask = torch.from_numpy(np.asarray(s.nonoccluded, bool)) & torch.isfinite(gt)
        out.append((_to_tensor(s.left), _to_tensor(s.right), gt, mask))
    return out


@dataclass
class RoundResult:
    """What one adaptation round did."""

    accepted: bool
    holdout_before: float  # held-out photometric error of the published weights
    holdout_after: float  # ... of the candidate after this round
    steps: int
    seconds: float
    anchor_before: float = math.nan  # anchor EPE (px) of the published weights (NaN: no anchor)
    anchor_after: float = math.nan  # ... of the candidate
    sgbm_before: float = math.nan  # held-out SGBM agreement (0..1) of the published weights (NaN: off)
    sgbm_after: float = math.nan  # ... of the candidate
    path: str | None = None  # the accepted version's weights
    reason: str = ""
    inspected: dict[str, Any] = field(default_factory=dict)  # OnlineAdapter.inspect's numbers


@dataclass
class _Counters:
    offered: int = 0
    rejected: int = 0
    trained_on: int = 0
    held_out: int = 0
    rounds: int = 0
    accepted: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


def _to_tensor(img: np.ndarray) -> Tensor:
    """(H, W, 3) uint8 -> (3, H, W) uint8: the buffers keep bytes (a quarter of float32's memory: 40 pairs
    of 640x480 are 74 MB, not 295), converted per batch by :func:`_as_float`."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))


def _as_float(batch: Tensor, device: torch.device) -> Tensor:
    return batch.to(device).float().div_(255.0)


class OnlineAdapter:
    """The adaptation core: offer frames, run rounds, read the published weights (module docstring)."""

    def __init__(self, model: GCNet, config: AdaptConfig | None = None, device: str | torch.device = "cpu",
                 base: dict[str, Any] | None = None) -> None:
        self.config = config or AdaptConfig()
        self.config.validate()
        self.device = torch.device(device)
        self.candidate = copy.deepcopy(model).to(self.device).train()
        self.published = {k: v.detach().clone() for k, v in self.candidate.state_dict().items()}
        self.base = dict(base or {})  # what the starting weights were (name, sha256), for the cards
        self.loss_config = TrainConfig(**{"mode": "self_supervised",
                                          "occlusion_check_px": self.config.occlusion_check_px,
                                          **LOSSES[self.config.loss]})
        self.buffer: collections.deque[tuple[Tensor, Tensor]] = collections.deque(
            maxlen=self.config.buffer_frames)
        #: Held-out (left, right, SGBM's disparity of the centre crop (NaN = no answer) or None: veto off).
        self.holdout: collections.deque[tuple[Tensor, Tensor, Tensor | None]] = collections.deque(
            maxlen=self.config.holdout_frames)
        # The network's range, capped so that SGBM's search fits the crop (a multiple of 16 below its width).
        sgbm_range = min(int(getattr(model.config, "max_disparity", 128)), self.config.crop_width // 2)
        self._sgbm = SGBMMatcher(float(sgbm_range)) if self.config.max_sgbm_drop >= 0 else None
        self.counters = _Counters()
        self.version = 0
        self.history: list[dict[str, Any]] = []
        self._usable = 0
        self._rng = np.random.default_rng(self.config.seed)
        self._optimizer = self._new_optimizer()
        self.anchor = anchor_set(self.config)
        #: Called with the trained candidate before each decision; its dict lands in
        #: ``RoundResult.inspected``.  For benchmarks that score candidates on data the adapter never sees
        #: (how often the gate accepts a worse network); None in the node.
        self.inspect: Callable[[torch.nn.Module], dict[str, Any]] | None = None
        self._published_anchor: float | None = None  # anchor EPE of the published weights, once scored

    def _new_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.candidate.parameters(), lr=self.config.lr)

    # ------------------------------------------------------------------------------------ frames
    def offer(self, left: np.ndarray, right: np.ndarray) -> str:
        """Take one rectified pair; returns ``train``, ``holdout`` or why it was refused (cheap: a check and
        a copy, no network)."""
        self.counters.offered += 1
        problem = frame_problem(left, right, self.config)
        if problem is not None:
            self.counters.rejected += 1
            key = problem.split(" (")[0]
            self.counters.reasons[key] = self.counters.reasons.get(key, 0) + 1
            return problem
        self._usable += 1
        pair = (_to_tensor(left), _to_tensor(right))
        if self._usable % self.config.holdout_every == 0:
            sgbm = None
            if self._sgbm is not None:
                left_c, right_c = (self._centre(t).permute(1, 2, 0).numpy() for t in pair)
                sgbm = torch.from_numpy(self._sgbm.match_full_width(left_c, right_c))
            self.holdout.append((*pair, sgbm))
            self.counters.held_out += 1
            return "holdout"
        self.buffer.append(pair)
        self.counters.trained_on += 1
        return "train"

    def ready(self) -> bool:
        """Enough frames for a round: ``min_train_frames`` to train on and ``min_holdout_frames`` held out
        (a decision on one or two held-out frames is noise: see the module docstring)."""
        return (len(self.buffer) >= self.config.min_train_frames
                and len(self.holdout) >= self.config.min_holdout_frames)

    # ------------------------------------------------------------------------------------ scoring
    def _centre(self, img: Tensor) -> Tensor:
        c = self.config
        h, w = img.shape[1:]
        y0, x0 = (h - c.crop_height) // 2, (w - c.crop_width) // 2
        return img[:, y0:y0 + c.crop_height, x0:x0 + c.crop_width]

    @contextlib.contextmanager
    def _scoring(self, state: dict[str, Tensor] | None) -> Iterator[None]:
        """The candidate in eval mode for scoring: as it is (``state`` None) or with those weights loaded
        temporarily; train mode (BatchNorm frozen) and its own weights are back afterwards."""
        saved = None
        if state is not None:
            saved = {k: v.detach().clone() for k, v in self.candidate.state_dict().items()}
            self.candidate.load_state_dict(state)
        self.candidate.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self._train_mode()
            if saved is not None:
                self.candidate.load_state_dict(saved)

    def holdout_error(self, state: dict[str, Tensor] | None = None) -> float:
        """Median over the held-out frames of their photometric p50 (centre crops, the network's disparity);
        ``state`` None: the candidate as it is, else those weights (loaded into the candidate temporarily).
        NaN when no held-out frame can be scored."""
        return self.holdout_scores(state)[0]

    def holdout_scores(self, state: dict[str, Tensor] | None = None) -> tuple[float, float]:
        """(:meth:`holdout_error`, the mean over the held-out frames of the share of the network's
        disparities SGBM confirms within 2 px where it answered; NaN when off or nowhere known), from one
        pass over the held-out frames."""
        if not self.holdout:
            return math.nan, math.nan
        values, shares = [], []
        with self._scoring(state):
            for left, right, other in self.holdout:
                lt = _as_float(self._centre(left)[None], self.device)
                rt = _as_float(self._centre(right)[None], self.device)
                disp, _ = self.candidate(lt, rt)
                valid = torch.isfinite(disp) & (disp >= 0)
                q = assess(lt, rt, disp, valid, want_vertical=False)[0]
                if q.known:
                    values.append(q.photometric_p50)
                if other is not None:
                    share = float(agreement(disp.float(), valid, other.to(self.device)[None, None])[0])
                    if math.isfinite(share):
                        shares.append(share)
        return (float(np.median(values)) if values else math.nan,
                float(np.mean(shares)) if shares else math.nan)

    def anchor_error(self, state: dict[str, Tensor] | None = None) -> float:
        """Mean end-point error (px) over the anchor pairs' valid non-occluded GT pixels (``state`` as in
        :meth:`holdout_error`); NaN without an anchor."""
        if not self.anchor:
            return math.nan
        total, count = 0.0, 0
        with self._scoring(state):
            for left, right, gt, mask in self.anchor:
                disp, _ = self.candidate(_as_float(left[None], self.device),
                                         _as_float(right[None], self.device))
                err = (disp[0, 0].float().cpu() - gt).abs()[mask]
                total, count = total + float(err.sum()), count + int(err.numel())
        return total / count if count else math.nan

    def _published_anchor_error(self) -> float:
        """The published weights' anchor EPE, scored once per published version (the anchor is fixed; the
        held-out frames roll with the stream, so their error is rescored every round)."""
        if self._published_anchor is None:
            self._published_anchor = self.anchor_error(self.published)
        return self._published_anchor

    # ------------------------------------------------------------------------------------ training
    def _train_mode(self) -> None:
        """Train mode with BatchNorm frozen: the running statistics were estimated over large training
        batches; re-estimating them from a few crops of one stream (momentum 0.1 a step) shifts every
        layer's output in eval mode, and the held-out error rises even where the weights barely move."""
        self.candidate.train()
        for module in self.candidate.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()

    def _batch(self) -> tuple[Tensor, Tensor]:
        c = self.config
        lefts, rights = [], []
        for i in self._rng.integers(0, len(self.buffer), size=c.batch_size):
            left, right = self.buffer[int(i)]
            h, w = left.shape[1:]
            y0 = int(self._rng.integers(0, h - c.crop_height + 1))
            x0 = int(self._rng.integers(0, w - c.crop_width + 1))
            win = (slice(None), slice(y0, y0 + c.crop_height), slice(x0, x0 + c.crop_width))
            lefts.append(left[win])
            rights.append(right[win])
        return _as_float(torch.stack(lefts), self.device), _as_float(torch.stack(rights), self.device)

    def run_round(self) -> RoundResult:
        """Train the candidate ``steps_per_round`` steps, then accept or roll back (module docstring)."""
        t0 = time.monotonic()
        if not self.ready():
            return RoundResult(False, math.nan, math.nan, 0, 0.0, reason="not enough frames yet")
        before, sgbm_before = self.holdout_scores(self.published)
        anchor_before = self._published_anchor_error()
        self.candidate.load_state_dict(self.published)
        self._train_mode()

        def forward(*args: Tensor, **kwargs: Any) -> tuple[Tensor, ...]:
            return tuple(t.float() for t in self.candidate(*args, **kwargs))

        for _ in range(self.config.steps_per_round):
            left, right = self._batch()
            loss, _, _ = self_supervised_loss(self.loss_config, forward, left, right)
            if not torch.isfinite(loss):
                break  # nothing learnt from this step; the held-out check below decides
            optimizer_step(loss, self._optimizer, self.candidate.parameters(), self.config.grad_clip)
        after, sgbm_after = self.holdout_scores()
        anchor_after = self.anchor_error()
        inspected = {}
        if self.inspect is not None:
            inspected = self.inspect(self.candidate)
            self._train_mode()
        self.counters.rounds += 1
        accepted, why = acceptance(before, after, anchor_before, anchor_after, self.config, sgbm_before,
                                   sgbm_after)
        result = RoundResult(accepted, before, after, self.config.steps_per_round, time.monotonic() - t0,
                             anchor_before=anchor_before, anchor_after=anchor_after, sgbm_before=sgbm_before,
                             sgbm_after=sgbm_after, reason=why, inspected=inspected)
        if accepted:
            self.published = {k: v.detach().clone() for k, v in self.candidate.state_dict().items()}
            self._published_anchor = anchor_after
            self.counters.accepted += 1
            result.path = str(self._save_version(result))
        else:
            self.candidate.load_state_dict(self.published)  # roll back
            self._optimizer = self._new_optimizer()
        self.history.append({k: v for k, v in asdict(result).items()})
        return result

    def _save_version(self, result: RoundResult) -> Path:
        """Write the published weights as ``adapted_vNNNN`` (+ card); keep the newest ``keep_versions``."""
        self.version += 1
        out = Path(self.config.out_dir)
        path = out / f"adapted_v{self.version:04d}.safetensors"
        model = self.published_model()
        card = {"name": path.stem, "trained": True, "training": {
            "kind": "online self-supervised adaptation (scene_perception.training.adapt)",
            "adapted_from": self.base, "version": self.version, "config": asdict(self.config),
            "rounds": self.counters.rounds, "frames_trained_on": self.counters.trained_on,
            "frames_held_out": self.counters.held_out, "frames_rejected": self.counters.rejected,
            "torch": torch.__version__},
            "metrics": {"holdout_photometric_before": result.holdout_before,
                        "holdout_photometric_after": result.holdout_after,
                        "anchor_epe_before": result.anchor_before, "anchor_epe_after": result.anchor_after,
                        "holdout_sgbm_agreement_before": result.sgbm_before,
                        "holdout_sgbm_agreement_after": result.sgbm_after}}
        save_stereo_model(model, path, card)
        versions = sorted(out.glob("adapted_v*.safetensors"))
        for old in versions[:-self.config.keep_versions]:
            old.unlink(missing_ok=True)
            old.with_suffix(".json").unlink(missing_ok=True)
        _LOG.info("adaptation: accepted version %d (%s) -> %s", self.version, result.reason if result.reason
                  else f"{result.holdout_before:.4f} -> {result.holdout_after:.4f}", path)
        return path

    def published_model(self) -> GCNet:
        """A CPU copy of the network with the published (accepted) weights, in eval mode."""
        model = copy.deepcopy(self.candidate).cpu().eval()
        model.load_state_dict({k: v.cpu() for k, v in self.published.items()})
        return model


def adapt_stream(adapter: OnlineAdapter, stream: Iterator[tuple[np.ndarray, np.ndarray]], minutes: float,
                 max_rounds: float = math.inf, give_up_after: int = 100,
                 on_round: Callable[[RoundResult], None] | None = None,
                 on_refused: Callable[[str], None] | None = None) -> tuple[list[RoundResult], bool]:
    """Drive ``adapter`` from a recorded ``stream`` (the CLI and the benchmark): offer 4 frames, as a live
    stream brings a few between rounds, then run a round when the adapter is ready; until ``minutes`` or
    ``max_rounds`` are spent.  Returns (the rounds, gave up): it gives up when ``give_up_after`` frames were
    offered and the adapter is still not ready (e.g. every frame refused by the gate)."""
    t_end = time.monotonic() + minutes * 60.0
    rounds: list[RoundResult] = []
    while len(rounds) < max_rounds and time.monotonic() < t_end:
        for _ in range(4):
            route = adapter.offer(*next(stream))
            if route not in ("train", "holdout") and on_refused is not None:
                on_refused(route)
        if adapter.ready():
            rounds.append(adapter.run_round())
            if on_round is not None:
                on_round(rounds[-1])
        elif adapter.counters.offered > give_up_after:
            return rounds, True
    return rounds, False


# ---------------------------------------------------------------------------------- background process
def _worker(weights: str, config: AdaptConfig, frames: Any, results: Any, stop: Any, niceness: int) -> None:
    """The child process: lowest priority, one thread; trains whenever frames are there."""
    try:
        os.nice(niceness)
    except OSError:
        pass
    torch.set_num_threads(1)
    from scene_perception.models.weights import load_stereo_model

    model, info = load_stereo_model("lite", weights)
    adapter = OnlineAdapter(model, config, base={"name": info.name, "sha256": info.sha256,
                                                 "weights": str(info.weights_path)})
    while not stop.is_set():
        got = False
        while True:  # drain what arrived
            try:
                left, right = frames.get_nowait()
            except queue.Empty:
                break
            adapter.offer(left, right)
            got = True
        if adapter.ready():
            result = adapter.run_round()
            results.put({"round": asdict(result), "counters": asdict(adapter.counters)})
        elif not got:
            stop.wait(0.05)


class AdaptationProcess:
    """:class:`OnlineAdapter` in a background process (spawned, ``nice`` 19, one thread), so the caller's
    frame loop never waits for training.

    :meth:`offer` hands a pair over without blocking (dropped when ``max_queue`` frames are pending: the
    adapter needs a sample of the stream, not all of it); :meth:`poll` returns the round reports that
    arrived, each with the accepted version's weights path, which the caller loads with the usual checks
    (``load_stereo_model(weights=path)``) and swaps in.  Weights and frames cross the process boundary only
    as files and numpy arrays.
    """

    def __init__(self, weights: str | Path, config: AdaptConfig, max_queue: int = 8, niceness: int = 19
                 ) -> None:
        config.validate()
        ctx = mp.get_context("spawn")
        self._frames = ctx.Queue(maxsize=max_queue)
        self._results = ctx.Queue()
        self._stop = ctx.Event()
        self.dropped = 0
        self._proc = ctx.Process(target=_worker, args=(str(weights), config, self._frames, self._results,
                                                       self._stop, niceness), daemon=True)
        self._proc.start()

    def offer(self, left: np.ndarray, right: np.ndarray) -> bool:
        """Queue a pair for the adapter; False when the queue was full (the pair is dropped)."""
        try:
            self._frames.put_nowait((np.ascontiguousarray(left), np.ascontiguousarray(right)))
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def poll(self) -> list[dict[str, Any]]:
        """The round reports that arrived since the last call (never blocks)."""
        out = []
        while True:
            try:
                out.append(self._results.get_nowait())
            except queue.Empty:
                return out

    @property
    def alive(self) -> bool:
        return self._proc.is_alive()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker and reap it: it stops after its current round, within ``timeout`` s, else it is
        terminated (safe: versions are written to temporaries and renamed).  Reports still queued are read
        and dropped, because a child cannot exit before its queued reports are flushed."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        while self._proc.is_alive() and time.monotonic() < deadline:
            self.poll()
            self._proc.join(0.1)
        for end in (self._proc.terminate, self._proc.kill):
            if not self._proc.is_alive():
                break
            end()
            self._proc.join(5.0)
        self._frames.cancel_join_thread()
        self._frames.close()
        self._results.close()


# ---------------------------------------------------------------------------------- CLI
def _stream(bag: str | None, dataset: str | None) -> Any:
    """Endless (left, right) pairs of a recording: a stereo rosbag2 or a dataset ``NAME:ROOT`` (e.g.
    ``folder:DIR`` of plain pairs), replayed from the start when it ends."""
    from scene_perception.data.bag_io import read_stereo_bag
    from scene_perception.data.datasets import open_dataset

    if bool(bag) == bool(dataset):
        raise ValueError("give exactly one of --bag and --dataset")
    reader = None
    if dataset:
        name, _, root = dataset.partition(":")
        reader = open_dataset(name, root, require_gt=False) if name != "folder" else open_dataset(name, root)
    while True:
        count = 0
        items = read_stereo_bag(bag) if bag else iter(reader)
        for item in items:
            count += 1
            yield item.left, item.right
        if count == 0:
            raise ValueError(f"no stereo pairs in {bag or dataset}")


def main(argv: list[str] | None = None) -> int:
    """``scene-perception adapt --bag BAG | --dataset NAME:ROOT [--weights W] --minutes M``: adapt the stereo
    network to a recording, self-supervised, in this process; accepted versions land in ``--out-dir``."""
    import sys

    from scene_perception.training.checkpoints import dataclass_parser, parse_cli

    parser = dataclass_parser(AdaptConfig, "scene-perception adapt", (main.__doc__ or "").split("\n")[0])
    parser.add_argument("--bag", default=None, help="stereo rosbag2 to adapt to (replayed in a loop)")
    parser.add_argument("--dataset", default=None, help="or a dataset NAME:ROOT, e.g. folder:DIR of pairs")
    parser.add_argument("--weights", default=None, help="starting stereo weights (default: the shipped lite)")
    parser.add_argument("--minutes", type=float, default=10.0, help="wall-clock budget")
    parser.add_argument("--max-rounds", type=int, default=0, help="stop after this many rounds (0: no limit)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: library default)")
    parser.add_argument("--device", default="cpu")
    args = list(sys.argv[1:] if argv is None else argv)
    ns = parse_cli(parser, args)
    extra = {k: ns.pop(k) for k in ("bag", "dataset", "weights", "minutes", "max_rounds", "threads",
                                    "device")}
    config = AdaptConfig(**ns)
    from scene_perception.data.bag_io import BagReadError
    from scene_perception.data.datasets import DatasetError
    from scene_perception.models.weights import ModelLoadError, load_stereo_model

    try:
        config.validate()
        if extra["threads"] > 0:
            torch.set_num_threads(extra["threads"])
        model, info = load_stereo_model("lite", extra["weights"])
        adapter = OnlineAdapter(model, config, extra["device"],
                                base={"name": info.name, "sha256": info.sha256,
                                      "weights": str(info.weights_path) if info.weights_path else None})
        def report(result: RoundResult) -> None:
            print(f"round {adapter.counters.rounds}: {'ACCEPTED' if result.accepted else 'rolled back'} "
                  f"held-out photometric {result.holdout_before:.4f} -> {result.holdout_after:.4f}, "
                  f"anchor EPE {result.anchor_before:.3f} -> {result.anchor_after:.3f} px "
                  f"({result.seconds:.1f} s){' -> ' + result.path if result.path else ''}", flush=True)

        _, gave_up = adapt_stream(
            adapter, _stream(extra["bag"], extra["dataset"]), extra["minutes"],
            extra["max_rounds"] or math.inf, 4 * (config.buffer_frames + config.holdout_frames) + 100,
            on_round=report,
            on_refused=lambda why: _LOG.warning("frame %d refused: %s", adapter.counters.offered, why))
        if gave_up:
            raise ValueError(f"the stream never gave usable frames ({adapter.counters.reasons})")
    except (ValueError, OSError, ModelLoadError, BagReadError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    c = adapter.counters
    print(f"{c.rounds} rounds, {c.accepted} accepted; frames: {c.trained_on} trained on, {c.held_out} held "
          f"out, {c.rejected} refused; newest accepted version: "
          f"{sorted(Path(config.out_dir).glob('adapted_v*.safetensors'))[-1] if c.accepted else 'none'}")
    return 0
