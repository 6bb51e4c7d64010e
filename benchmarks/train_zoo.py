"""Short CPU training run of every model of the zoo on real images; compare with the majority-class baseline.

For each model (small CPU configurations: ResNet-18 backbones, U-Net base 16) this trains a few epochs
with ``seglab.engine.fit`` on CamVid at reduced resolution and prints a table: parameters, first and
last epoch training loss, final validation mIoU (whole images, 255 ignored), wall time. The named
baseline, computed in the same run on the same validation images, is the trivial predictor that labels
every pixel with the most frequent training class: a model that learned anything must beat its mIoU.

    python benchmarks/train_zoo.py --data-root ../shared/data/camvid            # about 10 min on 2 cores
    python benchmarks/train_zoo.py --dataset synthetic --epochs 2               # no files needed

Results are also written to ``benchmarks/results/train_zoo_<date>_<dataset>.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from seglab.engine import TrainConfig, build_loaders, fit, load_model  # noqa: E402
from seglab.metrics import ConfusionMatrix  # noqa: E402

MODELS = [  # (label, TrainConfig changes)
    ("fcn32s-resnet18", {"model": "fcn32s", "backbone": "resnet18"}),
    ("fcn16s-resnet18", {"model": "fcn16s", "backbone": "resnet18"}),
    ("fcn8s-resnet18", {"model": "fcn8s", "backbone": "resnet18"}),
    ("unet-base16", {"model": "unet", "base_channels": 16}),
    ("deeplabv3-resnet18", {"model": "deeplabv3", "backbone": "resnet18"}),
    ("deeplabv3plus-resnet18", {"model": "deeplabv3plus", "backbone": "resnet18"}),
]


def majority_baseline(config: TrainConfig) -> tuple[float, str]:
    """Val mIoU of predicting the most frequent (non-ignored) training class everywhere."""
    train_loader, val_loader = build_loaders(dataclasses.replace(config, device="cpu"))
    dataset = train_loader.dataset
    counts = torch.zeros(dataset.num_classes, dtype=torch.int64)
    for _, mask in (dataset[i] for i in range(len(dataset))):
        valid = mask[mask != config.ignore_index]
        counts += torch.bincount(valid.flatten(), minlength=dataset.num_classes)
    majority = int(counts.argmax())
    cm = ConfusionMatrix(dataset.num_classes, ignore_index=config.ignore_index)
    for _, masks in val_loader:
        cm.update(torch.full_like(masks, majority), masks)
    return cm.compute()["mIoU"], dataset.classes[majority]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="camvid")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-size", type=int, default=160, help="longer image side, pixels")
    parser.add_argument("--crop-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-train-batches", type=int, default=None)
    parser.add_argument("--models", nargs="*", default=[m for m, _ in MODELS])
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    base = TrainConfig(
        dataset=args.dataset, data_root=args.data_root, epochs=args.epochs, max_size=args.max_size,
        crop_size=args.crop_size, batch_size=args.batch_size, max_train_batches=args.max_train_batches,
        device=args.device, progress=False, verbose=False, lr=2e-3, base_channels=None,
    )
    baseline_miou, majority = majority_baseline(base)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, changes in MODELS:
            if label not in args.models:
                continue
            config = dataclasses.replace(base, out=str(Path(tmp) / label), **changes)
            start = time.perf_counter()
            history = fit(config)
            seconds = time.perf_counter() - start
            params = sum(p.numel() for p in load_model(Path(config.out) / "last.pt")[0].parameters())
            rows.append((label, params, history[0]["train_loss"], history[-1]["train_loss"],
                         max(r["val_mIoU"] for r in history), history[-1]["val_mIoU"], seconds))
            print(f"{label}: loss {rows[-1][2]:.3f} -> {rows[-1][3]:.3f}, val mIoU {rows[-1][5]:.3f}, {seconds:.0f} s",
                  flush=True)

    header = (f"# train_zoo — {datetime.date.today()} — {args.dataset}, {args.epochs} epochs, longer side "
              f"{args.max_size} px, crop {args.crop_size}, batch {args.batch_size}\n\n"
              f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
              f"device {args.device}.\n\nBaseline (same val images): predict '{majority}' everywhere -> "
              f"val mIoU {baseline_miou:.4f}\n\n")
    table = ["| model | parameters | train loss epoch 1 | train loss last | best val mIoU | last val mIoU | beats baseline | wall s |",
             "|---|---:|---:|---:|---:|---:|:-:|---:|"]
    for label, params, first, last, best, final, seconds in rows:
        table.append(f"| {label} | {params / 1e6:.2f} M | {first:.3f} | {last:.3f} | {best:.4f} | {final:.4f} | "
                     f"{'yes' if final > baseline_miou else 'NO'} | {seconds:.0f} |")
    text = header + "\n".join(table) + "\n"
    print(text)
    out = Path(__file__).parent / "results" / f"train_zoo_{datetime.date.today()}_{args.dataset}.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
