"""Scene understanding for one RGB image: semantics, instances and depth, each with its uncertainty.

numpy in, :class:`SceneResult` out, no ROS (the scene node and the benchmarks use the same object).

Uncertainty (Kendall & Gal, NeurIPS 2017; Bayesian SegNet):

* **semantic aleatoric** -- expected entropy of the softmax.  Each forward pass's class probabilities
  already average the softmax over logits sampled from the aleatoric head's ``N(f, sigma^2)`` (a fixed
  set of noise draws, so results are deterministic without MC dropout);
* **semantic epistemic** -- mutual information between the label and the weights, ``H[mean_t p_t] -
  mean_t H[p_t]`` over ``mc_samples`` MC-dropout samples, all in **one batched forward pass** (the image is
  repeated ``mc_samples`` times along the batch axis; every batch element draws its own dropout masks);
* **depth aleatoric** -- the inverse-depth head's Laplace scale ``b`` gives ``var(1/Z) = 2 b^2``, turned into
  metres^2 by the delta method ``var(Z) = var(1/Z) / (1/Z)^4``;
* **depth epistemic** -- the variance (m^2) of the MC samples' depths.

Depth follows REP 118: metres, ``+inf`` where the predicted inverse depth is below ``1 / max_depth`` (the
sky, "too far"), NaN only where the output is not a number.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from scene_perception.models.labels import CLASSES, THING_CLASSES
from scene_perception.models.multitask import mc_dropout
from scene_perception.pipelines.image_tensor import image_to_tensor
from scene_perception.pipelines.instances import cluster_instances

__all__ = ["CARD_CALIBRATION_KEYS", "MAX_MC_SAMPLES", "SceneResult", "ScenePipeline", "card_calibration",
           "entropy"]

MAX_MC_SAMPLES = 64
_LOGIT_SAMPLES = 8  # noise draws per forward pass for the sampled-logit softmax


@dataclass
class SceneResult:
    """Per-pixel outputs at the INPUT image size (see the module docstring for the definitions)."""

    labels: np.ndarray  # (H, W) uint8 class ids (argmax of the mean softmax)
    instances: np.ndarray  # (H, W) uint16 instance ids, 0 = stuff / no instance
    depth: np.ndarray  # (H, W) float32 metres, +inf beyond max_depth, NaN where invalid
    depth_variance: np.ndarray  # (H, W) float32 m^2, aleatoric
    semantic_aleatoric: np.ndarray  # (H, W) float32 expected entropy (nats)
    semantic_epistemic: np.ndarray | None  # (H, W) float32 mutual information (nats); None without MC
    depth_epistemic: np.ndarray | None  # (H, W) float32 m^2, variance of MC depth samples; None without MC
    latency_ms: float
    # Additions beyond the node contract (benchmarks use them):
    probabilities: np.ndarray | None = None  # (C, h, w) float32 mean softmax at the NETWORK resolution
    inv_depth: np.ndarray | None = None  # (H, W) float32 1/m, mean over samples
    offsets: np.ndarray | None = None  # (2, H, W) float32 px at the input size, pixel -> instance centroid


def entropy(p: Tensor, dim: int) -> Tensor:
    """Shannon entropy (nats) along ``dim``, 0 log 0 = 0."""
    return -(p * torch.log(p.clamp_min(1e-12))).sum(dim)


class ScenePipeline:
    """Run the multi-task network on (H, W, 3) uint8 RGB images.

    Args:
        model: a :class:`~scene_perception.models.multitask.MultiTaskNet` (any module with its outputs).
        mc_samples: MC-dropout samples per call (0 = deterministic, no epistemic outputs).  A plain
            attribute, read on every call, so a node can change it at run time.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        input_size: (H, W) the network runs at; images are resized to it and outputs back to the image.
            None: the image size rounded to the model's size divisor.
        max_depth: metres; a smaller predicted inverse depth is reported as ``+inf`` (sky).
        model_name: shown in logs / diagnostics (default: the model's config name).
        semantic_temperature: every pass's sampled logits are divided by this before the softmax when
            ``mc_samples`` is 0; probabilities, labels and the expected entropy all come from that tempered
            softmax.  1 = none.  :meth:`from_weights` takes it from the card's ``calibration`` (fitted on
            validation street frames, ``benchmarks/results/2026-12-05_cpu/calibration_scene_rule.md``).
        mc_semantic_temperature: the same for ``mc_samples`` > 0: averaging MC-dropout passes flattens the
            mean softmax (under-confident), so the MC mean needs its own temperature.
        depth_std_scale: the published aleatoric depth std is multiplied by this (the variance by its
            square): a uniform correction of the head's Laplace scale, fitted like the temperature.
    """

    def __init__(self, model: nn.Module, *, mc_samples: int = 0, device: str = "cpu",
                 input_size: tuple[int, int] | None = None, max_depth: float = 200.0,
                 model_name: str | None = None, trained: bool = True, semantic_temperature: float = 1.0,
                 mc_semantic_temperature: float = 1.0, depth_std_scale: float = 1.0) -> None:
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        config = getattr(model, "config", None)
        self.divisor = int(getattr(config, "size_divisor", 8))
        if input_size is not None:
            h, w = (int(v) for v in input_size)
            if h <= 0 or w <= 0 or h % self.divisor or w % self.divisor:
                raise ValueError(f"input_size {input_size} must be positive multiples of {self.divisor}")
            input_size = (h, w)
        self.input_size = input_size
        self.mc_samples = int(mc_samples)
        self._check_mc(self.mc_samples)
        if max_depth <= 0:
            raise ValueError(f"max_depth must be > 0, got {max_depth}")
        self.max_depth = float(max_depth)
        for name, value in (("semantic_temperature", semantic_temperature),
                            ("mc_semantic_temperature", mc_semantic_temperature),
                            ("depth_std_scale", depth_std_scale)):
            if not 0.0 < float(value) < float("inf"):
                raise ValueError(f"{name} must be finite and > 0, got {value}")
        self.semantic_temperature = float(semantic_temperature)
        self.mc_semantic_temperature = float(mc_semantic_temperature)
        self.depth_std_scale = float(depth_std_scale)
        self.model_name = model_name or str(getattr(config, "name", type(model).__name__))
        self.trained = bool(trained)
        self.class_names: tuple[str, ...] = tuple(c.name for c in CLASSES)
        self.class_colors: tuple[tuple[int, int, int], ...] = tuple(tuple(c.rgb) for c in CLASSES)
        self.thing_classes = tuple(sorted(THING_CLASSES))
        n_classes = int(getattr(config, "num_classes", len(CLASSES)))
        if n_classes != len(CLASSES):
            raise ValueError(f"model predicts {n_classes} classes but the label set has {len(CLASSES)}")
        self._patterns: dict[tuple[Any, ...], Tensor] = {}

    @classmethod
    def from_weights(cls, path: str | Path | None = None, **kwargs: Any) -> ScenePipeline:
        """Load weights + card (None: the shipped ``models/scene.safetensors``); the card's training
        resolution becomes ``input_size`` and its ``calibration`` (temperatures, depth std scale) the
        defaults, unless given.  Raises ModelLoadError on bad weights."""
        from scene_perception.models.weights import load_scene_model

        model, info = load_scene_model("scene", path)
        if kwargs.get("input_size") is None:
            kwargs["input_size"] = _card_input_size(info.weights_path)
        for key, value in card_calibration(info.weights_path).items():
            kwargs.setdefault(key, value)
        kwargs.setdefault("model_name", info.name)
        kwargs.setdefault("trained", info.trained)
        return cls(model, **kwargs)

    @staticmethod
    def _check_mc(n: int) -> None:
        if not 0 <= n <= MAX_MC_SAMPLES:
            raise ValueError(f"mc_samples must be in 0..{MAX_MC_SAMPLES}, got {n}")

    def _net_size(self, h: int, w: int) -> tuple[int, int]:
        if self.input_size is not None:
            return self.input_size
        d = self.divisor
        return max(d, int(round(h / d)) * d), max(d, int(round(w / d)) * d)

    def __call__(self, image_rgb: np.ndarray) -> SceneResult:
        t0 = time.perf_counter()
        if not isinstance(image_rgb, np.ndarray):
            raise ValueError(f"image must be a numpy array, got {type(image_rgb).__name__}")
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
            raise ValueError(f"image must be (H, W, 3) RGB, got shape {image_rgb.shape}")
        if image_rgb.dtype != np.uint8:
            raise ValueError(f"image must be uint8, got {image_rgb.dtype}")
        h, w = image_rgb.shape[:2]
        if h < 1 or w < 1:
            raise ValueError(f"image is empty ({h}x{w})")
        n_mc = int(self.mc_samples)
        self._check_mc(n_mc)
        nh, nw = self._net_size(h, w)

        img = image_rgb if (h, w) == (nh, nw) else cv2.resize(
            np.ascontiguousarray(image_rgb), (nw, nh), interpolation=cv2.INTER_AREA)
        x = image_to_tensor(img, self.device)
        with torch.inference_mode():
            if n_mc > 0:
                with mc_dropout(self.model):
                    out = self.model(x.expand(n_mc, -1, -1, -1).contiguous())
            else:
                out = self.model(x)
            temperature = self.mc_semantic_temperature if n_mc > 0 else self.semantic_temperature
            probs = self._sampled_softmax(out.semantic_logits, out.semantic_log_var, temperature)  # (S,C,h,w)
            mean_p = probs.mean(0)
            aleatoric = entropy(probs, 1).mean(0)
            epistemic = (entropy(mean_p, 0) - aleatoric).clamp_min(0.0) if n_mc > 0 else None
            inv = out.inv_depth[:, 0]  # (S, h, w)
            inv_mean = inv.mean(0)
            var_inv = (2.0 * torch.exp(2.0 * out.inv_depth_log_scale[:, 0])).mean(0)
            if self.depth_std_scale != 1.0:
                var_inv = var_inv * self.depth_std_scale**2
            depth_samples_var = None
            if n_mc > 0:
                depth_samples_var = (1.0 / inv.clamp_min(1.0 / self.max_depth)).var(0, unbiased=False)
            offsets = out.offsets.mean(0)  # (2, h, w) px at the network resolution

            labels_net = mean_p.argmax(0).to(torch.uint8).cpu().numpy()
            instances_net = cluster_instances(offsets.cpu().numpy(), labels_net, self.thing_classes)

            def up(t: Tensor) -> Tensor:  # (..., h, w) -> (..., H, W), bilinear
                if (nh, nw) == (h, w):
                    return t
                t4 = t.reshape(-1, 1, nh, nw) if t.dim() == 2 else t.unsqueeze(0)
                r = F.interpolate(t4, size=(h, w), mode="bilinear", align_corners=False)
                return r.reshape(h, w) if t.dim() == 2 else r[0]

            mean_up = up(mean_p)
            labels = mean_up.argmax(0).to(torch.uint8).cpu().numpy()
            inv_up = up(inv_mean)
            far = inv_up < 1.0 / self.max_depth
            inv_safe = inv_up.clamp_min(1.0 / self.max_depth)
            depth = torch.where(far, torch.full_like(inv_up, float("inf")), 1.0 / inv_safe)
            depth_var = torch.where(far, torch.full_like(inv_up, float("inf")), up(var_inv) / inv_safe**4)
            depth_epi = None
            if depth_samples_var is not None:
                depth_epi = torch.where(far, torch.full_like(inv_up, float("inf")), up(depth_samples_var))
            offsets_up = up(offsets) * torch.tensor([w / nw, h / nh], device=offsets.device).view(2, 1, 1)

        instances = instances_net if (nh, nw) == (h, w) else cv2.resize(
            instances_net, (w, h), interpolation=cv2.INTER_NEAREST)
        # Instances live on thing pixels of the final label map only (stuff stays 0 by definition).
        instances = np.where(np.isin(labels, self.thing_classes), instances, 0).astype(np.uint16)

        def f32(t: Tensor | None) -> np.ndarray | None:
            return None if t is None else t.float().cpu().numpy().astype(np.float32, copy=False)

        return SceneResult(
            labels=labels,
            instances=instances,
            depth=f32(depth),
            depth_variance=f32(depth_var),
            semantic_aleatoric=f32(up(aleatoric)),
            semantic_epistemic=f32(up(epistemic)) if epistemic is not None else None,
            depth_epistemic=f32(depth_epi),
            latency_ms=(time.perf_counter() - t0) * 1e3,
            probabilities=f32(mean_p),
            inv_depth=f32(inv_up),
            offsets=f32(offsets_up),
        )

    def _sampled_softmax(self, logits: Tensor, log_var: Tensor, temperature: float = 1.0) -> Tensor:
        """``E_eps softmax((f + sigma * eps) / T)`` over fixed noise draws: draw ``k`` adds ``sigma`` times a
        fixed per-class vector ``eps_k`` (the same at every pixel), so the same image gives the same output.
        T = 1 computes exactly what it did before temperatures existed (no division)."""
        sigma = torch.exp(0.5 * log_var)
        c = logits.shape[1]
        acc = torch.zeros_like(logits)
        for k in range(_LOGIT_SAMPLES):
            pattern = self._class_pattern(k, c, logits.device, logits.dtype)
            sampled = logits + sigma * pattern
            acc += torch.softmax(sampled if temperature == 1.0 else sampled / temperature, dim=1)
        return acc / _LOGIT_SAMPLES

    def _class_pattern(self, k: int, c: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        key = (k, c, str(device), dtype)
        cache = self._patterns
        if key not in cache:
            gen = torch.Generator().manual_seed(1000 + k)
            cache[key] = torch.randn(c, generator=gen).to(device=device, dtype=dtype).view(1, c, 1, 1)
        return cache[key]


#: Keys of a scene card's ``calibration`` object and the ScenePipeline arguments they set.
CARD_CALIBRATION_KEYS = ("semantic_temperature", "mc_semantic_temperature", "depth_std_scale")


def card_calibration(weights_path: Path | None) -> dict[str, float]:
    """The calibration a scene card records (``calibration``: any of :data:`CARD_CALIBRATION_KEYS`, each a
    number or ``{"value": number, ...}`` with the fit's provenance); empty without a card or the field, so
    older cards keep the uncalibrated behaviour."""
    if weights_path is None:
        return {}
    import json

    try:
        data = json.loads(weights_path.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    cal = data.get("calibration") if isinstance(data, dict) else None
    out: dict[str, float] = {}
    if isinstance(cal, dict):
        for key in CARD_CALIBRATION_KEYS:
            value = cal.get(key)
            if isinstance(value, dict):
                value = value.get("value")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[key] = float(value)
    return out


def _card_input_size(weights_path: Path | None) -> tuple[int, int] | None:
    """The (H, W) a shipped model was trained at, from its card (``input_size``), if recorded."""
    if weights_path is None:
        return None
    import json

    card = weights_path.with_suffix(".json")
    try:
        data = json.loads(card.read_text(encoding="utf-8"))
        size = data.get("input_size")
        return (int(size[0]), int(size[1])) if size else None
    except (OSError, ValueError, TypeError, IndexError):
        return None
