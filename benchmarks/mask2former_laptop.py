"""Mask2Former from scratch on a laptop: held-out panoptic scores against CPU seconds (issue 19, item 6).

Trains ``Mask2Former`` through seglab's engine (``prepare`` + ``train_steps``, exactly what ``python -m seglab
train --model mask2former`` runs) on the synthetic shapes with **instance targets from connected components**
(``thing_classes``), and scores the held-out ``val`` split at a few checkpoints with
``seglab.models.mask2former.evaluate_panoptic``: mIoU, PQ / SQ / RQ, mask AP. The named baseline "predict
background everywhere" (one stuff segment of class 0 per image, no instances) is scored in the same run.

The budget measure is **CPU seconds** (``time.process_time``, all threads; run with ``OMP_NUM_THREADS=1``), since
the wall clock of a shared machine depends on its other jobs: the run's training plus its final evaluation must fit
300 s of one core. Evaluations at the intermediate checkpoints (the curve) are counted separately.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/mask2former_laptop.py                  # recipe, seed 0, bf16 where native
    OMP_NUM_THREADS=1 python benchmarks/mask2former_laptop.py --seeds 0 1 2
    OMP_NUM_THREADS=1 python benchmarks/mask2former_laptop.py --amp off --channels-last off   # float32
    OMP_NUM_THREADS=1 python benchmarks/mask2former_laptop.py --dataset isbi2012   # needs $SEGLAB_DATA/isbi2012
    python benchmarks/mask2former_laptop.py --quick                            # every path in seconds (CI)

Prints one table per run and saves ``benchmarks/results/mask2former_laptop_<dataset>_<date>.md`` / ``.json``
(``--quick``: nothing unless ``--out``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from seglab.data.panoptic import (  # noqa: E402
    ISBI2012Panoptic, PanopticTarget, SyntheticPanopticShapes, compact_panoptic, panoptic_to_instances,
)
from seglab.engine import TrainConfig, prepare, train_steps  # noqa: E402
from seglab.metrics.confusion import ConfusionMatrix  # noqa: E402
from seglab.metrics.instance_ap import InstanceAP  # noqa: E402
from seglab.metrics.panoptic import PanopticQuality  # noqa: E402
from seglab.models.mask2former.evaluate import evaluate_panoptic  # noqa: E402
from seglab.transforms import eval_transform  # noqa: E402

#: The laptop recipe on the synthetic shapes (things 1-3: circle, square, triangle; stuff 0: background).
SYNTHETIC_RECIPE = dict(
    model="mask2former", dataset="synthetic", crop_size=64, batch_size=8, lr=1e-3, weight_decay=1e-4,
    lr_schedule="cosine", warmup_epochs=0.1, epochs=1,
    model_kwargs=dict(num_queries=8, hidden_dim=64, dec_layers=3, enc_layers=1, num_points=None,
                      thing_classes=[1, 2, 3]),
)
SYNTHETIC_STEPS = 1200
#: The same recipe on ISBI 2012 crops (thing 1: cell interiors as 4-connected components; stuff 0: membrane).
ISBI_RECIPE = dict(SYNTHETIC_RECIPE, dataset="isbi2012", crop_size=96, scale_min=1.0, scale_max=1.0,
                   model_kwargs=dict(SYNTHETIC_RECIPE["model_kwargs"], num_queries=32, thing_classes=[1]))
ISBI_STEPS = 400
COLUMNS = ("mIoU", "PQ", "SQ", "RQ", "PQ_things", "PQ_stuff", "AP", "AP50")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def val_items(dataset: str, tile: int, num_images: int | None) -> tuple[list, frozenset, frozenset]:
    """Held-out items ``(image (3, S, S), PanopticTarget)``: the synthetic val split, or ISBI val cut into tiles."""
    transform = eval_transform(pad_multiple=None, ignore_index=0)
    if dataset == "synthetic":
        data = SyntheticPanopticShapes("val", num_images=num_images or 128, transform=transform)
        return [data[i] for i in range(len(data))], data.things, data.stuffs
    data = ISBI2012Panoptic("val")
    items = []
    for index in range(len(data)):
        image, target = data.read(index)
        out = transform(image=image, mask=target.segments.numpy())
        full, segments = out["image"], torch.as_tensor(out["mask"])
        height, width = segments.shape
        for y in range(0, height - tile + 1, tile):
            for x in range(0, width - tile + 1, tile):
                crop = compact_panoptic(PanopticTarget(segments[y:y + tile, x:x + tile], target.labels))
                items.append((full[:, y:y + tile, x:x + tile], crop))
    return items[:num_images] if num_images else items, data.things, data.stuffs


def background_baseline(items: list, things: frozenset, stuffs: frozenset) -> dict[str, float]:
    """Scores of "predict background everywhere": class 0 on every pixel, one stuff segment, no instances."""
    num_classes = max(things | stuffs) + 1
    confusion, quality, ap = ConfusionMatrix(num_classes), PanopticQuality(things=things, stuffs=stuffs), InstanceAP()
    for _, target in items:
        segments, labels = target
        semantic = torch.cat([torch.tensor([255]), labels])[segments]
        confusion.update(torch.zeros_like(semantic)[None], semantic[None])
        quality.update([PanopticTarget(torch.ones_like(segments), torch.tensor([0]))], [target])
        empty = {"masks": torch.zeros(0, *segments.shape, dtype=torch.bool), "scores": torch.zeros(0),
                 "labels": torch.zeros(0, dtype=torch.int64)}
        ap.update([empty], [panoptic_to_instances(target, things=things)])
    pq, result = quality.compute(), ap.compute()
    return {"mIoU": float(confusion.compute()["mIoU"]), "PQ": pq.pq, "SQ": pq.sq, "RQ": pq.rq,
            "PQ_things": pq.pq_things, "PQ_stuff": pq.pq_stuff, "AP": result.ap, "AP50": result.ap50}


def run(config: TrainConfig, steps: int, checkpoints: list[int], items: list, things, stuffs) -> dict:
    """Train ``steps`` optimizer steps, scoring ``items`` after each of ``checkpoints`` (the last = ``steps``)."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    state = prepare(config, total_steps=steps)
    curve, train_cpu, eval_cpu, done = [], 0.0, 0.0, 0
    train_cpu += time.process_time() - cpu0
    for target in checkpoints:
        start = time.process_time()
        result = train_steps(state, target - done)
        train_cpu += time.process_time() - start
        done = target
        start = time.process_time()
        scores = evaluate_panoptic(state.model, items, things=things, stuffs=stuffs, batch_size=32,
                                   amp_dtype=state.amp_dtype)
        eval_seconds = time.process_time() - start
        eval_cpu += eval_seconds
        curve.append(dict(scores, step=done, loss=float(sum(result["losses"][-20:]) / len(result["losses"][-20:])),
                          train_cpu_s=train_cpu, eval_cpu_s=eval_seconds))
        print(f"  step {done:4d}  loss {curve[-1]['loss']:.3f}  " + "  ".join(
            f"{k} {scores[k]:.3f}" for k in COLUMNS) + f"  train CPU {train_cpu:.0f} s", flush=True)
    final_eval = curve[-1]["eval_cpu_s"]
    precision = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[state.amp_dtype]
    return {"config": config.to_dict(), "precision": precision, "channels_last": state.channels_last,
            "curve": curve, "final": curve[-1], "train_cpu_s": train_cpu, "budget_cpu_s": train_cpu + final_eval,
            "all_cpu_s": train_cpu + eval_cpu, "wall_s": time.perf_counter() - wall0, "peak_rss_mib": peak_rss_mib()}


