"""Interactive segmentation on a CPU: nano-SAM trained from scratch with SAM's simulated clicks, against a colour
flood fill that needs no learning, in the same run.

nano-SAM: ``seglab.interactive.nano_sam_64()`` (the ``"nano"`` preset at 64-pixel inputs with 4-pixel patches: a
16x16 embedding, masks at 64x64 = the image; 1.08 M parameters), trained with ``train_sam_clicks`` (AdamW, SAM's
click simulation scaled down to 1 + 3 + 1 rounds; see ``seglab.interactive.training`` for the departures from the
paper). Baseline: ``FloodFillSegmenter`` with its colour tolerance chosen on 60 training objects
(``choose_tolerance``, by NoC@85). Both are driven by the same deterministic clicker (``next_click``: the largest error
region, its innermost pixel) for 20 clicks per object.

Data, one object per prompt:

- synthetic: ``SyntheticPanopticShapes`` 64x64; trained on the shapes of 512 train images, measured on the shapes of
  64 val images (every shape); seeds 0, 1, 2 (the model's initialisation, the batches and the clicks);
- ISBI 2012 cells: 64x64 crops at full resolution; trained on 20 crops per train slice (24 slices), measured on 4
  crops per val slice (the last 6 slices, never seen), at most 4 cells of >= 64 pixels per crop; seed 0.

Budget: one thread; CPU seconds (``time.process_time()``) of each whole run (data, baseline, training, evaluation),
at most 300 s on the project's 2-core CPU, which is shared, so wall time means little. Peak RSS: the process's
``ru_maxrss`` at the end (all runs in one process). ``--bf16`` adds a run of seed 0 (synthetic) with bf16 autocast.

Usage::

    python benchmarks/sam_clicks.py                # the table (about 20 min of wall time on the shared CPU)
    python benchmarks/sam_clicks.py --quick        # CI: 40 steps, 16 val images, 5 clicks, synthetic only (< 60 s)

Writes ``benchmarks/results/sam_clicks_<date>.md`` / ``.json`` (``--quick`` writes nothing unless ``--out``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from seglab.interactive import (FloodFillSegmenter, choose_tolerance, click_curves, isbi_objects,  # noqa: E402
                                nano_sam_64, sam_click_curves, summarize_clicks, synthetic_objects, train_sam_clicks)
from seglab.models.sam import Sam  # noqa: E402

TOLERANCES = (10, 20, 30, 45, 60, 80, 110)
COLUMNS = ("IoU@1", "IoU@3", "IoU@5", "NoC@85", "NoC@90", "NoF@85", "NoF@90")


def load(dataset: str, quick: bool) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(train pairs, held-out pairs) of ``dataset``."""
    if dataset == "synthetic":
        return synthetic_objects("train", 128 if quick else 512), synthetic_objects("val", 8 if quick else 64)
    return isbi_objects("train", 20, seed=0), isbi_objects("val", 4, seed=1)


def run(dataset: str, seed: int, args, bf16: bool = False) -> list[dict]:
    """One whole run: baseline + nano-SAM (untrained, trained); rows with CPU seconds."""
    start = time.process_time()
    (train_images, train_targets), (val_images, val_targets) = load(dataset, args.quick)
    clicks = 5 if args.quick else args.clicks
    at = tuple(k for k in (1, 3, 5) if k <= clicks)
    summary = dict(at=at, max_clicks=clicks)
    rows = []
    t = time.process_time()
    pick = np.random.default_rng(seed).choice(len(train_images), min(60, len(train_images)), replace=False)
    tolerance = choose_tolerance(list(train_images[pick]), list(train_targets[pick]), TOLERANCES,
                                 max_clicks=clicks)  # fmt: skip
    segmenters = [FloodFillSegmenter(image, tolerance) for image in val_images]
    curves = click_curves(lambda i, c: segmenters[i].segment(c), list(val_targets), clicks)
    rows.append({"method": f"flood fill (tolerance {tolerance:g})", **summarize_clicks(curves, **summary),
                 "train_cpu_s": 0.0, "eval_cpu_s": time.process_time() - t})
    torch.manual_seed(seed)
    model = Sam(nano_sam_64())
    t = time.process_time()
    curves = sam_click_curves(model, val_images, val_targets, clicks)
    rows.append({"method": "nano-SAM untrained", **summarize_clicks(curves, **summary), "train_cpu_s": 0.0,
                 "eval_cpu_s": time.process_time() - t})
    steps = 40 if args.quick else args.steps
    history = train_sam_clicks(model, train_images, train_targets, steps=steps, batch_size=args.batch_size,
                               lr=args.lr, seed=seed, bf16=bf16, log_every=0 if args.quick else 50)
    t = time.process_time()
    curves = sam_click_curves(model, val_images, val_targets, clicks)
    rows.append({"method": f"nano-SAM {steps} steps ({'bf16' if bf16 else 'float32'})",
                 **summarize_clicks(curves, **summary), "train_cpu_s": history[-1]["cpu_s"],
                 "eval_cpu_s": time.process_time() - t, "final_loss": history[-1]["loss"]})
    total = time.process_time() - start
    for row in rows:
        row.update(dataset=dataset, seed=seed, run_cpu_s=total, train_objects=len(train_images),
                   val_objects=len(val_images))
    print(f"{dataset} seed {seed}: run {total:.0f} CPU s; " + "; ".join(
        f"{r['method']}: IoU@1 {r['IoU@1']:.3f} NoC@85 {r['NoC@85']:.2f}" for r in rows), flush=True)
    return rows


