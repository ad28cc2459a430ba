"""The one way to build a stereo depth pipeline from names: model + weights + backend + device -> pipeline.

Why one factory: the ROS node, ``scene-perception depth``, the evaluations and the benchmarks must run the
same construction (weights checks, backend resolution and its logged reasons, engine cache, model digest);
when each spelled it out, a fix in one (a cache path a torch node must not need) missed the others.
Two benchmarks build engines themselves on purpose: ``benchmarks/engines.py`` and ``torch_device.py`` time
several engines / devices on one network, which is what they measure.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scene_perception.engines.select import BackendChoice
from scene_perception.models.weights import ModelInfo
from scene_perception.pipelines.stereo_depth import StereoDepthPipeline

__all__ = ["StereoSetup", "build_stereo_pipeline"]


@dataclass
class StereoSetup:
    """What :func:`build_stereo_pipeline` made, and what it was made from (for logs and diagnostics)."""

    pipeline: StereoDepthPipeline
    info: ModelInfo
    choice: BackendChoice
    #: Where compiled engines are cached (None for the torch backend, which compiles nothing).
    cache_dir: Path | None
    #: The far head in use (None: none was found for these weights; ``far_note`` says why).
    far_head: ModelInfo | None = None
    far_note: str = ""


def build_stereo_pipeline(
    model: str = "lite",
    weights: str | Path | None = None,
    *,
    backend: str = "torch",
    device: str = "cpu",
    engine_cache_dir: str | Path | None = None,
    num_threads: int = 0,
    regression_window: int | None = None,
    far_head_weights: str | Path | None = None,
    logger: Any = None,
    **pipeline_options: Any,
) -> StereoSetup:
    """Load ``model`` (``weights``, or the shipped ones), resolve ``backend`` on ``device``, create the
    engine and wrap it in a :class:`StereoDepthPipeline` with ``pipeline_options`` (its keyword arguments).

    ``num_threads`` > 0 sets torch's intra-op threads (process-wide). ``regression_window`` overrides the
    card's soft-argmin window (an inference setting of the same weights; the benchmarks compare them, and
    the engine cache key follows it). The far head of these weights (``far_head_weights``, else
    ``<name>_far`` on the model search path) is loaded whenever one fits them, so ``far_probability`` can be
    turned on later (a live parameter); when none fits, the pipeline has no head and ``far_note`` says why
    (a warning when ``far_probability`` asks for it). ``logger`` (``info``/``warning``)
    receives the backend choice and engine build lines. The engine cache directory is prepared only for the
    backends that write to it: a torch pipeline must not fail on a bad cache path.

    Raises:
        ModelLoadError: missing, corrupt or mismatched weights.
        BackendUnavailable / EngineError (RuntimeError): the backend cannot run or its engine failed.
        ValueError / OSError: a bad option or an unusable cache directory.
    """
    import torch

    from scene_perception.engines.cache import model_digest, prepare_cache_dir
    from scene_perception.engines.select import choose_backend, create_engine
    from scene_perception.models.weights import ModelLoadError, load_far_head, load_stereo_model
    from scene_perception.pipelines.validity_defaults import DEFAULT_FAR_PROBABILITY

    if num_threads > 0:
        torch.set_num_threads(int(num_threads))
    net, info = load_stereo_model(model, weights or None)
    if regression_window is not None:  # the forward reads it from the config
        net.config = dataclasses.replace(net.config, regression_window=int(regression_window))
    choice = choose_backend(backend, device, log=None if logger is None else logger.info)
    cache_dir = None
    if choice.backend != "torch":
        if engine_cache_dir is None:
            raise ValueError(f"backend {choice.backend} needs an engine cache directory")
        cache_dir = prepare_cache_dir(engine_cache_dir)
    engine = create_engine(choice, net, model_sha256=model_digest(net, info.sha256), cache_dir=cache_dir,
                           num_threads=int(num_threads), logger=logger)
    far_head = far_info = None
    far_note = ""
    try:
        far_head, far_info = load_far_head(info, far_head_weights or None)
    except ModelLoadError as exc:
        far_note = f"far head not used: {exc}"
        wanted = pipeline_options.get("far_probability", DEFAULT_FAR_PROBABILITY) < 1.0
        if logger is not None:
            (logger.warning if wanted or far_head_weights else logger.info)(far_note)
    pipeline = StereoDepthPipeline(engine, far_head=far_head, **pipeline_options)
    return StereoSetup(pipeline, info, choice, cache_dir, far_info, far_note)