def table(label: str, r: dict) -> list[str]:
    lines = [f"## {label}", "", f"{r['precision']}, channels_last {r['channels_last']}; CPU s: training "
             f"{r['train_cpu_s']:.0f} + final evaluation {r['final']['eval_cpu_s']:.0f} = **{r['budget_cpu_s']:.0f}** "
             f"(with the curve's evaluations {r['all_cpu_s']:.0f}); wall {r['wall_s']:.0f} s; peak RSS "
             f"{r['peak_rss_mib']:.0f} MiB", "",
             "| step | train CPU s | loss | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 3) + "|"]
    for point in r["curve"]:
        lines.append(f"| {point['step']} | {point['train_cpu_s']:.0f} | {point['loss']:.3f} | "
                     + " | ".join(f"{point[k]:.3f}" for k in COLUMNS) + " |")
    return lines + [""]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["synthetic", "isbi2012"], default="synthetic")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the recipe's)")
    parser.add_argument("--checkpoints", type=int, default=5, help="evaluations along the run (the last at the end)")
    parser.add_argument("--amp", choices=["auto", "on", "off"], default="auto")
    parser.add_argument("--channels-last", choices=["auto", "on", "off"], default="auto")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="override recipe fields (e.g. lr=2e-3 batch_size=4; model options as "
                             "model.num_queries=16), values as Python literals")
    parser.add_argument("--val-images", type=int, default=None, help="score only this many val images / tiles")
    parser.add_argument("--quick", action="store_true", help="every path: 2 steps, 8 val images (CI, seconds)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    import ast

    recipe = dict(SYNTHETIC_RECIPE if args.dataset == "synthetic" else ISBI_RECIPE)
    recipe["model_kwargs"] = dict(recipe["model_kwargs"])
    for item in args.set:
        key, _, text = item.partition("=")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text  # a plain string, e.g. lr_schedule=poly
        if key.startswith("model."):
            recipe["model_kwargs"][key[len("model."):]] = value
        else:
            recipe[key] = value
    steps = args.steps or (SYNTHETIC_STEPS if args.dataset == "synthetic" else ISBI_STEPS)
    val_images = args.val_images
    if args.quick:
        steps, val_images = 2, 8
    count = max(1, min(args.checkpoints, steps))
    checkpoints = sorted({round(steps * (i + 1) / count) for i in range(count)})
    tile = recipe["crop_size"]
    items, things, stuffs = val_items(args.dataset, tile, val_images)
    baseline = background_baseline(items, things, stuffs)
    print(f"{len(items)} held-out {args.dataset} images of {tile}x{tile}; baseline (background everywhere): "
          + "  ".join(f"{k} {baseline[k]:.3f}" for k in COLUMNS), flush=True)

    results = {}
    for seed in args.seeds:
        config = TrainConfig(**recipe, seed=seed, amp=args.amp, channels_last=args.channels_last, device="cpu",
                             num_workers=0, progress=False, verbose=False, out="runs/mask2former_laptop")
        print(f"== seed {seed}: {steps} steps of batch {config.batch_size}, {config.model_kwargs}", flush=True)
        results[f"seed {seed}"] = run(config, steps, checkpoints, items, things, stuffs)

    lines = [f"# Mask2Former laptop recipe on {args.dataset}, {dt.date.today()}", "",
             f"{os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} thread(s), load average "
             f"at the end {os.getloadavg()[0]:.1f}; {len(items)} held-out images of {tile}x{tile}; {steps} steps; "
             f"recipe {json.dumps(recipe)}", "",
             "Baseline, predict background everywhere: " + ", ".join(f"{k} {baseline[k]:.3f}" for k in COLUMNS), ""]
    for label, r in results.items():
        lines += table(label, r)
    if len(results) > 1:
        finals = [r["final"] for r in results.values()]
        lines += ["Final, mean over seeds: " + ", ".join(
            f"{k} {sum(f[k] for f in finals) / len(finals):.3f} (min {min(f[k] for f in finals):.3f})"
            for k in ("mIoU", "PQ", "SQ", "RQ", "AP")), ""]
    text = "\n".join(lines)
    print("\n" + text)
    out = args.out if args.out is not None else (None if args.quick else Path(__file__).parent / "results")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        suffix = ("" if args.amp == "auto" else f"_amp-{args.amp}") + (
            "" if args.seeds == [0] else "_seeds-" + "-".join(map(str, args.seeds)))
        stem = out / f"mask2former_laptop_{args.dataset}{suffix}_{dt.date.today()}"
        stem.with_suffix(".md").write_text(text + "\n")
        stem.with_suffix(".json").write_text(json.dumps({"baseline": baseline, "steps": steps, "recipe": recipe,
                                                         "runs": results}, indent=1, default=str))
        print(f"saved {stem}.md / .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
