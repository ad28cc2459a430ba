"""``scene-perception demo``: a synthetic stereo bag through the running node, no camera needed.

Renders (once) a synthetic street sequence with exact ground truth into a rosbag2, then runs
:func:`scene_perception.ros.bag_eval.evaluate_bag` on it: replay over Fast DDS into the live stereo depth
node, record its outputs to a bag, score them, print a table, write a report and figures.
"""

from __future__ import annotations

from pathlib import Path

from scene_perception.ros.bag_eval import evaluate_bag


def run_demo(
    out_dir: Path = Path("out/demo"),
    frames: int = 8,
    model: str = "lite",
    weights: str | None = None,
    width: int = 512,
    height: int = 256,
    seed: int = 7,
    texture_dir: str | None = None,
    backend: str = "torch",
) -> int:
    """Generate (once) a synthetic bag, replay it through the node, score and plot the outputs."""
    from scene_perception.data.synth import write_synthetic_bag

    out_dir.mkdir(parents=True, exist_ok=True)
    bag = out_dir / f"synthetic_{width}x{height}_{frames}f_seed{seed}"
    if not (bag / "metadata.yaml").is_file():
        print(f"demo: rendering {frames} synthetic frames into {bag} ...")
        write_synthetic_bag(
            bag,
            frames,
            width=width,
            height=height,
            seed=seed,
            texture_dir=texture_dir,
            overwrite=bag.exists(),
        )
    return evaluate_bag(
        bag,
        out_dir,
        model,
        weights,
        backend=backend,
        title=f"demo: synthetic street ({width}x{height}, seed {seed}), model '{model}'",
    )
