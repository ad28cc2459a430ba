"""Loading and saving model weights (stereo GC-Net, multi-task scene net): safetensors plus a JSON model
card, nothing else.

Why safetensors only: ``torch.load`` unpickles, i.e. runs arbitrary code from the weights file; a robot
that pulls weights from a shared drive must not do that. The model card (``<name>.json`` next to
``<name>.safetensors``) records the architecture config, the file's sha256 and whether the weights were
trained at all, so a truncated download, a swapped file or random weights are caught at start-up with a
clear message instead of showing up as nonsense depth.

Card format::

    {"name": "lite", "config": "lite" | {GCNetConfig fields}, "sha256": "<hex>", "trained": true,
     "training": {...}, "metrics": {...}}
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scene_perception.models.far_head import FAR_CONFIGS, FarHead, FarHeadConfig
from scene_perception.models.gcnet import CONFIGS, GCNet, GCNetConfig
from scene_perception.models.multitask import CONFIGS as SCENE_CONFIGS
from scene_perception.models.multitask import MultiTaskConfig, MultiTaskNet
from scene_perception.models.posenet import CONFIGS as POSE_CONFIGS
from scene_perception.models.posenet import PoseNet, PoseNetConfig

__all__ = [
    "ENV_MODELS",
    "ModelInfo",
    "ModelLoadError",
    "check_weights_path",
    "file_sha256",
    "load_far_head",
    "load_pose_model",
    "load_scene_model",
    "load_stereo_model",
    "model_search_dirs",
    "save_model",
    "save_scene_model",
    "save_stereo_model",
    "stereo_config",
]

_LOG = logging.getLogger(__name__)

ENV_MODELS = "SCENE_PERCEPTION_MODELS"
_WEIGHTS_SUFFIX = ".safetensors"
_CARD_SUFFIX = ".json"
#: The package and its data directory under ``<prefix>/share`` (CMakeLists.txt installs ``models/`` there).
_PACKAGE = "scene_perception"


class ModelLoadError(RuntimeError):
    """Weights or model card missing, corrupt, or not matching the architecture."""


@dataclass(frozen=True)
class ModelInfo:
    """What was actually loaded, for logs, diagnostics and the ROS node's status."""

    name: str
    config_name: str
    weights_path: Path | None
    sha256: str | None
    trained: bool


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, streamed so large weight files do not need to fit in memory twice."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_search_dirs() -> list[Path]:
    """Directories searched for ``<name>.safetensors``, in priority order.

    1. ``$SCENE_PERCEPTION_MODELS`` (os.pathsep-separated), so a deployment can override everything;
    2. ``share/scene_perception/models`` of the installed package: first the install prefix this module
       was imported from (``<prefix>/lib/pythonX.Y/site-packages/scene_perception/...``, found without
       following symlinks, so a ``colcon build --symlink-install`` still names its install space), then
       the ament index's (``$AMENT_PREFIX_PATH``: a sourced workspace);
    3. the source tree's ``models/`` (the checkout this file really lives in, symlinks followed), for the
       pip environment's editable install and as the last fallback.

    An explicit weights path (the nodes' ``weights`` parameter, the CLI's ``--weights``) bypasses the search
    altogether. Directories are listed whether or not they exist (error messages name them); one reached
    twice (e.g. through a symlink) is listed once, at its first place.
    """
    dirs: list[Path] = []
    env = os.environ.get(ENV_MODELS, "")
    dirs += [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    dirs += _installed_share_models()
    source = _source_tree_models()
    if source is not None:
        dirs.append(source)
    unique: list[Path] = []
    seen: set[str] = set()
    for d in dirs:
        key = os.path.realpath(d)
        if key not in seen:
            seen.add(key)
            unique.append(d)
    return unique


def _prefix_share_models(module_file: str | os.PathLike[str]) -> Path | None:
    """``<prefix>/share/scene_perception/models`` when ``module_file`` (this module's path, symlinks NOT
    followed) lies in an install prefix's ``lib/pythonX.Y/{site,dist}-packages/scene_perception/models``."""
    here = Path(os.path.abspath(module_file))
    parents = here.parents
    if len(parents) < 6 or parents[1].name != _PACKAGE:
        return None
    site, pyver, lib = parents[2], parents[3], parents[4]
    if site.name not in ("site-packages", "dist-packages") or not pyver.name.startswith("python"):
        return None
    if lib.name not in ("lib", "lib64"):
        return None
    return parents[5] / "share" / _PACKAGE / "models"


def _installed_share_models() -> list[Path]:
    dirs: list[Path] = []
    own = _prefix_share_models(__file__)
    if own is not None:
        dirs.append(own)
    share = _ament_index_share(_PACKAGE)
    if share is not None:
        dirs.append(share / "models")
    return dirs


def _ament_index_share(package: str) -> Path | None:
    """``<prefix>/share/<package>`` of the first ``$AMENT_PREFIX_PATH`` prefix whose ament resource index
    registers ``package`` (``share/ament_index/resource_index/packages/<package>``), else None.

    The lookup ``ament_index_python.packages.get_package_share_directory`` does, read from the file system
    directly: ``models`` must not import a ROS package (layer rule, ``test/test_layers.py``).
    """
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix and os.path.isfile(
            os.path.join(prefix, "share", "ament_index", "resource_index", "packages", package)
        ):
            return Path(prefix) / "share" / package
    return None


def _source_tree_models() -> Path | None:
    """``models/`` of the source checkout this file lives in (through symlinks), or None when this file is
    not in a checkout (a plain install: site-packages has no package.xml next to the package)."""
    root = Path(__file__).resolve().parents[2]
    if (root / "package.xml").is_file() and (root / _PACKAGE / "__init__.py").is_file():
        return root / "models"
    return None


def _read_card(path: Path) -> dict[str, Any]:
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"model card {path} is unreadable or not valid JSON: {exc}") from exc
    if not isinstance(card, dict):
        raise ModelLoadError(f"model card {path} must be a JSON object, got {type(card).__name__}")
    for key in ("name", "config", "sha256"):
        if key not in card:
            raise ModelLoadError(f"model card {path} lacks the required field {key!r}")
    return card


