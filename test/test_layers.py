"""Issue 24 item 2: the package's layers, checked by reading the sources (``ast``; nothing is imported).

Layer order, lowest first (``scene_perception/__init__.py`` has the same list)::

    geometry < models < losses, engines < pipelines < data < training, evaluation < ros < cli

* A module may import modules of its own layer and of lower layers, never of a higher one.  The layers of
  one rank (``losses`` / ``engines``, ``training`` / ``evaluation``) do not import each other either: none
  needs the other, and keeping it so keeps them independent (document a real need here before allowing it).
* The label set (class ids, names, colours, thing classes) is ``models/labels.py``: the network predicts it
  and every layer above may use it.  The split seeds are ``data/splits.py``.  Shared benchmark helpers are
  ``evaluation/benchmarking.py`` (the scripts in ``benchmarks/`` import the package, never each other).
* ``scene_perception/__init__.py`` itself sits below everything and imports nothing of the package.
* Only ``ros/`` imports rclpy and the ROS packages (message packages, ``scene_perception.msg`` -- the
  generated messages --, rosidl, rmw, launch, ament, tf2, cv_bridge, message_filters, ...);
  ``test/test_no_ros_below_ros.py`` proves the rest then also *runs* without them.  ``rosbags`` is not ROS
  (a pure-Python bag library): ``data/bag_io.py`` uses it, lazily.
* Nothing in the package imports ``benchmarks``.

Every import counts: module level, inside functions (lazy imports), under ``if TYPE_CHECKING``, relative
ones, and ``importlib.import_module`` / ``__import__`` of a string constant (or of a module-level name bound
to one).  Each rule is also run over small planted sources, so a rule that silently stopped matching fails.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "scene_perception"
SOURCE = ROOT / PACKAGE

#: Layer name -> rank.  Equal ranks are peers (which may not import each other).
LAYERS: dict[str, int] = {
    "geometry": 1,
    "models": 2,
    "losses": 3,
    "engines": 3,
    "pipelines": 4,
    "data": 5,
    "training": 6,
    "evaluation": 6,
    "ros": 7,
    "cli": 8,
}
#: ``scene_perception/__init__.py``: below every layer.
ROOT_LAYER = "<package>"
#: Layers whose modules may import ROS.
ROS_LAYERS = frozenset({"ros"})

ROS_NAMES = frozenset({
    "rclpy", "message_filters", "cv_bridge", "rpyutils", "ros2cli", "rosbag2_py", "builtin_interfaces",
    "rcl_interfaces", "lifecycle_msgs", "std_msgs", "sensor_msgs", "stereo_msgs", "geometry_msgs",
    "diagnostic_msgs", "vision_msgs", "nav_msgs", "visualization_msgs", "tf2_msgs", "action_msgs",
})
ROS_PREFIXES = ("rosidl", "rmw", "rcl", "tf2", "launch", "ament", "osrf_pycommon")
ROS_SUFFIXES = ("_msgs", "_srvs", "_interfaces")
GENERATED_MESSAGES = f"{PACKAGE}.msg"


def is_ros(module: str) -> bool:
    """Whether importing ``module`` needs ROS (rclpy, a ROS Python package or a message package)."""
    if module == GENERATED_MESSAGES or module.startswith(GENERATED_MESSAGES + "."):
        return True
    top = module.partition(".")[0]
    return top in ROS_NAMES or top.startswith(ROS_PREFIXES) or top.endswith(ROS_SUFFIXES)


def layer_of(module: str) -> str | None:
    """The layer of a ``scene_perception`` module name: ``scene_perception.data.world`` -> ``data``,
    ``scene_perception.cli`` -> ``cli``, ``scene_perception`` -> the package root; None outside the package
    or for the generated messages (a ROS package, see :func:`is_ros`)."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    if len(parts) == 1:
        return ROOT_LAYER
    if module == GENERATED_MESSAGES or module.startswith(GENERATED_MESSAGES + "."):
        return None
    return parts[1]


