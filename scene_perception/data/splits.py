"""The synthetic splits: which seeds are training, validation (model selection) and test (held out) data.

One place for them because training, the benchmarks, the evaluations and the selection rules must all mean
the same data.

* Stereo pairs (:mod:`scene_perception.data.procedural`): validation seeds start at
  :data:`VALIDATION_SEED_START`, test seeds at :data:`HELD_OUT_SEED_START`.  Training never renders a raw
  seed: its items use ``SeedSequence([data seed, index])`` hashes, and :func:`check_held_out` proves a
  training run does not touch these ranges.
* Street-world sequences (:mod:`scene_perception.data.world`, the scene network): world seeds below
  :data:`HELDOUT_SEED_LIMIT` are evaluation data; scene training refuses them.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "HELDOUT_SEED_LIMIT",
    "HELD_OUT_SEED_START",
    "VALIDATION_SEED_START",
    "check_held_out",
    "held_out_seeds",
]

#: First seed of the held-out (test) synthetic set: scored after a decision, never used to make one.
HELD_OUT_SEED_START = 10_000_000
#: First seed of the validation set (model selection); disjoint from the held-out range above.
VALIDATION_SEED_START = 20_000_000
#: Street-world seeds below this are the scene network's evaluation data and never trained on.
HELDOUT_SEED_LIMIT = 100


def held_out_seeds(n: int, split: str = "test") -> list[int]:
    """Seeds of the held-out (``"test"``) or ``"validation"`` synthetic set: a fixed range, so every run
    scores the same pairs."""
    if split not in ("test", "validation"):
        raise ValueError(f"split must be 'test' or 'validation', got {split!r}")
    start = VALIDATION_SEED_START if split == "validation" else HELD_OUT_SEED_START
    return [start + i for i in range(n)]


def check_held_out(seeds: list[int], train_seed: int, train_samples: int) -> None:
    """Fail loudly if a held-out seed is also a training item seed (same formula as the dataset)."""
    wanted = set(seeds)
    for index in range(train_samples):
        item_seed = int(np.random.SeedSequence([train_seed, index]).generate_state(1)[0])
        if item_seed in wanted:
            raise RuntimeError(
                f"held-out seed {item_seed} is training item {index} of data seed {train_seed}; "
                "move HELD_OUT_SEED_START"
            )
