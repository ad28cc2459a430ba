"""``scene-perception train far-head``: fit the "far" head (:mod:`scene_perception.models.far_head`) on a
frozen stereo network.

Why this is not a mode of ``train stereo``: the stereo weights must not move (the head changes no disparity,
so every accuracy number of the stereo card stays true), and with them frozen the network's outputs on a
rendered pair never change.  So the pairs are rendered and run through the network once, the outputs are
cached on disk, and the head trains for several epochs on the cache: an hour of CPU rendering and forward
passes becomes ten minutes.  The cache is keyed by the stereo weights' sha256 and the data settings; a
mismatch re-renders.

Data: procedural pairs from the training seed space only (``SeedSequence([data_seed, i])``, checked against
the validation and test ranges), with sky at infinity on ``sky_probability`` of them, the stereo recipe's
nuisance and camera-effect augmentation, and the pipeline's view of them (the network in fp32 at the
rendered size, before the local refinement, as :class:`~scene_perception.pipelines.stereo_depth.
StereoDepthPipeline` runs the head).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from scene_perception.models.far_head import FarHead, far_labels

__all__ = ["FarHeadTrainConfig", "build_parser", "main", "render_cache", "train_far_head"]


@dataclass
class FarHeadTrainConfig:
    """Settings of one head fit (all recorded in the card)."""

    stereo_weights: str | None = None  # None: the shipped lite weights
    pairs: int = 1200
    data_seed: int = 22
    width: int = 512
    height: int = 256
    sky_probability: float = 0.5
    min_disparity: float = 0.25  # the stereo recipe's (v11): far surfaces down to 0.25 px
    max_disparity: float = 112.0
    epochs: int = 8
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0  # head initialisation and batch order
    threads: int = 2
    cache_dir: str = "runs/far_head/cache"
    output: str = "runs/far_head/lite_far.safetensors"

    def validate(self) -> None:
        problems = [f"{name} must be > 0, got {getattr(self, name)}"
                    for name in ("pairs", "width", "height", "epochs", "batch_size", "lr")
                    if not getattr(self, name) > 0]
        if not 0.0 <= self.sky_probability <= 1.0:
            problems.append(f"sky_probability must be in [0, 1], got {self.sky_probability}")
        if problems:
            raise ValueError("; ".join(problems))


_ARRAYS = ("left", "disparity", "log_scale", "gt")


def _cache_key(config: FarHeadTrainConfig, stereo_sha256: str) -> dict[str, object]:
    keys = ("pairs", "data_seed", "width", "height", "sky_probability", "min_disparity", "max_disparity")
    return {"stereo_sha256": stereo_sha256, **{k: getattr(config, k) for k in keys}}


def render_cache(config: FarHeadTrainConfig, net: torch.nn.Module, stereo_sha256: str
                 ) -> dict[str, np.ndarray]:
    """The training arrays, from ``config.cache_dir`` (``arrays.safetensors`` + ``key.json``) when it holds
    them for these settings, else rendered, run through ``net`` and written there.  left: (N,3,H,W) uint8;
    disparity, log_scale, gt: (N,1,H,W)
    float16 (gt keeps its NaN/inf)."""
    from safetensors.numpy import load_file, save_file
    from tqdm import tqdm

    from scene_perception.data.augment import CAMERA_EFFECTS
    from scene_perception.data.procedural import ProceduralStereoDataset, SceneConfig
    from scene_perception.data.splits import check_held_out, held_out_seeds

    cache = Path(config.cache_dir)
    key = _cache_key(config, stereo_sha256)
    meta, data_file = cache / "key.json", cache / "arrays.safetensors"
    if meta.is_file() and data_file.is_file() and json.loads(meta.read_text()) == key:
        loaded = load_file(str(data_file))  # safetensors: no pickle, like every file this package reads
        if set(loaded) == set(_ARRAYS):
            return loaded
    check_held_out(held_out_seeds(2000, "validation") + held_out_seeds(2000, "test"), config.data_seed,
                   config.pairs)
    data = ProceduralStereoDataset(
        length=config.pairs, width=config.width, height=config.height, max_disparity=config.max_disparity,
        min_disparity=config.min_disparity, seed=config.data_seed, nuisance=True, augment=CAMERA_EFFECTS,
        scene=SceneConfig(sky_probability=config.sky_probability),
    )
    n, h, w = config.pairs, config.height, config.width
    arrays = {"left": np.empty((n, 3, h, w), np.uint8), "disparity": np.empty((n, 1, h, w), np.float16),
              "log_scale": np.empty((n, 1, h, w), np.float16), "gt": np.empty((n, 1, h, w), np.float16)}
    net.eval()
    with torch.inference_mode():
        for i in tqdm(range(n), desc="render + stereo forward", unit="pair"):
            item = data[i]
            disparity, log_scale = net(item["left"][None], item["right"][None])
            arrays["left"][i] = (item["left"] * 255.0).round().to(torch.uint8).numpy()
            arrays["disparity"][i] = disparity[0].numpy()
            arrays["log_scale"][i] = log_scale[0].numpy()
            arrays["gt"][i] = item["disparity"].numpy()
    cache.mkdir(parents=True, exist_ok=True)
    meta.unlink(missing_ok=True)  # written last: a crash mid-save leaves no key that matches
    save_file(arrays, str(data_file))
    meta.write_text(json.dumps(key))
    return arrays


def _batch(arrays: dict[str, np.ndarray], index: np.ndarray) -> tuple[torch.Tensor, ...]:
    left = torch.from_numpy(arrays["left"][index]).float().div_(255.0)
    disparity, log_scale, gt = (torch.from_numpy(arrays[a][index]).float() for a in ("disparity", "log_scale",
                                                                                       "gt"))
    return left, disparity, log_scale, gt


def far_loss(head: FarHead, left: torch.Tensor, disparity: torch.Tensor, log_scale: torch.Tensor,
             gt: torch.Tensor) -> torch.Tensor:
    """Unweighted binary cross-entropy over the pixels with GT: the output stays a probability."""
    target, known = far_labels(gt)
    logit = head(left, disparity, log_scale)
    loss = F.binary_cross_entropy_with_logits(logit, target, reduction="none")
    return (loss * known).sum() / known.sum().clamp(min=1)


def train_far_head(config: FarHeadTrainConfig, arrays: dict[str, np.ndarray]) -> tuple[FarHead, list[float]]:
    """Fit a head on the cached arrays: AdamW, cosine schedule, the final weights (no selection).
    Returns the head and the mean loss of each epoch."""
    from tqdm import tqdm

    torch.manual_seed(config.seed)
    head = FarHead()
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    n = arrays["left"].shape[0]
    steps_per_epoch = math.ceil(n / config.batch_size)
    total = steps_per_epoch * config.epochs
    rng = np.random.default_rng(config.seed)
    step, losses = 0, []
    head.train()
    with tqdm(total=total, desc="far head", unit="step") as bar:
        for _ in range(config.epochs):
            order = rng.permutation(n)
            epoch = []
            for start in range(0, n, config.batch_size):
                lr = 0.5 * config.lr * (1.0 + math.cos(math.pi * step / total))
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss = far_loss(head, *_batch(arrays, np.sort(order[start:start + config.batch_size])))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                epoch.append(loss.item())
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(epoch[-50:]):.4f}")
            losses.append(float(np.mean(epoch)))
    head.eval()
    return head, losses


def build_parser(prog: str = "scene-perception train far-head") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in dataclasses.fields(FarHeadTrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        kind = type(default) if default is not None else str
        parser.add_argument(flag, type=kind, default=default, help=f"({f.name})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from scene_perception.models.weights import load_stereo_model, save_model

    args = build_parser().parse_args(argv)
    config = FarHeadTrainConfig(**vars(args))
    try:
        config.validate()
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from exc
    torch.set_num_threads(config.threads)
    net, info = load_stereo_model("lite", config.stereo_weights)
    if not info.trained or info.sha256 is None:
        raise SystemExit("error: the far head needs trained stereo weights with a known sha256")
    arrays = render_cache(config, net, info.sha256)
    head, losses = train_far_head(config, arrays)
    command = shlex.join(["scene-perception", "train", "far-head", *(sys.argv[1:] if argv is None else argv)])
    sha = save_model(head, config.output, {
        "name": Path(config.output).stem,
        "stereo_sha256": info.sha256,
        "training": {"command": command, "config": dataclasses.asdict(config), "epoch_losses": losses,
                     "stereo_weights": str(info.weights_path), "torch": torch.__version__},
    })
    print(f"far head written to {config.output} (sha256 {sha[:12]}); epoch losses "
          + ", ".join(f"{x:.4f}" for x in losses))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