def _cell(row: dict, key: str) -> str:
    value = row.get(key)
    if value is None:
        return "-"
    return f"{value:.0f}" if key.startswith("NoF") else f"{value:.2f}" if key.startswith("NoC") else f"{value:.3f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI: 40 steps, 8 val images, 5 clicks, synthetic only")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="synthetic seeds (default 0 1 2)")
    parser.add_argument("--steps", type=int, default=350, help="training steps (default 350)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--clicks", type=int, default=20, help="clicks per object (default 20, the NoC cap)")
    parser.add_argument("--bf16", action="store_true", help="also train seed 0 (synthetic) under bf16 autocast")
    parser.add_argument("--no-isbi", action="store_true", help="skip the ISBI 2012 cells")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    jobs = [("synthetic", s, False) for s in (args.seeds[:1] if args.quick else args.seeds)]
    if args.bf16 and not args.quick:
        jobs.append(("synthetic", args.seeds[0], True))
    if not (args.quick or args.no_isbi):
        try:
            isbi_objects("val", 1)
            jobs.append(("isbi", 0, False))
        except FileNotFoundError as error:
            print(f"ISBI 2012 skipped: {error}")
    rows = [row for dataset, seed, bf16 in jobs for row in run(dataset, seed, args, bf16)]
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    means = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        for method in dict.fromkeys(r["method"] for r in rows if r["dataset"] == dataset):
            group = [r for r in rows if r["dataset"] == dataset and r["method"] == method]
            if len(group) > 1:
                mean = {"dataset": dataset, "method": method, "seed": "mean ± std"}
                for key in COLUMNS + ("train_cpu_s", "run_cpu_s"):
                    if key in group[0]:
                        values = [g[key] for g in group]
                        mean[key], mean[key + "_std"] = statistics.mean(values), statistics.stdev(values)
                means.append(mean)
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
               f"threads {torch.get_num_threads()}, load average at the end {os.getloadavg()[0]:.1f}")
    clicks = 5 if args.quick else args.clicks
    lines = [f"# Interactive segmentation: nano-SAM from scratch vs flood fill, {dt.date.today()}", "", machine, "",
             f"`python benchmarks/sam_clicks.py{' --quick' if args.quick else ''}"
             f"{' --bf16' if args.bf16 else ''}`: one object per prompt, deterministic clicker (largest error region, "
             f"innermost pixel), {clicks} clicks; NoC@t = first click with IoU >= t, {clicks} if never (NoF: how many "
             "never); CPU s: `time.process_time()` of the training and of the whole run (data, baseline, both "
             f"evaluations, training), one thread; peak RSS of the process: {peak_mib:.0f} MiB.", "",
             "| data | method | seed | objects | " + " | ".join(COLUMNS) + " | train CPU s | run CPU s |",
             "|---" * (len(COLUMNS) + 6) + "|"]
    for r in rows + means:
        cells = []
        for key in COLUMNS:
            cell = _cell(r, key)
            if key + "_std" in r:
                cell += " ± " + _cell({key: r[key + "_std"]}, key)
            cells.append(cell)
        lines.append(f"| {r['dataset']} | {r['method']} | {r['seed']} | {r.get('val_objects', '')} | "
                     + " | ".join(cells) + f" | {r.get('train_cpu_s', 0):.0f} | {r.get('run_cpu_s', 0):.0f} |")
    table = "\n".join(lines)
    print("\n" + table)
    out = args.out if args.out is not None else (None if args.quick else Path(__file__).parent / "results")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        stem = out / f"sam_clicks_{dt.date.today()}"
        stem.with_suffix(".md").write_text(table + "\n")
        stem.with_suffix(".json").write_text(json.dumps({"machine": machine, "args": vars(args) | {"out": str(out)},
                                                         "peak_rss_mib": peak_mib, "rows": rows, "means": means},
                                                        indent=1))  # fmt: skip
        print(f"saved {stem}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