def _config_from_card(card: Mapping[str, Any], card_path: Path, configs: Mapping[str, Any] = CONFIGS,
                      config_cls: Any = GCNetConfig) -> Any:
    spec = card["config"]
    if isinstance(spec, str):
        if spec not in configs:
            raise ModelLoadError(
                f"model card {card_path} names config {spec!r}, which this code does not know "
                f"(known: {sorted(configs)})"
            )
        return configs[spec]
    if isinstance(spec, dict):
        try:
            return config_cls.from_dict(spec)
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(f"model card {card_path} has an invalid config: {exc}") from exc
    raise ModelLoadError(f"model card {card_path}: 'config' must be a name or an object, got {spec!r}")


def check_weights_path(weights: str | os.PathLike[str]) -> Path:
    """Validate a user-supplied weights path (ROS parameter, CLI flag) before anything opens it.

    Checks, each failing with a ModelLoadError that names the path: no NUL byte; the ``.safetensors``
    suffix (pickle-based checkpoints - ``.pt``, ``.pth``, ``.ckpt``, ``.pkl``, ``.bin`` - are refused
    outright, because unpickling runs code from the file); the path exists and, after following symlinks,
    is a *regular* file (a directory gives a confusing error deep in safetensors, and a FIFO or device would
    block or stream forever while hashing); it is readable and not empty. ``~`` is expanded.
    """
    text = os.fspath(weights)
    if "\0" in text:
        raise ModelLoadError(f"weights path {text!r} contains a NUL byte")
    path = Path(text).expanduser()
    if path.suffix != _WEIGHTS_SUFFIX:
        raise ModelLoadError(
            f"weights file {path} must be a {_WEIGHTS_SUFFIX} file: other formats (.pt, .pth, .ckpt, .pkl, "
            ".bin) are pickles, and loading a pickle runs code from the file, so they are refused"
        )
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ModelLoadError(f"weights file {path} does not exist") from None
    except OSError as exc:
        raise ModelLoadError(f"weights file {path} cannot be inspected: {exc}") from exc
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO, socket or device"
        raise ModelLoadError(f"weights file {path} is {kind}, not a regular file")
    if not os.access(path, os.R_OK):
        raise ModelLoadError(f"weights file {path} is not readable by this user")
    if st.st_size == 0:
        raise ModelLoadError(f"weights file {path} is empty (0 bytes)")
    return path


