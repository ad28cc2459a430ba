"""Issue 19, no ROS below ``ros/``: every module outside ``scene_perception/ros`` imports and runs without it.

Why it matters: training, evaluation, the offline ``depth`` command and the benchmarks run on machines
(GPU boxes, CI, laptops) that have torch and friends but neither rclpy, the ROS message packages nor
``rosbags``.  A single stray module-level ``import sensor_msgs`` or ``from rosbags ...`` below ``ros/`` would
break all of them, and the dev venv (which has everything) would never notice.  So a fresh interpreter
blocks those packages with a ``sys.meta_path`` finder installed before anything else, then imports every
module of the package outside ``ros/`` and the generated ``msg/``, the two GPU benchmarks by path, builds
the shipped ``lite`` stereo pipeline and runs it, and prints ``--help``.  The finder records every blocked
attempt with the project file that made it, so even an import wrapped in ``try/except ImportError`` fails
the test: "optional ROS" at import time is still ROS below ``ros/``.

Reading and writing bags with ``rosbags`` present is covered by ``test/test_bag_io.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
_MARKER = "NO_ROS_RESULT "

# Runs in the child with ``python -c`` (so it is the final process even when the venv's python re-execs
# itself once for the ROS wheels).  The finder is installed using ``sys`` alone, before any other import,
# and modules already imported at startup (e.g. by a .pth hook) whose names are blocked are dropped from
# ``sys.modules`` so that a later import cannot pick them up from the cache.
_CHILD = r'''
import sys

BLOCKED_NAMES = frozenset({
    "rclpy", "rosbags", "rosbag2_py", "rpyutils", "launch", "launch_ros", "message_filters", "cv_bridge",
    "tf2_ros", "tf2_py", "ros2cli", "rosidl_runtime_py", "rosidl_parser", "rosidl_pycommon",
    "rosidl_generator_py", "rmw", "ament_index_python", "builtin_interfaces", "rcl_interfaces",
    "lifecycle_msgs", "std_msgs", "sensor_msgs", "stereo_msgs", "geometry_msgs", "nav_msgs",
    "diagnostic_msgs", "visualization_msgs", "tf2_msgs", "action_msgs", "unique_identifier_msgs",
    "service_msgs", "statistics_msgs", "rosgraph_msgs", "type_description_interfaces",
})
BLOCKED_PREFIXES = ("rosidl", "rmw", "rcl", "ament")
BLOCKED_SUFFIXES = ("_msgs", "_interfaces")
BLOCKED_SUBPACKAGES = ("scene_perception.ros", "scene_perception.msg")


def blocked(fullname):
    """The blocked package ``fullname`` belongs to, or None."""
    for sub in BLOCKED_SUBPACKAGES:
        if fullname == sub or fullname.startswith(sub + "."):
            return sub
    top = fullname.partition(".")[0]
    if (top in BLOCKED_NAMES or top.startswith(BLOCKED_PREFIXES) or top.endswith(BLOCKED_SUFFIXES)):
        return top
    return None


ATTEMPTS = []  # (module being imported by the walk, blocked package, project file:line that asked)
CURRENT = ["<startup>"]


class BlockRos:
    """Meta-path finder that makes every ROS / rosbags package look uninstalled and records who asked."""

    def find_spec(self, fullname, path=None, target=None):
        package = blocked(fullname)
        if package is None:
            return None
        ATTEMPTS.append((CURRENT[0], package, _culprit()))
        raise ModuleNotFoundError(f"No module named {fullname!r} (blocked by test_no_ros_below_ros)",
                                  name=fullname)


def _culprit():
    """Innermost frame in this repository's sources: the line that actually imported the blocked name."""
    frame = sys._getframe(2)
    while frame is not None:
        filename = frame.f_code.co_filename
        if filename.startswith(REPO) and "/.venv/" not in filename:
            return f"{filename[len(REPO) + 1:]}:{frame.f_lineno}"
        frame = frame.f_back
    return "<outside the repository>"


REPO = sys.argv[1]
sys.meta_path.insert(0, BlockRos())
for _name in [n for n in sys.modules if blocked(n)]:
    del sys.modules[_name]

import contextlib  # noqa: E402  (stdlib only from here on until the walk)
import importlib  # noqa: E402
import importlib.util  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import pkgutil  # noqa: E402
import traceback  # noqa: E402

result = {"modules": [], "errors": {}, "attempts": [], "leaked": [], "pipeline": None, "cli_help": None}


def walk(path, prefix):
    """Module names under ``path`` without importing packages (``pkgutil.walk_packages`` imports each
    package to recurse, which would import ``ros/`` itself); blocked subpackages are not entered."""
    for info in pkgutil.iter_modules([path], prefix):
        if blocked(info.name):
            continue
        yield info.name
        if info.ispkg:
            yield from walk(os.path.join(path, info.name.rpartition(".")[2]), info.name + ".")


def attempt(label, fn):
    CURRENT[0] = label
    try:
        return fn()
    except BaseException:  # noqa: BLE001 - SystemExit from a module counts as a failure too
        result["errors"][label] = traceback.format_exc()
        return None


