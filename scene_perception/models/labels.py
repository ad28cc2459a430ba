"""The semantic label set: class ids, names, display colours and which classes are *things*.

One definition for everything that speaks about semantic classes: the scene network's output channels
(:class:`~scene_perception.models.multitask.MultiTaskConfig` ``num_classes``), the scene pipeline's
instance clustering and label colours, the synthetic street world that renders the ground truth
(:mod:`scene_perception.data.world`, which re-exports these names), the Cityscapes mapping, the evaluations
and the ROS scene node.  It lives in ``models`` (just above ``geometry`` in the layer order, see
``scene_perception/__init__.py``) because the label set is what the network predicts; every layer that
needs it may import it from here, and ``pipelines`` no longer has to reach up into ``data`` for it.

Things and stuff: ``car``, ``person`` and ``pole`` are *things* (each object gets an instance id); the
others are *stuff* with instance 0, as in the Cityscapes/KITTI panoptic conventions.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "BUILDING",
    "CAR",
    "CLASSES",
    "PERSON",
    "POLE",
    "ROAD",
    "SIDEWALK",
    "SKY",
    "TERRAIN",
    "THING_CLASSES",
    "VEGETATION",
    "SemanticClass",
    "colourise_semantic",
]


class SemanticClass(NamedTuple):
    """One semantic label: stable integer id, name, and display colour (RGB, Cityscapes palette)."""

    id: int
    name: str
    rgb: tuple[int, int, int]


SKY, ROAD, SIDEWALK, BUILDING, CAR, PERSON, POLE, VEGETATION, TERRAIN = range(9)
# Ids are part of the data contract (bags and checkpoints store them): append, never renumber.
CLASSES: tuple[SemanticClass, ...] = (
    SemanticClass(SKY, "sky", (70, 130, 180)),
    SemanticClass(ROAD, "road", (128, 64, 128)),
    SemanticClass(SIDEWALK, "sidewalk", (244, 35, 232)),
    SemanticClass(BUILDING, "building", (70, 70, 70)),
    SemanticClass(CAR, "car", (0, 0, 142)),
    SemanticClass(PERSON, "person", (220, 20, 60)),
    SemanticClass(POLE, "pole", (153, 153, 153)),
    SemanticClass(VEGETATION, "vegetation", (107, 142, 35)),
    SemanticClass(TERRAIN, "terrain", (152, 251, 152)),
)
# Classes whose objects carry instance ids (all others have instance 0).
THING_CLASSES: frozenset[int] = frozenset({CAR, PERSON, POLE})

_PALETTE = np.zeros((256, 3), np.uint8)
for _c in CLASSES:
    _PALETTE[_c.id] = _c.rgb


def colourise_semantic(semantic: np.ndarray) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8 RGB with the :data:`CLASSES` colours (unknown ids black)."""
    return _PALETTE[np.asarray(semantic, np.uint8)]
