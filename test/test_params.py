"""The node's parameters are declared once (ros/params.py) and stay in sync with the docs and config.

docs/ros_interface.md's parameter tables are generated from params.py by tools/param_docs.py; a change to a
ParamSpec without ``python tools/param_docs.py --write`` fails here.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from scene_perception.ros.params import POSE_PARAMS, SCENE_PARAMS, SGBM_DEPTH_PARAMS, STEREO_DEPTH_PARAMS

ROOT = Path(__file__).resolve().parents[1]
ALL_SPECS = (*STEREO_DEPTH_PARAMS, *SGBM_DEPTH_PARAMS, *SCENE_PARAMS, *POSE_PARAMS)
DOC = ROOT / "docs" / "ros_interface.md"


@pytest.fixture(scope="module")
def param_docs() -> ModuleType:
    """tools/param_docs.py (a script, not a package module), imported from its file."""
    spec = importlib.util.spec_from_file_location("param_docs", ROOT / "tools" / "param_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("param_docs", module)
    spec.loader.exec_module(module)
    return module


def test_generated_parameter_tables_match_params_py(param_docs: ModuleType) -> None:
    diff = param_docs.check(DOC)
    assert not diff, f"docs/ros_interface.md is out of date: run python tools/param_docs.py --write\n{diff}"


def test_every_parameter_is_documented_per_node(param_docs: ModuleType) -> None:
    text = DOC.read_text()
    regions = {m.group("node"): m.group("body") for m in param_docs._REGION.finditer(text)}
    assert set(regions) == set(param_docs.NODES) == {"stereo_depth", "sgbm_depth", "scene", "pose"}
    for node, specs in param_docs.NODES.items():
        missing = [s.name for s in specs if f"| `{s.name}` |" not in regions[node]]
        assert not missing, f"{node}: parameters missing from docs/ros_interface.md: {missing}"
    assert set(param_docs.NODES["stereo_depth"]) == set(STEREO_DEPTH_PARAMS)


def test_the_check_catches_drift(param_docs: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """A changed default, a new parameter or a hand edit of a table each make the document stale."""
    text = DOC.read_text()
    assert param_docs.update(text) == text
    specs = param_docs.NODES["sgbm_depth"]
    changed = (dataclasses.replace(specs[0], default=specs[0].default + 16), *specs[1:])
    monkeypatch.setitem(param_docs.NODES, "sgbm_depth", changed)
    assert param_docs.update(text) != text
    added = (*specs, dataclasses.replace(specs[0], name="new_one"))
    monkeypatch.setitem(param_docs.NODES, "sgbm_depth", added)
    assert "`new_one`" in param_docs.update(text)
    monkeypatch.setitem(param_docs.NODES, "sgbm_depth", specs)
    edited = text.replace("| `scale` | double |", "| `scale` | integer |")
    assert edited != text and param_docs.update(edited) == text
    with pytest.raises(ValueError, match="pose"):
        param_docs.update(text.replace("<!-- BEGIN PARAMS pose -->", ""))


def _flatten(tree: dict, prefix: str = "") -> dict:
    """Nested YAML mappings name parameters with dots, as rcl reads a params file."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def test_config_file_only_sets_declared_parameters_with_matching_types() -> None:
    cfg = yaml.safe_load((ROOT / "config" / "perception.yaml").read_text())
    # "/**/stereo_depth": the section must match the node in any namespace.
    assert "/**/stereo_depth" in cfg, "config sections need /**/ to apply under a namespace"
    params = _flatten(cfg["/**/stereo_depth"]["ros__parameters"])
    specs = {s.name: s for s in STEREO_DEPTH_PARAMS}
    unknown = sorted(set(params) - set(specs))
    assert not unknown, f"config sets undeclared parameters: {unknown}"
    for name, value in params.items():
        default = specs[name].default
        assert type(value) is type(default), f"{name}: {value!r} vs default {default!r}"


def test_numeric_parameters_have_ranges_and_choices_are_valid() -> None:
    for spec in ALL_SPECS:
        desc = spec.descriptor()
        if isinstance(spec.default, bool):
            continue
        if isinstance(spec.default, int):
            assert desc.integer_range, spec.name
            r = desc.integer_range[0]
            assert r.from_value <= spec.default <= r.to_value, spec.name
        elif isinstance(spec.default, float):
            assert desc.floating_point_range, spec.name
            r = desc.floating_point_range[0]
            assert r.from_value <= spec.default <= r.to_value, spec.name
        if spec.choices:
            assert spec.default in spec.choices, spec.name


@pytest.mark.ros  # starts rclpy
def test_nested_params_file_sets_the_local_refinement(tmp_path: Path) -> None:
    """A nested `local_refinement:` in a params file (as config/perception.yaml has it) reaches the node."""
    import rclpy
    from rclpy.context import Context

    from scene_perception.ros.params import local_refinement_config
    from scene_perception.ros.stereo_depth_node import StereoDepthNode

    cfg = tmp_path / "p.yaml"
    cfg.write_text("/**/stereo_depth:\n  ros__parameters:\n    local_refinement:\n      iterations: 1\n"
                   "      window: 5\n")
    context = Context()
    rclpy.init(args=["test", "--ros-args", "--params-file", str(cfg)], context=context)
    try:
        node = StereoDepthNode("stereo_depth", context=context)
        setting = local_refinement_config(node.params)
        assert setting is not None and (setting.iterations, setting.window) == (1, 5)
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def test_descriptor_and_live_refusal_say_the_same_rule() -> None:
    """A non-dynamic parameter's descriptor says "Applied on configure." and ``ros2 param set`` on a
    configured node is refused with a reason saying the same (issue 20, item 7); dynamic ones say "next
    frame"."""
    from scene_perception.ros.params import applied_on_configure_reason

    for spec in ALL_SPECS:
        text = spec.descriptor().description
        when = " Applied on the next frame." if spec.dynamic else " Applied on configure."
        assert text.endswith(when), spec.name
    reason = applied_on_configure_reason("input_qos", "active")
    assert reason.startswith("'input_qos' is applied on configure: deactivate and clean up the node first")