source = os.path.join(REPO, "scene_perception")
names = ["scene_perception", *walk(source, "scene_perception.")]
result["modules"] = names
for name in names:
    module = attempt(name, lambda name=name: importlib.import_module(name))
    if module is not None and not os.path.realpath(module.__file__).startswith(os.path.realpath(source)):
        result["errors"][name] = f"imported from {module.__file__}, not from {source}"


def import_by_path(relpath):
    path = os.path.join(REPO, relpath)
    spec = importlib.util.spec_from_file_location("no_ros_" + relpath.replace("/", "_")[:-3], path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


for relpath in ("benchmarks/engines.py", "benchmarks/stereo_accuracy.py"):
    attempt(relpath, lambda relpath=relpath: import_by_path(relpath))


def run_pipeline():
    """The one stereo pipeline factory (node, ``depth``, benchmarks), on a small random pair."""
    import numpy as np

    from scene_perception.pipelines.stereo_factory import build_stereo_pipeline

    setup = build_stereo_pipeline("lite", os.path.join(REPO, "models", "lite.safetensors"),
                                  backend="torch", device="cpu", num_threads=1, compute_points=False)
    info, choice = setup.info, setup.choice
    rng = np.random.default_rng(19)
    left = rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)
    right = np.roll(left, -4, axis=1)
    result = setup.pipeline(left, right)
    disparity, std = result.disparity, result.disparity_std
    return {"trained": info.trained, "backend": choice.backend, "shape": list(disparity.shape),
            "std_shape": list(std.shape), "dtype": str(disparity.dtype),
            "finite": bool(np.isfinite(disparity).all()), "std_finite": bool(np.isfinite(std).all())}


result["pipeline"] = attempt("pipeline", run_pipeline)


def cli_help():
    from scene_perception.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            code = main(["--help"])
        except SystemExit as exc:
            code = exc.code
    return {"code": code, "stdout": out.getvalue()}


if "scene_perception.cli" not in result["errors"]:
    result["cli_help"] = attempt("cli --help", cli_help)

result["attempts"] = ATTEMPTS
result["leaked"] = sorted(n for n in sys.modules if blocked(n))
print("NO_ROS_RESULT " + json.dumps(result), flush=True)
'''


@pytest.fixture(scope="module")
def blocked_run() -> dict:
    """One child run (imports torch, cv2, onnxruntime: ~10-30 s), shared by the assertions below."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(REPO)], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(_MARKER)]
    assert proc.returncode == 0 and lines, (
        f"blocked child failed (rc {proc.returncode})\nstdout:\n{proc.stdout[-4000:]}\n"
        f"stderr:\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len(_MARKER):])


def test_walk_found_the_package(blocked_run: dict) -> None:
    """Guards the walk itself: an empty or truncated list would make the other tests pass vacuously."""
    modules = set(blocked_run["modules"])
    for expected in ("scene_perception.cli", "scene_perception.data.bag_io",
                     "scene_perception.training.pose", "scene_perception.evaluation.stereo_bag_eval",
                     "scene_perception.pipelines.stereo_depth"):
        assert expected in modules, f"{expected} missing from the walked modules {sorted(modules)}"
    assert not any(m.startswith(("scene_perception.ros", "scene_perception.msg")) for m in modules)


def test_no_blocked_import_attempts(blocked_run: dict) -> None:
    """No module (nor anything it imports) even tries a ROS package or rosbags while being imported.

    Only import time is strict: at run time an optional lookup that tolerates absence is allowed, as long as
    the run succeeds (``test/test_layers.py`` keeps ROS imports of any kind, lazy ones too, inside ``ros/``).
    """
    attempts = [a for a in blocked_run["attempts"] if a[0] not in ("pipeline", "cli --help")]
    assert not attempts, "ROS below ros/:\n" + "\n".join(
        f"  importing {module} tried blocked package {package!r} (at {where})"
        for module, package, where in attempts)


def test_every_module_imports(blocked_run: dict) -> None:
    """Each module (and the two GPU benchmarks) imports with ROS, the message packages and rosbags absent."""
    errors = blocked_run["errors"]
    imports = {k: v for k, v in errors.items() if k not in ("pipeline", "cli --help")}
    assert not imports, "\n\n".join(f"{name} failed to import without ROS/rosbags:\n{tb}"
                                    for name, tb in imports.items())
    assert not blocked_run["leaked"], f"blocked modules ended up in sys.modules: {blocked_run['leaked']}"


def test_stereo_pipeline_runs_without_ros(blocked_run: dict) -> None:
    """The shipped lite weights through the depth command's construction give finite disparity, no ROS."""
    assert "pipeline" not in blocked_run["errors"], blocked_run["errors"].get("pipeline")
    run = blocked_run["pipeline"]
    assert run["trained"], "models/lite.safetensors was not loaded (untrained weights)"
    assert run["shape"] == [64, 128] and run["std_shape"] == [64, 128], run
    assert run["dtype"] == "float32" and run["finite"] and run["std_finite"], run


def test_cli_help_without_ros(blocked_run: dict) -> None:
    """``scene-perception --help`` works on a machine without ROS (the sub-commands import lazily)."""
    assert "cli --help" not in blocked_run["errors"], blocked_run["errors"].get("cli --help")
    help_run = blocked_run["cli_help"]
    assert help_run["code"] in (0, None), help_run
    assert "depth" in help_run["stdout"] and "train" in help_run["stdout"], help_run["stdout"]
