"""Issue 21, item 4: ``launch/perception.launch.py`` is a thin wrapper over tested code.

``launch`` and ``launch_ros`` are not on PyPI, so the launch file cannot run here. What it starts is decided
by ``scene_perception.ros.launch_plan`` (tested directly below), and the launch file itself is executed with
small stand-ins for the launch API that record the actions it builds (:func:`run_launch_file`). The stand-ins
accept only the keywords the real classes accept, and LifecycleNode insists on ``name`` and ``namespace``
as launch_ros does. :func:`check_launch_targets` (used here on the source tree and by
``test/test_colcon_install.py`` on a colcon install space) checks that every executable, parameters file and
RViz config the launch file names exists there.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
import types
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch" / "perception.launch.py"
_STUBBED = ("launch", "launch.actions", "launch.substitutions", "launch_ros", "launch_ros.actions")


# --- stand-ins for the launch API ------------------------------------------------------------------------


@dataclass
class Action:
    kind: str  # "Node" | "LifecycleNode"
    kwargs: dict[str, Any] = field(default_factory=dict)


class _DeclareLaunchArgument:
    def __init__(self, name: str, *, default_value: str | None = None, description: str | None = None,
                 choices: list[str] | None = None) -> None:
        assert isinstance(name, str) and (default_value is None or isinstance(default_value, str)), name
        self.name, self.default_value = name, default_value


class _OpaqueFunction:
    def __init__(self, *, function, args=None, kwargs=None) -> None:  # noqa: ANN001
        self.function, self.args, self.kwargs = function, args or [], kwargs or {}


class _Context:
    def __init__(self, configurations: Mapping[str, str]) -> None:
        self.launch_configurations = dict(configurations)


class _LaunchConfiguration:
    def __init__(self, variable_name: str, *, default: str | None = None) -> None:
        self.name, self.default = variable_name, default

    def perform(self, context: _Context) -> str:
        if self.name not in context.launch_configurations and self.default is None:
            raise KeyError(f"launch configuration '{self.name}' does not exist")  # as launch does
        return context.launch_configurations.get(self.name, self.default)


_NODE_KEYWORDS = {
    "executable", "package", "name", "namespace", "exec_name", "parameters", "remappings", "ros_arguments",
    "arguments", "output", "emulate_tty", "respawn", "respawn_delay", "additional_env", "sigterm_timeout",
    "sigkill_timeout", "on_exit", "prefix", "cwd", "env",
}


def _node_class(kind: str, required: tuple[str, ...]) -> type:
    def __init__(self, **kwargs: Any) -> None:  # noqa: N807
        unknown = set(kwargs) - _NODE_KEYWORDS
        assert not unknown, f"{kind}() got unexpected keywords {unknown}"
        missing = [k for k in ("executable", *required) if k not in kwargs]
        assert not missing, f"{kind}() requires {missing}"
        self.action = Action(kind, kwargs)

    return type(kind, (), {"__init__": __init__})


class _LaunchDescription:
    def __init__(self, initial_entities=None) -> None:  # noqa: ANN001
        self.entities = list(initial_entities or [])


def _stub_modules() -> dict[str, types.ModuleType]:
    mods = {name: types.ModuleType(name) for name in _STUBBED}
    mods["launch"].LaunchDescription = _LaunchDescription
    mods["launch.actions"].DeclareLaunchArgument = _DeclareLaunchArgument
    mods["launch.actions"].OpaqueFunction = _OpaqueFunction
    mods["launch.substitutions"].LaunchConfiguration = _LaunchConfiguration
    mods["launch_ros.actions"].Node = _node_class("Node", ())
    mods["launch_ros.actions"].LifecycleNode = _node_class("LifecycleNode", ("name", "namespace"))
    mods["launch"].actions = mods["launch.actions"]
    mods["launch"].substitutions = mods["launch.substitutions"]
    mods["launch_ros"].actions = mods["launch_ros.actions"]
    return mods


@contextmanager
def _patched_modules(mods: Mapping[str, types.ModuleType]) -> Iterator[None]:
    saved = {name: sys.modules.get(name) for name in mods}
    sys.modules.update(mods)
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


@dataclass
class Launched:
    defaults: dict[str, str | None]
    actions: list[Action]


def run_launch_file(launch_file: Path, share: Path | None = None,
                    overrides: Mapping[str, str] | None = None) -> Launched:
    """Execute ``launch_file`` with the stand-ins: its declared arguments' defaults and the actions its
    OpaqueFunction returns for ``defaults | overrides``. ``share``: what get_package_share_directory
    returns (None: the real ament index, e.g. in a sourced install space)."""
    mods = _stub_modules()
    if share is not None:
        index = types.ModuleType("ament_index_python.packages")
        index.get_package_share_directory = lambda package: str(share)
        mods["ament_index_python.packages"] = index
    with _patched_modules(mods):
        spec = importlib.util.spec_from_file_location("_perception_launch_under_test", launch_file)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        description = module.generate_launch_description()
        entities = description.entities
        defaults = {e.name: e.default_value for e in entities if isinstance(e, _DeclareLaunchArgument)}
        context = _Context({**defaults, **(overrides or {})})
        actions = []
        for entity in entities:
            if isinstance(entity, _OpaqueFunction):
                actions += [a.action for a in entity.function(context, *entity.args, **entity.kwargs)]
    return Launched(defaults, actions)


def all_sections_config(path: Path) -> Path:
    """A parameters file with a (namespace-wildcard) section for every node the launch file knows."""
    sections = {f"/**/{n}": {"ros__parameters": {}} for n in _launch_executables()}
    text = yaml.safe_dump(sections, sort_keys=False)
    path.write_text(text)
    return path


def _launch_executables() -> dict[str, str]:
    tree = ast.parse(LAUNCH.read_text())
    return next(
        ast.literal_eval(n.value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "EXECUTABLES"
    )


def check_launch_targets(launch_file: Path, share: Path | None, lib: Path, tmp: Path) -> list[str]:
    """Everything the launch file names, checked to exist: the default parameters file and RViz config
    (in ``share``), and, for a config with every node section plus ``rviz:=true``, each node's executable
    (in ``lib``, executable) and parameters file. Returns the executables it checked."""
    launched = run_launch_file(launch_file, share)
    for arg in ("config", "rviz_config"):
        assert launched.defaults[arg] and Path(launched.defaults[arg]).is_file(), (arg, launched.defaults)
    config = all_sections_config(tmp / "all_nodes.yaml")
    launched = run_launch_file(launch_file, share, {"config": str(config), "rviz": "true"})
    checked = []
    for action in launched.actions:
        kw = action.kwargs
        if kw["package"] == "rviz2":
            assert kw["arguments"][0] == "-d" and Path(kw["arguments"][1]).is_file(), kw
            continue
        exe = lib / kw["executable"]
        assert exe.is_file() and os.access(exe, os.X_OK), f"{exe} is not an installed executable"
        assert all(Path(p).is_file() for p in kw["parameters"]), kw["parameters"]
        checked.append(kw["executable"])
    assert "rviz2" in [a.kwargs["package"] for a in launched.actions]
    return checked


# --- tests -------------------------------------------------------------------------------------------------


def test_defaults_start_the_shipped_config_nodes() -> None:
    launched = run_launch_file(LAUNCH, ROOT)
    assert launched.defaults["config"] == str(ROOT / "config" / "perception.yaml")
    assert launched.defaults["rviz"] == "false" and launched.defaults["autostart"] == "true"
    [action] = launched.actions  # the shipped config has one uncommented section: stereo_depth
    assert action.kind == "LifecycleNode"
    assert action.kwargs == {
        "package": "scene_perception",
        "executable": "stereo_depth_node",
        "name": "stereo_depth",
        "namespace": "",
        "parameters": [str(ROOT / "config" / "perception.yaml")],
        "arguments": [],
        "remappings": [
            ("left/image_rect", "left/image_rect"),
            ("right/image_rect", "right/image_rect"),
            ("left/camera_info", "left/camera_info"),
            ("right/camera_info", "right/camera_info"),
        ],
        "output": "screen",
    }


def test_every_section_rviz_no_autostart_and_remaps(tmp_path: Path) -> None:
    config = all_sections_config(tmp_path / "all.yaml")
    launched = run_launch_file(
        LAUNCH,
        ROOT,
        {"config": str(config), "rviz": "True", "autostart": "false", "namespace": "stereo",
         "left_image": "/cam/left/image", "right_info": "/cam/right/info"},
    )
    kinds = [(a.kind, a.kwargs["name"]) for a in launched.actions]
    assert kinds == [("LifecycleNode", n) for n in _launch_executables()] + [("Node", "rviz2")]
    for action in launched.actions:
        kw = action.kwargs
        assert kw["namespace"] == "stereo"
        remaps = dict(kw["remappings"])
        assert remaps["left/image_rect"] == "/cam/left/image"
        assert remaps["right/camera_info"] == "/cam/right/info"
        assert remaps["right/image_rect"] == "right/image_rect"
        if action.kind == "LifecycleNode":
            assert kw["arguments"] == ["--no-autostart"] and kw["parameters"] == [str(config)]
        else:
            assert kw["arguments"] == ["-d", str(ROOT / "rviz" / "perception.rviz")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("/**/stereo_dept:\n  ros__parameters: {}\n", r"unknown node '/\*\*/stereo_dept'"),
        ("/**:\n  ros__parameters: {}\n", "no node sections found"),
        ("- a\n- b\n", "expected a ROS 2 parameters file"),
    ],
)
def test_bad_config_is_a_clear_launch_error(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    with pytest.raises(ValueError, match=message):
        run_launch_file(LAUNCH, ROOT, {"config": str(config)})


def test_boolean_arguments_are_strict() -> None:
    with pytest.raises(ValueError, match="autostart:='ture' is not a boolean"):
        run_launch_file(LAUNCH, ROOT, {"autostart": "ture"})
    assert len(run_launch_file(LAUNCH, ROOT, {"autostart": "0", "rviz": "off"}).actions) == 1


def test_launch_targets_exist_in_the_source_layout(tmp_path: Path) -> None:
    """Source tree: share = the repo (config/, rviz/, launch/), lib = scripts/ (CMake installs scripts/* to
    lib/scene_perception). test_colcon_install runs the same check on a real install space."""
    checked = check_launch_targets(LAUNCH, ROOT, ROOT / "scripts", tmp_path)
    assert sorted(checked) == sorted(_launch_executables().values())


def test_node_choice_matches_scene_perception_run(tmp_path: Path) -> None:
    """launch_plan.configured_nodes (no torch import) decides exactly as runner.nodes_from_config, which
    `scene-perception run` and the node executables use: the same names, or the same error message."""
    from scene_perception.ros import launch_plan
    from scene_perception.ros.node_base import PerceptionNodeBase
    from scene_perception.ros.runner import node_types, nodes_from_config

    types_ = node_types()
    executables = _launch_executables()
    assert set(executables) == set(types_)
    assert all(issubclass(cls, PerceptionNodeBase) for cls in types_.values())  # LifecycleNode actions
    cases = [
        (ROOT / "config" / "perception.yaml").read_text(),
        "/**:\n  ros__parameters: {use_sim_time: true}\n/**/scene:\n  ros__parameters: {}\n"
        "sgbm_depth:\n  ros__parameters: {}\n/robot/pose:\n  ros__parameters: {}\n",
        "/**/stereo_depth:\n  ros__parameters: {}\n/**/nope:\n  ros__parameters: {}\n",
        "",
        "/**:\n  ros__parameters: {}\n",
        "[1, 2]\n",
        "a: [\n",
    ]
    for i, text in enumerate(cases):
        config = tmp_path / f"case{i}.yaml"
        config.write_text(text)
        try:
            expected: Any = [name for name, _, _ in nodes_from_config(config)]
        except ValueError as exc:
            expected = str(exc)
        try:
            got: Any = launch_plan.configured_nodes(config, executables)
        except ValueError as exc:
            got = str(exc)
        assert got == expected, text


def test_launch_file_stays_thin() -> None:
    """No parameters-file parsing or node choice in the launch file itself: those live in launch_plan."""
    tree = ast.parse(LAUNCH.read_text())
    imported = {
        (n.module if isinstance(n, ast.ImportFrom) else a.name).split(".")[0]
        for n in ast.walk(tree)
        if isinstance(n, ast.Import | ast.ImportFrom)
        for a in n.names
    }
    assert imported <= {"pathlib", "ament_index_python", "launch", "launch_ros", "scene_perception"}, imported
    functions = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert functions == {"_nodes", "generate_launch_description"}, functions
    assert "plan_nodes" in ast.unparse(tree)
