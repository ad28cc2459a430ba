"""The node's parameters are declared once (ros/params.py) and stay in sync with the README and config."""

from __future__ import annotations

from pathlib import Path

import yaml

from scene_perception.ros.params import POSE_PARAMS, SCENE_PARAMS, SGBM_DEPTH_PARAMS, STEREO_DEPTH_PARAMS

ROOT = Path(__file__).resolve().parents[1]
ALL_SPECS = (*STEREO_DEPTH_PARAMS, *SGBM_DEPTH_PARAMS, *SCENE_PARAMS, *POSE_PARAMS)


def test_every_parameter_is_documented_in_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [s.name for s in ALL_SPECS if f"`{s.name}`" not in readme]
    assert not missing, f"parameters missing from the README table: {missing}"


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
