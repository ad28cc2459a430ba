"""A model config read back from its card: one rule for every ``*Config`` dataclass.

JSON has lists, not tuples, and a card written by hand may carry a typo; a config built from either must
equal the one that was saved, and a misspelt field must fail loudly rather than fall back to a default.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def config_from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """``cls(**data)`` with unknown keys refused (``ValueError`` naming them) and every ``tuple[...]`` field
    converted back from its JSON list, its items cast to the annotated ``int`` / ``float``."""
    unknown = set(data) - {f.name for f in fields(cls)}  # type: ignore[arg-type]
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    hints = typing.get_type_hints(cls)
    kwargs = dict(data)
    for key, value in data.items():
        hint = hints[key]
        if typing.get_origin(hint) is not tuple:
            continue
        items = [a for a in typing.get_args(hint) if a is not Ellipsis]
        cast = items[0] if items and items[0] in (int, float) else None
        kwargs[key] = tuple(cast(v) if cast is not None else v for v in value)
    return cls(**kwargs)
