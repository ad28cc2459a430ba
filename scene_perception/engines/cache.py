"""On-disk cache of exported ONNX graphs and TensorRT engines, verified before every load.

Why a cache: exporting a GC-Net takes seconds and building a TensorRT engine minutes; a robot should
pay that once per (weights, resolution, precision, GPU, TensorRT version), not at every start.

Why verification: a serialized TensorRT engine is only valid for the GPU model and TensorRT version that
built it, and deserializing a truncated or foreign file can crash the process instead of raising. So an
artifact is never loaded blindly. Each one has a metadata JSON beside it recording the full key and the
artifact's own sha256 taken at build time; before loading, the key must match and the file must hash to
the recorded value. Anything else (missing or unreadable metadata, another key, another cache format, a
hash mismatch, or a runtime that still refuses the file) is rebuilt, with a WARNING saying why.

Layout::

    <cache_dir>/<label>_<H>x<W>_<precision>_<key digest[:16]>.<onnx|engine>
    <cache_dir>/<same stem>.json      # {"format", "key", "artifact_sha256", "size_bytes", "created", ...}
    <cache_dir>/<same stem>.lock      # advisory lock: two processes never build the same artifact at once
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from scene_perception.engines.base import EngineError

__all__ = [
    "CACHE_FORMAT",
    "DEFAULT_CACHE_DIR",
    "EngineCache",
    "EngineKey",
    "file_sha256",
    "model_digest",
    "prepare_cache_dir",
]

_LOG = logging.getLogger(__name__)

#: Bumped when the layout/metadata or the export recipe changes, so older artifacts count as stale.
CACHE_FORMAT = 1

DEFAULT_CACHE_DIR = "~/.cache/scene_perception/engines"

T = TypeVar("T")


@dataclass(frozen=True)
class EngineKey:
    """Everything a cached artifact depends on; any field changing means a different artifact.

    Attributes:
        model_sha256: identity of the weights (see :func:`model_digest`).
        input_shape: static input shape, e.g. (1, 3, 256, 320).
        precision: ``fp32``, ``fp16`` or ``int8``.
        gpu_name: GPU model the engine was built for; ``""`` for device-independent ONNX graphs.
        tensorrt_version: TensorRT that built it; ``""`` for ONNX graphs.
        artifact: ``onnx`` or ``tensorrt``.
        opset: ONNX opset of the graph (the engine is built from that graph).
        extra: anything else that changes the build (e.g. the INT8 calibration set's digest).
    """

    model_sha256: str
    input_shape: tuple[int, ...]
    precision: str
    gpu_name: str = ""
    tensorrt_version: str = ""
    artifact: str = "onnx"
    opset: int = 0
    extra: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineKey:
        d = dict(data)
        d["input_shape"] = tuple(int(v) for v in d.get("input_shape", ()))
        return cls(**d)

    def digest(self) -> str:
        """sha256 of the canonical JSON of all fields: the file name's suffix."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()

    @property
    def suffix(self) -> str:
        return ".engine" if self.artifact == "tensorrt" else ".onnx"

    def differences(self, other: EngineKey) -> list[str]:
        """Human-readable ``field: mine vs theirs`` for logs explaining why an artifact is stale."""
        a, b = self.to_dict(), other.to_dict()
        return [f"{k}: cached {b[k]!r} vs wanted {a[k]!r}" for k in a if a[k] != b.get(k)]


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, streamed (TensorRT engines of the paper model are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_digest(model: Any, weights_sha256: str | None = None) -> str:
    """Identity of a network (weights and architecture config) for cache keys.

    The weights file's sha256 (``ModelInfo.sha256``) when the model was loaded from one: cheap, and it is
    what the model card records; plus a short hash of the config, because the card (not the weights file)
    holds the config and some of it changes the graph with the same weights (``regression_window``): a
    card edited to switch it must not be served a graph cached for the old setting. Without a file
    (untrained, randomly initialised models, e.g. in tests) a sha256 over the config and every
    state-dict tensor instead, so two different random inits never share a cached graph; hashing the file
    would be wrong there because there is no file.
    """
    config = getattr(model, "config", None)
    if weights_sha256:
        config_tag = hashlib.sha256(repr(config).encode()).hexdigest()[:12]
        return f"{str(weights_sha256).lower()}+config:{config_tag}"
    import torch

    h = hashlib.sha256()
    h.update(repr(config).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        t = tensor.detach().to("cpu").contiguous()
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return "state:" + h.hexdigest()


def prepare_cache_dir(path: str | os.PathLike[str]) -> Path:
    """Expand (``~``, ``$VARS``), create and check an engine cache directory.

    Checks (the path usually comes from a ROS parameter): not empty, no NUL byte; not an existing
    non-directory; creatable (a directory created here is ``0o700``: cached artifacts are the user's);
    writable and searchable by this user; and **not world-writable**, sticky bit or not.

    Why world-writable is refused: the sha256 in each artifact's metadata is only as trustworthy as the
    directory holding both. In a world-writable directory any local user could plant an artifact plus
    matching metadata under the name this cache will look up, and deserializing a TensorRT engine runs code
    from the file. A sticky bit (as on ``/tmp``) stops others deleting our files but not planting new ones.
    Group-writable directories are allowed (a shared team cache is a deliberate choice).

    Raises:
        ValueError: the message names the path and the failed check, so a wrong ROS parameter is obvious.
    """
    text = str(path).strip()
    if not text:
        raise ValueError("engine_cache_dir is empty; set it to a writable directory")
    if "\0" in text:
        raise ValueError(f"engine_cache_dir {text!r} contains a NUL byte")
    resolved = Path(os.path.expandvars(os.path.expanduser(text)))
    if resolved.exists() and not resolved.is_dir():
        raise ValueError(f"engine_cache_dir {resolved} exists but is not a directory")
    try:
        resolved.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"engine_cache_dir {resolved} cannot be created: {exc}") from exc
    if not os.access(resolved, os.W_OK | os.X_OK):
        raise ValueError(f"engine_cache_dir {resolved} is not writable by this user")
    mode = resolved.stat().st_mode
    if mode & stat.S_IWOTH:
        raise ValueError(
            f"engine_cache_dir {resolved} is world-writable (mode {stat.S_IMODE(mode):o}): any user could "
            "plant an engine there that this node would load; use a private directory (e.g. "
            f"{DEFAULT_CACHE_DIR}) or `chmod o-w {resolved}`"
        )
    return resolved


def _safe_label(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-") or "model"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock (POSIX); a no-op where fcntl does not exist."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


class EngineCache:
    """Verified get-or-build of artifacts under one directory (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str], logger: Any = None) -> None:
        """``logger``: anything with ``info(str)`` and ``warning(str)`` (a logging.Logger, a ROS logger)."""
        self.root = prepare_cache_dir(root)
        logger = logger or _LOG
        self._info: Callable[[str], None] = logger.info
        self._warn: Callable[[str], None] = logger.warning

    def path_for(self, key: EngineKey, label: str = "model") -> Path:
        h, w = key.input_shape[-2:] if len(key.input_shape) >= 2 else (0, 0)
        stem = f"{_safe_label(label)}_{h}x{w}_{key.precision}_{key.digest()[:16]}"
        return self.root / (stem + key.suffix)

    @staticmethod
    def metadata_path(artifact: Path) -> Path:
        return artifact.with_suffix(".json")

    def check(self, key: EngineKey, path: Path) -> str | None:
        """None if ``path`` is a verified artifact for ``key``; otherwise why it must be (re)built."""
        if not path.is_file():
            return "missing"
        meta_path = self.metadata_path(path)
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            cached_key = EngineKey.from_dict(meta["key"])
            recorded_sha = str(meta["artifact_sha256"])
            fmt = int(meta.get("format", 0))
        except FileNotFoundError:
            return f"unverifiable: its metadata {meta_path.name} is missing"
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return f"unverifiable: its metadata {meta_path.name} is unreadable ({exc})"
        if fmt != CACHE_FORMAT:
            return f"stale: cache format {fmt}, this code writes {CACHE_FORMAT}"
        if cached_key != key:
            return "stale: built for a different key (" + "; ".join(key.differences(cached_key)) + ")"
        actual = file_sha256(path)
        if actual != recorded_sha:
            return (
                f"corrupt: its sha256 {actual[:16]}... differs from {recorded_sha[:16]}... recorded at build "
                "(truncated or overwritten)"
            )
        return None

    def write_metadata(self, key: EngineKey, path: Path, **extra: Any) -> dict[str, Any]:
        """Record key + the artifact's sha256 next to it (atomically: temp file + rename)."""
        meta = {
            "format": CACHE_FORMAT,
            "key": key.to_dict(),
            "artifact": path.name,
            "artifact_sha256": file_sha256(path),
            "size_bytes": path.stat().st_size,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **extra,
        }
        meta_path = self.metadata_path(path)
        tmp = meta_path.with_name(f".{meta_path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, meta_path)
        return meta

    def get_or_build(
        self,
        key: EngineKey,
        build: Callable[[Path], dict[str, Any] | None],
        load: Callable[[Path], T],
        *,
        label: str = "model",
        what: str = "artifact",
    ) -> tuple[T, Path]:
        """Load the verified artifact for ``key``, building it first when missing/stale/corrupt.

        Args:
            build: writes the artifact to the given (temporary) path; may return extra metadata.
            load: turns a verified path into the runtime object; an exception here counts as a corrupt
                cache entry the first time (rebuild once), and is raised as EngineError after a fresh build.
            label: file-name prefix (e.g. the model config) so humans can read the cache directory.
            what: noun for log lines ("ONNX graph", "TensorRT engine").
        """
        path = self.path_for(key, label)
        with _file_lock(path.with_suffix(".lock")):
            reason = self.check(key, path)
            if reason is None:
                try:
                    obj = load(path)
                except Exception as exc:  # noqa: BLE001 - any runtime refusal means: do not trust this file
                    self._warn(
                        f"cached {what} {path} passed its checks but failed to load ({exc}): rebuilding"
                    )
                else:
                    self._info(f"using cached {what} {path.name} (sha256 verified)")
                    return obj, path
            elif reason == "missing":
                self._info(f"no cached {what} for this key: building {path.name}")
            else:
                self._warn(f"cached {what} {path} is {reason}: rebuilding it")
            self._build(key, path, build, what)
            try:
                return load(path), path
            except EngineError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise EngineError(f"freshly built {what} {path} failed to load: {exc}") from exc

    def _build(
        self, key: EngineKey, path: Path, build: Callable[[Path], dict[str, Any] | None], what: str
    ) -> None:
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.building{path.suffix}")
        self.metadata_path(path).unlink(missing_ok=True)
        start = time.perf_counter()
        try:
            extra = build(tmp) or {}
            if not tmp.is_file() or tmp.stat().st_size == 0:
                raise EngineError(f"building {what} produced no file")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        seconds = time.perf_counter() - start
        self.write_metadata(key, path, build_seconds=round(seconds, 3), **extra)
        self._info(f"built {what} {path.name} in {seconds:.1f} s ({path.stat().st_size / 1e6:.1f} MB)")
