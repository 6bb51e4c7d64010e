"""Validation mIoU against wall-clock seconds: the recipe against the previous defaults, in the same run.

Each run is ``seglab.engine.fit`` on one dataset; every epoch records ``elapsed`` (training + validation
seconds since the start) and ``val_mIoU``. Runs:

- ``synthetic`` (the README's main job, ``python -m seglab train``):
  - baseline: the defaults before the recipe (U-Net-16, crop 64, batch 8, 5 epochs, AdamW 5e-3 poly, fp32 NCHW;
    the results of 2026-12-02 ran it with channels_last on, before this was pinned);
  - recipe: today's ``TrainConfig()`` defaults.
- ``camvid`` (``--dataset camvid``, needs ``$SEGLAB_DATA/camvid``), scored on the full 480x360 val images:
  - baseline: the README's earlier CamVid command (U-Net-16, ``--max-size 240 --crop-size 160``, 5 epochs);
  - recipe: :data:`CAMVID_RECIPE` (the README's CamVid command).

Usage::

    python benchmarks/time_to_miou.py                    # synthetic, about 5 minutes on a 2-core CPU
    python benchmarks/time_to_miou.py --dataset camvid   # about 16 minutes
    python benchmarks/time_to_miou.py --quick            # every path, a few batches (CI)

Prints one table per run (epoch, seconds, val mIoU) and the time each run first reached given mIoU levels;
saves ``benchmarks/results/time_to_miou_<dataset>_<date>.md`` / ``.json`` / ``.png`` (``--quick``: nothing
unless ``--out``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from seglab.engine import TrainConfig, fit  # noqa: E402

#: The defaults of TrainConfig before the recipe (what ``python -m seglab train`` ran; fp32 on the CPU).
BASELINE = dict(model="unet", base_channels=16, crop_size=64, batch_size=8, epochs=5, optimizer="adamw", lr=5e-3,
                lr_schedule="poly", warmup_epochs=0.0, amp="off", channels_last="off")
#: The README's earlier CamVid command, scored the same way as the recipe (full-size val images).
CAMVID_BASELINE = dict(BASELINE, dataset="camvid", max_size=240, crop_size=160, val_full_size=True)
#: The CamVid recipe (the README's command).
CAMVID_RECIPE = dict(model="unet", base_channels=16, dataset="camvid", max_size=240, crop_size=192, val_full_size=True,
                     batch_size=8, epochs=48, lr=3e-3, lr_schedule="cosine", warmup_epochs=1.0, class_weights=True)
LEVELS = (0.3, 0.5, 0.7, 0.8)


def runs_for(dataset: str, root: str | None) -> dict[str, TrainConfig]:
    if dataset == "synthetic":
        return {"baseline (previous defaults)": TrainConfig(**BASELINE), "recipe (TrainConfig defaults)": TrainConfig()}
    return {"baseline (previous CamVid command)": TrainConfig(**CAMVID_BASELINE, data_root=root),
            "recipe (README CamVid command)": TrainConfig(**CAMVID_RECIPE, data_root=root)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["synthetic", "camvid"], default="synthetic")
    parser.add_argument("--quick", action="store_true", help="every path, 2 epochs of 2 batches (CI)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    root = None
    if args.dataset == "camvid":
        base = os.environ.get("SEGLAB_DATA")
        if not base or not (Path(base) / "camvid" / "train").is_dir():
            print("error: --dataset camvid needs $SEGLAB_DATA/camvid (e.g. SEGLAB_DATA=../shared/data)")
            return 2
        root = str(Path(base) / "camvid")

    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for label, config in runs_for(args.dataset, root).items():
            config = replace(config, out=str(Path(scratch) / label.split()[0]), progress=False, verbose=True, device="cpu")
            if args.quick:
                config = replace(config, epochs=2, max_train_batches=2, max_val_batches=1)
            print(f"== {label}: {config.model}, {config.epochs} epochs, amp {config.amp}", flush=True)
            history = fit(config)
            results[label] = {"config": config.to_dict(),
                              "curve": [(r["elapsed"], r["val_mIoU"]) for r in history]}

    lines = [f"# Time to mIoU on {args.dataset}, {dt.date.today()}", "",
             f"{os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, "
             f"load average at the end {os.getloadavg()[0]:.1f}", ""]
    for label, r in results.items():
        lines += [f"## {label}", "", "| epoch | seconds | val mIoU |", "|---|---|---|"]
        lines += [f"| {i + 1} | {t:.0f} | {m:.3f} |" for i, (t, m) in enumerate(r["curve"])]
        reached = []
        for level in LEVELS:
            t = next((t for t, m in r["curve"] if m >= level), None)
            reached.append(f"{level:.0%}: " + (f"{t:.0f} s" if t is not None else "not reached"))
        lines += ["", "first reached " + ", ".join(reached), ""]
    table = "\n".join(lines)
    print("\n" + table)
    out = args.out if args.out is not None else (None if args.quick else Path(__file__).parent / "results")
    if out is not None:
        import matplotlib.pyplot as plt

        out.mkdir(parents=True, exist_ok=True)
        stem = out / f"time_to_miou_{args.dataset}_{dt.date.today()}"
        stem.with_suffix(".md").write_text(table + "\n")
        stem.with_suffix(".json").write_text(json.dumps(results, indent=1))
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, r in results.items():
            ax.plot([t for t, _ in r["curve"]], [m for _, m in r["curve"]], marker="o", label=label)
        ax.set(xlabel="wall-clock seconds (train + val)", ylabel="val mIoU", ylim=(0, 1),
               title=f"time to mIoU, {args.dataset}, {os.cpu_count()}-core CPU")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
        fig.savefig(stem.with_suffix(".png"), dpi=100, bbox_inches="tight")
        print(f"saved {stem}.md, .json and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
