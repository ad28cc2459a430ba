"""Our fallback ``scene_perception/LabelInfo`` against ``vision_msgs/LabelInfo``, field for field.

``semantic/label_info`` publishes ``vision_msgs/LabelInfo`` when vision_msgs is installed and our own message
(msg/LabelInfo.msg + msg/VisionClass.msg) otherwise, because vision_msgs is not on PyPI. A subscriber
written against vision_msgs can only read the fallback if the two have the same fields, types and order, so
this compares the *generated* class (``get_fields_and_field_types()``, what actually goes on the wire) with
vision_msgs' definition parsed by rosidl's own .msg parser, nested types included.

The upstream field declarations are copied below (comments left out) from the ROS 2 branch of
ros-perception/vision_msgs at release 4.1.1, commit e77fa2d97d69abaaa546592892d2d5d16cec9977 (the last
commit touching these two files is 87c3ba4800abbeb6d5200e5aae5eabbdbd11643b):
https://github.com/ros-perception/vision_msgs/blob/e77fa2d97d69abaaa546592892d2d5d16cec9977/vision_msgs/msg/LabelInfo.msg
https://github.com/ros-perception/vision_msgs/blob/e77fa2d97d69abaaa546592892d2d5d16cec9977/vision_msgs/msg/VisionClass.msg

msg/ copies them (issue 20 item 9), so the two must compare equal; any edit to msg/ that breaks the layout
fails ``test_fallback_matches_vision_msgs`` with the differences spelled out.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from rosidl_adapter.msg import MSG_TYPE_TO_IDL
from rosidl_adapter.parser import MessageSpecification, Type, parse_message_string

REPO = Path(__file__).resolve().parents[1]

UPSTREAM_PACKAGE = "vision_msgs"
UPSTREAM: dict[str, str] = {
    "LabelInfo": """
std_msgs/Header header
vision_msgs/VisionClass[] class_map
float32 threshold
""",
    "VisionClass": """
uint16 class_id
string class_name
""",
}
OUR_PACKAGE = "scene_perception"


def type_string(t: Type) -> str:
    """A .msg field type spelled as rosidl_generator_py's ``get_fields_and_field_types()`` spells it."""
    if t.is_primitive_type():
        base = MSG_TYPE_TO_IDL[t.type]
        if t.string_upper_bound is not None:
            base += f"<{t.string_upper_bound}>"
    else:
        base = f"{t.pkg_name}/{t.type}"
    if not t.is_array:
        return base
    if t.array_size is None:
        return f"sequence<{base}>"
    if t.is_upper_bound:
        return f"sequence<{base}, {t.array_size}>"
    return f"{base}[{t.array_size}]"


def upstream_fields(name: str) -> list[tuple[str, str]]:
    spec: MessageSpecification = parse_message_string(UPSTREAM_PACKAGE, name, UPSTREAM[name])
    assert not spec.constants
    return [(f.name, type_string(f.type)) for f in spec.fields]


def our_fields(name: str) -> list[tuple[str, str]]:
    cls = getattr(importlib.import_module(f"{OUR_PACKAGE}.msg"), name)
    return list(cls.get_fields_and_field_types().items())


def _nested(type_str: str) -> tuple[str, str, str] | None:
    """``(wrapper, package, message)`` of a nested message type string, ``None`` for a primitive."""
    inner = type_str
    wrapper = ""
    if inner.startswith("sequence<"):
        inner, wrapper = inner[len("sequence<") : -1], "sequence"
    elif inner.endswith("]"):
        inner, wrapper = inner[: inner.index("[")], inner[inner.index("[") :]
    if "/" not in inner:
        return None
    pkg, msg = inner.split(",")[0].split("/")
    return wrapper, pkg, msg


def _short(type_str: str) -> str:
    return type_str.replace(f"{UPSTREAM_PACKAGE}/", "").replace(f"{OUR_PACKAGE}/", "")


def differences(
    upstream: str = "LabelInfo",
    ours: str = "LabelInfo",
    path: str = "LabelInfo",
    fields_of: Callable[[str], list[tuple[str, str]]] = our_fields,
) -> list[str]:
    """Every way our generated ``ours`` differs from vision_msgs' ``upstream``, nested types recursively.

    Field names, order and types must match; a vision_msgs type nested in vision_msgs may correspond to one
    of ours (compared field for field), any other package's type (std_msgs/Header) must be the same type.
    ``fields_of`` gives our message's fields (the generated classes; replaced only to test this function).
    """
    out: list[str] = []
    theirs, mine = upstream_fields(upstream), fields_of(ours)
    where = path if upstream == ours else f"{path} element {upstream} vs {ours}"
    for i, ((t_name, t_type), (o_name, o_type)) in enumerate(zip(theirs, mine, strict=False)):
        t_nested, o_nested = _nested(t_type), _nested(o_type)
        same_shape = (
            t_nested is not None
            and o_nested is not None
            and t_nested[0] == o_nested[0]
            and t_nested[1] == UPSTREAM_PACKAGE
            and o_nested[1] == OUR_PACKAGE
        )
        if t_name != o_name or (t_type != o_type and not same_shape):
            out.append(
                f"{where} field {i}: vision_msgs has {t_name!r} ({_short(t_type)}), "
                f"ours has {o_name!r} ({_short(o_type)})"
            )
        if same_shape:
            assert t_nested is not None and o_nested is not None
            out += differences(t_nested[2], o_nested[2], f"{path}.{t_name}", fields_of)
    for t_name, t_type in theirs[len(mine) :]:
        out.append(f"{where}: ours lacks field {t_name!r} ({_short(t_type)})")
    for o_name, o_type in mine[len(theirs) :]:
        out.append(f"{where}: ours has an extra field {o_name!r} ({_short(o_type)})")
    return out


def test_upstream_definition_parses() -> None:
    assert upstream_fields("LabelInfo") == [
        ("header", "std_msgs/Header"),
        ("class_map", "sequence<vision_msgs/VisionClass>"),
        ("threshold", "float"),
    ]
    assert upstream_fields("VisionClass") == [("class_id", "uint16"), ("class_name", "string")]


def test_type_strings_match_the_generator() -> None:
    """The spelling of parsed .msg types is the generator's: our own msg/ files parse to our classes.

    Like vision_msgs' (``upstream_fields`` asserts that), our copies declare no constants.
    """
    for name in UPSTREAM:
        text = (REPO / "msg" / f"{name}.msg").read_text()
        spec = parse_message_string(OUR_PACKAGE, name, text)
        assert not spec.constants
        assert [(f.name, type_string(f.type)) for f in spec.fields] == our_fields(name)


def test_comparison_itself() -> None:
    """vision_msgs' layout under our package name compares equal; each kind of change is reported."""

    def aligned(name: str) -> list[tuple[str, str]]:
        return [(f, t.replace(f"{UPSTREAM_PACKAGE}/", f"{OUR_PACKAGE}/")) for f, t in upstream_fields(name)]

    assert differences(fields_of=aligned) == []

    def changed(name: str) -> list[tuple[str, str]]:
        fields = aligned(name)
        if name == "VisionClass":
            return [("class_id", "uint8"), fields[1]]
        return fields[:2]

    assert differences(fields_of=changed) == [
        "LabelInfo.class_map field 0: vision_msgs has 'class_id' (uint16), ours has 'class_id' (uint8)",
        "LabelInfo: ours lacks field 'threshold' (float)",
    ]


def test_fallback_matches_vision_msgs() -> None:
    """Same field names, types and order as vision_msgs/LabelInfo, nested VisionClass included."""
    assert differences() == []