def _candidate_files(name: str) -> Iterator[tuple[Path, Path]]:
    for d in model_search_dirs():
        yield d / f"{name}{_WEIGHTS_SUFFIX}", d / f"{name}{_CARD_SUFFIX}"


def _load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors plus the file's string metadata (where we record the config name)."""
    # Imported here so the module (and ModelLoadError) stays importable for tools without safetensors.
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            metadata = dict(fh.metadata() or {})
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for damaged files
        raise ModelLoadError(
            f"weights file {path} is corrupt or truncated (not a readable safetensors file): {exc}"
        ) from exc
    return tensors, metadata


def _check_state_dict(model: nn.Module, tensors: Mapping[str, torch.Tensor], path: Path) -> None:
    """Compare names and shapes first so the error says *which* tensors differ, not just that one did."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [
        f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in tensors and tuple(tensors[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} tensor(s) with the wrong shape: " + "; ".join(wrong[:5]))
        if missing:
            parts.append(f"{len(missing)} missing: {missing[:5]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected: {unexpected[:5]}")
        raise ModelLoadError(
            f"weights file {path} does not fit {type(model).__name__} config {model.config.name!r}: "
            + " | ".join(parts)
        )


def _warn_untrained(name: str, reason: str) -> None:
    _LOG.warning(
        "UNTRAINED weights: outputs are meaningless (model %r, %s). Train the model or point %s at a "
        "directory holding <name>.safetensors and its model card.",
        name,
        reason,
        ENV_MODELS,
    )


def load_stereo_model(name: str = "lite", weights: str | Path | None = None) -> tuple[GCNet, ModelInfo]:
    """Build a GC-Net and load its weights, verified against the model card.

    Args:
        name: model name; the card ``<name>.json`` decides the architecture. Without a card ``name``
            must be a config name (``"lite"``, ``"paper"``).
        weights: explicit ``.safetensors`` path; its card is the ``.json`` with the same stem, if any.
            ``None`` searches :func:`model_search_dirs` for ``<name>.safetensors``.

    Returns:
        ``(model in eval mode, ModelInfo)``. When no weights exist anywhere, an untrained model with
        ``trained=False`` and a WARNING log, so the stack can still start (e.g. for integration tests).

    Raises:
        ModelLoadError: explicit weights missing or failing :func:`check_weights_path`; card without
            weights; unreadable card; sha256 mismatch; corrupt/truncated file; tensors that do not fit
            the config; unknown name.
    """
    return _load_model(name, weights, CONFIGS, GCNetConfig, GCNet, "stereo")  # type: ignore[return-value]


def stereo_config(name: str = "lite") -> GCNetConfig:
    """The architecture config of ``name`` as the model search path defines it, without loading weights.

    For tools that build their own (e.g. untrained, seeded) network but must match what users run: the
    first model card ``<name>.json`` in :func:`model_search_dirs` (parsed and checked like
    :func:`load_stereo_model` does), else the built-in config of that name.
    """
    for _, card_path in _candidate_files(name):
        if card_path.is_file():
            return _config_from_card(_read_card(card_path), card_path)
    if name not in CONFIGS:
        raise ModelLoadError(f"unknown model {name!r}: no model card found and it is not a config name "
                             f"(known configs: {sorted(CONFIGS)})")
    return CONFIGS[name]


def load_scene_model(name: str = "scene", weights: str | Path | None = None
                     ) -> tuple[MultiTaskNet, ModelInfo]:
    """The multi-task scene network (:mod:`scene_perception.models.multitask`), with the same checks as
    :func:`load_stereo_model` (card, sha256, config, tensor names/shapes; untrained fallback + WARNING)."""
    return _load_model(name, weights, SCENE_CONFIGS, MultiTaskConfig, MultiTaskNet, "scene")  # type: ignore


def load_pose_model(name: str = "posenet", weights: str | Path | None = None) -> tuple[PoseNet, ModelInfo]:
    """PoseNet (:mod:`scene_perception.models.posenet`) with the checks of :func:`load_stereo_model`, except
    that *no* weights is an error: a pose regressor is specific to the scene it was trained in, and an
    untrained one would publish confident nonsense poses (and TF) instead of nothing."""
    model, info = _load_model(name, weights, POSE_CONFIGS, PoseNetConfig, PoseNet, "pose")
    if info.weights_path is None:
        raise ModelLoadError(
            f"no PoseNet weights found for {name!r} (searched {', '.join(map(str, model_search_dirs()))}); "
            "train them for your scene with `scene-perception train pose` and pass `weights`"
        )
    return model, info  # type: ignore[return-value]


def load_far_head(stereo: ModelInfo, weights: str | Path | None = None) -> tuple[FarHead, ModelInfo]:
    """The far head (:mod:`scene_perception.models.far_head`) of the stereo weights ``stereo`` describes:
    ``weights``, else ``<stereo file stem>_far.safetensors`` beside the stereo weights, else
    ``<stereo name>_far.safetensors`` on the model search path, with the usual checks.

    A head reads one network's output statistics, so its card must name the sha256 of exactly these stereo
    weights (``stereo_sha256``); unlike the networks, a missing head is an error, never an untrained stand-in.

    Raises:
        ModelLoadError: no head, a head without a card, one made for other stereo weights, or the checks
            of :func:`load_stereo_model`.
    """
    name = f"{stereo.name}_far"
    if weights is None:
        candidates = [w for w, _ in _candidate_files(name)]
        if stereo.weights_path is not None:
            beside = stereo.weights_path.with_name(f"{stereo.weights_path.stem}_far{_WEIGHTS_SUFFIX}")
            candidates.insert(0, beside)
        found = next((w for w in candidates if w.is_file()), None)
        if found is None:
            raise ModelLoadError("no far head: looked for " + ", ".join(str(w) for w in candidates))
        weights = found
    # The pairing is checked on the card before the weights are read and hashed: a head for other stereo
    # weights is refused without loading it.
    card_path = check_weights_path(weights).with_suffix(_CARD_SUFFIX)
    if not card_path.is_file():
        raise ModelLoadError(f"far head {weights} has no model card: it cannot say which stereo weights it "
                             "was trained for")
    wanted = str(_read_card(card_path).get("stereo_sha256", "")).lower()
    if not stereo.sha256 or wanted != stereo.sha256:
        raise ModelLoadError(
            f"far head {weights} was trained for stereo weights sha256 {wanted[:12] or '?'}, but the loaded "
            f"ones are {(stereo.sha256 or 'untrained')[:12]}: retrain it (scene-perception train far-head)"
        )
    head, info = _load_model(name, weights, FAR_CONFIGS, FarHeadConfig, FarHead, "far head")
    return head, info  # type: ignore[return-value]


def _load_model(name: str, weights: str | Path | None, configs: Mapping[str, Any], config_cls: Any,
                build: Callable[[Any], nn.Module], kind: str) -> tuple[nn.Module, ModelInfo]:
    weights_path: Path | None = None
    card_path: Path | None = None
    if weights is not None:
        weights_path = check_weights_path(weights)
        sibling = weights_path.with_suffix(_CARD_SUFFIX)
        card_path = sibling if sibling.is_file() else None
    else:
        for w, c in _candidate_files(name):
            if w.is_file():
                weights_path, card_path = w, (c if c.is_file() else None)
                break
            if c.is_file():
                raise ModelLoadError(f"model card {c} exists but its weights file {w} is missing")

    card = _read_card(card_path) if card_path is not None else None
    if card is not None:
        assert card_path is not None
        config = _config_from_card(card, card_path, configs, config_cls)
    elif name in configs:
        config = configs[name]
    else:
        where = weights_path or ", ".join(str(d) for d in model_search_dirs())
        raise ModelLoadError(
            f"unknown model {name!r}: no model card found ({where}) and it is not a config name "
            f"(known configs: {sorted(configs)})"
        )

    model = build(config)
    if weights_path is None:
        _warn_untrained(name, "no weights file found in " + ", ".join(str(d) for d in model_search_dirs()))
        model.eval()
        return model, ModelInfo(name, config.name, None, None, trained=False)

    sha = file_sha256(weights_path)
    if card is not None and str(card["sha256"]).lower() != sha:
        raise ModelLoadError(
            f"sha256 mismatch for {weights_path}: file is {sha}, model card {card_path} expects "
            f"{card['sha256']} (file replaced, corrupted or truncated?)"
        )
    tensors, metadata = _load_tensors(weights_path)
    if metadata.get("config", config.name) != config.name:
        raise ModelLoadError(
            f"weights file {weights_path} was saved from config {metadata['config']!r} but "
            f"{'its model card' if card else 'the requested name'} says {config.name!r}"
        )
    _check_state_dict(model, tensors, weights_path)
    model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in tensors.items()}, strict=True)
    model.eval()

    if card is None:
        _LOG.warning("no model card next to %s: sha256 not verified, assuming trained weights", weights_path)
        trained = True
    else:
        trained = bool(card.get("trained", False))
        if not trained:
            _warn_untrained(str(card.get("name", name)), f"model card {card_path} says trained=false")
    info = ModelInfo(str(card["name"]) if card else name, config.name, weights_path, sha, trained)
    _LOG.info(
        "loaded %s model %s (config %s, sha256 %s) from %s",
        kind,
        info.name,
        config.name,
        sha[:12],
        weights_path,
    )
    return model, info


def save_stereo_model(model: GCNet, path: str | Path, card_fields: Mapping[str, Any] | None = None) -> str:
    """:func:`save_model` for GC-Net (kept under its historical name)."""
    return save_model(model, path, card_fields)


def save_scene_model(model: MultiTaskNet, path: str | Path, card_fields: Mapping[str, Any] | None = None
                     ) -> str:
    """:func:`save_model` for the multi-task scene network."""
    return save_model(model, path, card_fields)


def save_model(model: nn.Module, path: str | Path, card_fields: Mapping[str, Any] | None = None) -> str:
    """Write ``path`` (safetensors) and its model card ``path.with_suffix('.json')``; return the sha256.

    ``card_fields`` fills ``trained`` (default True), ``training`` and ``metrics`` (and may override
    ``name``); ``config`` and ``sha256`` are always computed here so a card cannot lie about them. Both
    files are written to temporaries and renamed, so a crash mid-save never leaves a half-written file
    that a running node would then pick up.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != _WEIGHTS_SUFFIX:
        raise ValueError(f"weights path must end in {_WEIGHTS_SUFFIX}, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    config = model.config  # GCNetConfig / MultiTaskConfig: both have .name and .to_dict()
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}

    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"config": config.name, "format": "pt"})
    sha = file_sha256(tmp)
    os.replace(tmp, path)

    fields = dict(card_fields or {})
    card: dict[str, Any] = {
        "name": fields.pop("name", path.stem),
        # The full architecture, not just its name: weights must keep loading after CONFIGS evolves.
        "config": config.to_dict(),
        "sha256": sha,
        "trained": bool(fields.pop("trained", True)),
        "training": fields.pop("training", {}),
        "metrics": fields.pop("metrics", {}),
    }
    for key in ("config", "sha256"):
        fields.pop(key, None)
    card.update(fields)
    card_path = path.with_suffix(_CARD_SUFFIX)
    tmp_card = card_path.with_name(card_path.name + ".tmp")
    tmp_card.write_text(json.dumps(card, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp_card, card_path)
    return sha