def _string_constants(tree: ast.Module) -> dict[str, str]:
    """Module-level ``NAME = "text"`` bindings (for ``importlib.import_module(NAME)``)."""
    out: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(
                node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    out[target.id] = node.value.value
        elif (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
              and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            out[node.target.id] = node.value.value
    return out


def imported_modules(source: str, module: str, is_package: bool = False) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) for every import in ``source``, the code of module ``module``.

    ``from X import a, b`` yields ``X.a`` and ``X.b`` when ``X`` is the package root or a layer package
    (``from scene_perception import data``, ``from .. import world``), else ``X`` once.
    """
    tree = ast.parse(source)
    constants = _string_constants(tree)
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.count(".") <= 1 and target.split(".")[0] == PACKAGE:
                # ``from scene_perception import data`` / ``from scene_perception.data import world``: the
                # names may be modules; the layer is decided by the longest name either way.
                for alias in node.names:
                    yield node.lineno, target if alias.name == "*" else f"{target}.{alias.name}"
            else:
                yield node.lineno, target
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = (func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name)
                    else None)
            if name not in ("import_module", "__import__"):
                continue
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                yield node.lineno, arg.value
            elif isinstance(arg, ast.Name) and arg.id in constants:
                yield node.lineno, constants[arg.id]


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """Every broken rule in ``source`` (the code of ``module``), as ``"line: message"`` strings."""
    own = layer_of(module)
    problems: list[str] = []
    if own is None:
        return [f"0: {module} is not a module of {PACKAGE}"]
    if own != ROOT_LAYER and own not in LAYERS:
        problems.append(f"0: {module}: layer {own!r} is not in the layer order (add it to LAYERS and "
                        f"to the comment in {PACKAGE}/__init__.py)")
        return problems
    for line, target in imported_modules(source, module, is_package):
        top = target.partition(".")[0]
        if top == "benchmarks":
            problems.append(f"{line}: imports {target}: the package must not depend on the benchmarks")
            continue
        if is_ros(target):
            if own not in ROS_LAYERS:
                problems.append(f"{line}: imports {target}: ROS is imported only under {PACKAGE}/ros/")
            continue
        other = layer_of(target)
        if other is None or other == own:
            continue
        if own == ROOT_LAYER:
            problems.append(f"{line}: imports {target}: {PACKAGE}/__init__.py is below every layer")
        elif other == ROOT_LAYER:
            continue  # the package root (``import scene_perception``) is below everything
        elif other not in LAYERS:
            problems.append(f"{line}: imports {target}: layer {other!r} is not in the layer order")
        elif LAYERS[other] > LAYERS[own]:
            problems.append(f"{line}: imports {target}: {own} (rank {LAYERS[own]}) may not import the higher "
                            f"layer {other} (rank {LAYERS[other]})")
        elif LAYERS[other] == LAYERS[own]:
            problems.append(f"{line}: imports {target}: {own} and {other} are peers and do not import each "
                            "other")
    return problems


def package_modules() -> Iterator[tuple[Path, str, bool]]:
    """(file, module name, is a package __init__) for every source file of the package."""
    for path in sorted(SOURCE.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        yield path, ".".join(parts), is_package


# ------------------------------------------------------------------------------------------ the package
def test_package_follows_the_layer_rules() -> None:
    found = []
    for path, module, is_package in package_modules():
        for problem in violations(path.read_text(encoding="utf-8"), module, is_package):
            found.append(f"{path.relative_to(ROOT)}:{problem}")
    assert not found, "layer rules broken (order in test/test_layers.py):\n  " + "\n  ".join(found)


def test_the_walk_sees_the_package() -> None:
    """Guards the walk: every layer has modules, and known edges (lazy ones included) are seen."""
    modules = {module: (path, pkg) for path, module, pkg in package_modules()}
    layers = {layer_of(m) for m in modules}
    assert set(LAYERS) | {ROOT_LAYER} == layers, sorted(layers - {None})

    def imports(module: str) -> set[str]:
        path, pkg = modules[module]
        return {t for _, t in imported_modules(path.read_text(encoding="utf-8"), module, pkg)}

    assert "rclpy" in {t.partition(".")[0] for t in imports("scene_perception.ros.node_base")}
    assert "scene_perception.models.labels" in {
        t for t in imports("scene_perception.pipelines.scene") if t.startswith("scene_perception.models")}
    # cli imports its sub-commands' code lazily, inside functions.
    assert any(t.startswith("scene_perception.pipelines") for t in imports("scene_perception.cli"))
    # data/synth.py imports the world through importlib and a module-level name.
    assert "scene_perception.data.world" in imports("scene_perception.data.synth")


# ------------------------------------------------------------------------------------ planted sources
@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        # (a) ROS outside ros/: module level, lazy, under TYPE_CHECKING, through importlib, the messages
        ("scene_perception.data.x", "import rclpy\n", "ROS is imported only"),
        ("scene_perception.models.x", "def f():\n    from ament_index_python.packages import a\n",
         "ROS is imported only"),
        ("scene_perception.pipelines.x", "if TYPE_CHECKING:\n    from sensor_msgs.msg import Image\n",
         "ROS is imported only"),
        ("scene_perception.evaluation.x", "import importlib\nimportlib.import_module('std_msgs.msg')\n",
         "ROS is imported only"),
        ("scene_perception.cli", "def f():\n    from scene_perception.msg import LabelInfo\n",
         "ROS is imported only"),
        ("scene_perception.training.x", "import launch_ros.actions\n", "ROS is imported only"),
        ("scene_perception.engines.x", "from rosidl_runtime_py import set_message\n", "ROS is imported only"),
        ("scene_perception.data.x", "import message_filters\n", "ROS is imported only"),
        # (b) benchmarks
        ("scene_perception.evaluation.x", "import benchmarks.engines\n", "must not depend on the benchmarks"),
        ("scene_perception.cli", "def f():\n    from benchmarks import stereo_accuracy\n",
         "must not depend on the benchmarks"),
        # (c) upward imports: absolute, lazy, relative, from the package root, through importlib
        ("scene_perception.pipelines.scene", "from scene_perception.data.world import CLASSES\n",
         "higher layer data"),
        ("scene_perception.geometry.x", "def f():\n    import scene_perception.models.gcnet\n",
         "higher layer models"),
        ("scene_perception.pipelines.x", "from ..data import world\n", "higher layer data"),
        ("scene_perception.pipelines.x", "from .. import training\n",
         "higher layer training"),
        ("scene_perception.models.x", "from scene_perception import cli\n", "higher layer cli"),
        ("scene_perception.data", "from .. import evaluation\n", "higher layer evaluation"),
        ("scene_perception.data.x", "NAME = 'scene_perception.ros.codec'\n"
         "def f():\n    return importlib.import_module(NAME)\n", "higher layer ros"),
        ("scene_perception.ros.x", "from scene_perception.cli import main\n", "higher layer cli"),
        # (c) peers
        ("scene_perception.losses.x", "from scene_perception.engines.base import InferenceEngine\n",
         "are peers"),
        ("scene_perception.engines.x", "def f():\n    from scene_perception.losses import stereo\n",
         "are peers"),
        ("scene_perception.training.x", "from scene_perception.evaluation.metrics import pool_metrics\n",
         "are peers"),
        ("scene_perception.evaluation.x", "from scene_perception.training import pose\n", "are peers"),
        # the package root and unknown layers
        ("scene_perception", "from scene_perception.models import gcnet\n", "below every layer"),
        ("scene_perception.utils", "import numpy\n", "not in the layer order"),
        ("scene_perception.data.x", "from scene_perception.utils import thing\n", "not in the layer order"),
    ],
)
def test_planted_violation_is_caught(module: str, source: str, expected: str) -> None:
    is_package = module.count(".") < 1 or module == "scene_perception.data"
    problems = violations(source, module, is_package)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("scene_perception.ros.x", "import rclpy\nfrom sensor_msgs.msg import Image\n"
         "from scene_perception.msg import LabelInfo\nfrom launch import LaunchDescription\n"),
        ("scene_perception.ros.x", "from scene_perception.pipelines.scene import ScenePipeline\n"),
        ("scene_perception.cli", "def f():\n    from scene_perception.ros.runner import run\n"),
        ("scene_perception.pipelines.x", "from scene_perception.models.labels import CLASSES\n"
         "from scene_perception.engines.base import InferenceEngine\nfrom .stereo_depth import a\n"),
        ("scene_perception.data.x", "from scene_perception.pipelines.instances import centroid_offsets\n"
         "from scene_perception.data.splits import held_out_seeds\n"),
        ("scene_perception.data.bag_io", "def f():\n    from rosbags.rosbag2 import Reader\n"),
        ("scene_perception.evaluation.x", "import numpy, torch, cv2\nimport scene_perception\n"
         "from scene_perception.data import world\n"),
        ("scene_perception.geometry.x", "from . import rotations\nimport importlib\n"
         "importlib.import_module(name)\n"),
    ],
)
def test_allowed_imports_pass(module: str, source: str) -> None:
    assert violations(source, module) == []
