#!/usr/bin/env python3
"""Latency and peak memory of the torch engine and the whole stereo pipeline on one device, across
precisions (fp32 / fp16 / bf16) and execution modes (eager / CUDA graphs / torch.compile).

Written for the GPU machine (``tools/gpu_run.sh``), runs anywhere: on CPU it times fp32 eager (and what
else ``--precisions`` / ``--modes`` ask for that the CPU can run).  Each cell is one (model config, size,
precision, mode, what), where *what* is

* ``network``: the engine's ``infer`` on device-resident (1, 3, H, W) inputs at the padded size, timed
  with a device sync after every call (wall time, launch overhead included: what a node pays);
* ``pipeline``: ``StereoDepthPipeline`` from uint8 numpy pair to numpy outputs (upload, padding, network,
  local refinement, far head, validity, depth, points, download) with the default settings (on a GPU: no SGBM
  candidate, ``local_refinement.sgbm_on_accelerator``); ``pipeline-sgbm`` with the SGBM candidate forced on
  (CPU OpenCV, overlapped with the forward pass on a GPU); ``pipeline-raw`` without refinement.

Per cell: p50 / p95 / p99 ms, fps at p50, peak device memory (``torch.cuda.max_memory_allocated``; CPU:
not measured), and the error when a cell fails (one failing cell does not stop the run).  The rows go to
``--json`` after every cell, so a run killed by its time limit keeps what it measured; ``--budget-s``
skips (and records as skipped) the cells that would start after the budget is spent.

Weights: the shipped ``lite`` card (``paper`` has none yet: untrained weights, latency does not depend
on them).  The pair is a rendered procedural scene, so the refinement does its real amount of work.

Examples::

    python benchmarks/torch_device.py --device cuda --json out/timings.json
    python benchmarks/torch_device.py --device cpu --configs lite --sizes 64x128 --repeats 3
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from scene_perception.data.procedural import make_stereo_sample
from scene_perception.engines.onnx_export import padded_size
from scene_perception.engines.torch_engine import TorchEngine
from scene_perception.evaluation.benchmarking import parse_size, write_json
from scene_perception.models.weights import ModelLoadError, load_far_head, load_stereo_model
from scene_perception.pipelines.image_tensor import image_to_tensor
from scene_perception.pipelines.stereo_depth import DEFAULT_LOCAL_REFINEMENT, StereoDepthPipeline

#: The camera sizes of the issue: a small robot camera, Isaac ROS ESS's 576x960, KITTI's 1242x375.
DEFAULT_SIZES = ["240x320", "576x960", "375x1242"]
WHATS = ("network", "pipeline", "pipeline-sgbm", "pipeline-raw")
#: Reference points quoted next to the results (not measured here): NVIDIA Isaac ROS ESS, full graph.
ESS_FPS = {"RTX 5090, 576x960": 121.0, "AGX Orin, 576x960": 35.7}


@dataclasses.dataclass(frozen=True)
class Cell:
    config: str
    size: tuple[int, int]
    precision: str
    mode: str  # eager | graphs | compile
    what: str


def percentile(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def default_cells(args: argparse.Namespace) -> list[Cell]:
    """The matrix, most important first (the budget cuts from the end): every config x size x precision x
    mode for the network; the pipeline variants for the fastest setting (bf16 + graphs on CUDA) and the
    reference (fp32 eager); torch.compile last, only where ``--compile-sizes`` asks (it compiles per
    shape, seconds to minutes each)."""
    cuda = args.device.startswith("cuda")
    fast = ("bf16", "graphs") if cuda else ("fp32", "eager")
    cells: list[Cell] = []
    for size in args.sizes:
        for config in args.configs:
            cells.append(Cell(config, size, *fast, "network"))
            cells += [Cell(config, size, *fast, what) for what in args.pipelines]
    for size in args.sizes:
        for config in args.configs:
            for precision in args.precisions:
                for mode in args.modes:
                    if mode == "compile" or (precision, mode) == fast:
                        continue
                    cells.append(Cell(config, size, precision, mode, "network"))
            if fast != ("fp32", "eager") and "fp32" in args.precisions:
                cells += [Cell(config, size, "fp32", "eager", what) for what in args.pipelines]
    if "compile" in args.modes:
        for size in args.compile_sizes:
            cells += [Cell(config, size, p, "compile", "network") for config in args.configs
                      for p in args.precisions if p != "fp16"]
    return cells


class Runner:
    """Builds engines and pipelines per cell (models and rendered pairs cached) and times them."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = torch.device(args.device)
        self._models: dict[str, tuple[torch.nn.Module, bool]] = {}
        self._far_heads: dict[str, torch.nn.Module | None] = {}
        self._pairs: dict[tuple[int, int], Any] = {}

    def model(self, config: str) -> tuple[torch.nn.Module, bool]:
        if config not in self._models:
            model, info = load_stereo_model(config)
            self._models[config] = (model, info.trained)
            try:  # the node's default pipeline runs the far head of these weights when there is one
                self._far_heads[config] = load_far_head(info)[0]
            except ModelLoadError:
                self._far_heads[config] = None
        return self._models[config]

    def sample(self, size: tuple[int, int]) -> Any:
        if size not in self._pairs:
            h, w = size
            self._pairs[size] = make_stereo_sample(7, width=w, height=h)
        return self._pairs[size]

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def time(self, fn: Callable[[], object], repeats: int) -> list[float]:
        for _ in range(self.args.warmup):
            fn()
        self.sync()
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            self.sync()
            samples.append((time.perf_counter() - start) * 1000.0)
        return samples

    def run(self, cell: Cell) -> dict[str, Any]:
        model, trained = self.model(cell.config)
        h, w = cell.size
        ph, pw = padded_size(h, w, model.size_divisor)
        row: dict[str, Any] = {**dataclasses.asdict(cell), "size": f"{w}x{h}", "padded": f"{pw}x{ph}",
                               "device": str(self.device), "trained_weights": trained}
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        engine = TorchEngine(model, device=str(self.device), precision=cell.precision,
                             cuda_graphs=cell.mode == "graphs", compile=cell.mode == "compile")
        sample = self.sample(cell.size)
        repeats = self.args.repeats if cell.config != "paper" else max(3, self.args.repeats // 3)
        try:
            if cell.what == "network":
                feeds = {
                    name: torch.nn.functional.pad(image_to_tensor(img, self.device), (0, pw - w, 0, ph - h),
                                                  mode="replicate")
                    for name, img in (("left", sample.left), ("right", sample.right))
                }
                samples = self.time(lambda: engine.infer(feeds), repeats)
            else:
                refinement = {"pipeline": DEFAULT_LOCAL_REFINEMENT, "pipeline-raw": None,
                              "pipeline-sgbm": dataclasses.replace(DEFAULT_LOCAL_REFINEMENT,
                                                                   sgbm_on_accelerator=True)}[cell.what]
                pipe = StereoDepthPipeline(engine, local_refinement=refinement,
                                           far_head=self._far_heads.get(cell.config))
                row["far_head"] = pipe.far_head is not None and pipe.far_probability < 1.0
                parts: dict[str, list[float]] = {"inference_ms": [], "refinement_ms": []}

                def call() -> None:
                    res = pipe(sample.left, sample.right, sample.camera)
                    parts["inference_ms"].append(res.inference_ms)
                    parts["refinement_ms"].append(res.refinement_ms)

                samples = self.time(call, repeats)
                for key, values in parts.items():
                    row[f"{key}_p50"] = round(statistics.median(values[self.args.warmup:]), 3)
        finally:
            engine.close()
        row.update(
            n=len(samples), p50_ms=round(percentile(samples, 0.5), 3),
            p95_ms=round(percentile(samples, 0.95), 3), p99_ms=round(percentile(samples, 0.99), 3),
            fps=round(1000.0 / percentile(samples, 0.5), 1),
        )
        if self.device.type == "cuda":
            row["peak_mem_mb"] = round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
        return row


def run_cells(cells: list[Cell], runner: Runner, budget_s: float, json_path: Path | None) -> Iterator[dict]:
    """Run every cell within the budget, writing all rows so far to ``json_path`` after each one."""
    start = time.monotonic()
    rows: list[dict[str, Any]] = []
    for cell in cells:
        if time.monotonic() - start > budget_s:
            row: dict[str, Any] = {**dataclasses.asdict(cell), "size": f"{cell.size[1]}x{cell.size[0]}",
                                   "skipped": f"time budget of {budget_s:.0f} s spent"}
        else:
            t0 = time.monotonic()
            try:
                row = runner.run(cell)
            except (RuntimeError, ValueError, torch.cuda.OutOfMemoryError) as exc:
                row = {**dataclasses.asdict(cell), "size": f"{cell.size[1]}x{cell.size[0]}",
                       "error": f"{type(exc).__name__}: {exc}"[:500]}
            row["cell_s"] = round(time.monotonic() - t0, 1)
        rows.append(row)
        if json_path is not None:
            write_json(json_path, rows)
        yield row


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| config | size | precision | mode | what | p50 / p95 / p99 ms | fps (p50) | peak MB | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        head = f"| {r['config']} | {r['size']} | {r['precision']} | {r['mode']} | {r['what']} "
        if "p50_ms" not in r:
            lines.append(head + f"| | | | {r.get('error') or r.get('skipped')} |")
            continue
        note = "" if r.get("trained_weights") else "untrained weights"
        if "refinement_ms_p50" in r:
            note = f"net {r['inference_ms_p50']:.2f} + refine {r['refinement_ms_p50']:.2f} ms " + note
        lines.append(head + f"| {r['p50_ms']:.2f} / {r['p95_ms']:.2f} / {r['p99_ms']:.2f} | {r['fps']:.0f} "
                     f"| {r.get('peak_mem_mb', '-')} | {note.strip()} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--configs", nargs="+", default=["lite", "paper"])
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[parse_size(s) for s in DEFAULT_SIZES])
    parser.add_argument("--precisions", nargs="+", default=None,
                        help="default: fp32 fp16 bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--modes", nargs="+", default=None,
                        help="default: eager graphs compile on CUDA, eager on CPU")
    parser.add_argument("--pipelines", nargs="*", default=list(WHATS[1:]), choices=WHATS[1:])
    parser.add_argument("--compile-sizes", nargs="*", type=parse_size, default=[parse_size("576x960")])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--budget-s", type=float, default=float("inf"),
                        help="skip the cells that would start after this many seconds")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", type=Path, default=None, help="rows as JSON, rewritten after every cell")
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    args.precisions = args.precisions or (["fp32", "fp16", "bf16"] if cuda else ["fp32"])
    args.modes = args.modes or (["eager", "graphs", "compile"] if cuda else ["eager"])
    logging.basicConfig(level=logging.ERROR)  # the untrained-paper warning once per load is noise here
    if args.threads:
        torch.set_num_threads(args.threads)
    name = torch.cuda.get_device_name(args.device) if cuda else "CPU"
    print(f"torch {torch.__version__} on {name}; {args.repeats} repeats (+{args.warmup} warm-up)", flush=True)
    rows = []
    for row in run_cells(default_cells(args), Runner(args), args.budget_s, args.json):
        rows.append(row)
        status = row.get("error") or row.get("skipped") or f"p50 {row['p50_ms']:.2f} ms"
        print(f"  {row['config']} {row['size']} {row['precision']} {row['mode']} {row['what']}: {status}",
              flush=True)
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
