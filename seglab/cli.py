"""Command line: ``python -m seglab {train,evaluate,predict,download}``.

``train`` is a thin wrapper over :class:`seglab.engine.TrainConfig`: every field is a flag of the
same name (``batch_size`` → ``--batch-size``; booleans as ``--amp`` / ``--no-amp``), so the CLI and
the Python API never drift. With no flags it trains a small U-Net on the synthetic shapes on a CPU
in two to three minutes on a 2-core CPU.

Examples::

    python -m seglab train
    python -m seglab train --dataset camvid --data-root ../shared/data/camvid --max-size 240 --crop-size 160
    python -m seglab train --out runs/default --resume
    python -m seglab evaluate runs/default/best.pt
    python -m seglab predict runs/default/best.pt photo1.jpg photo2.jpg --out predictions/
    python -m seglab download voc --data-root data/
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

__all__ = ["main", "build_parser", "config_from_args"]

_TYPES = {"str": str, "int": int, "float": float}


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    from seglab.engine import TrainConfig

    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        annotation = str(f.type).replace(" ", "")
        default = getattr(defaults, f.name)
        if annotation == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                                help=f"(default: {default})")
            continue
        base = annotation.split("|")[0]
        if base not in _TYPES:
            raise TypeError(f"TrainConfig.{f.name} has a type the CLI cannot map: {f.type}")
        parser.add_argument(flag, type=_TYPES[base], default=default, metavar=base.upper(),
                            help=f"(default: {default})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m seglab", description="seglab: semantic segmentation workbook")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model (flags = seglab.engine.TrainConfig fields)")
    _add_config_flags(train)

    evaluate = sub.add_parser("evaluate", help="evaluate a checkpoint on a split (whole images)")
    evaluate.add_argument("checkpoint", help="a last.pt / best.pt written by train")
    evaluate.add_argument("--split", default=None, help="split to evaluate (default: the run's val split)")
    evaluate.add_argument("--data-root", default=None, help="dataset folder (default: the run's)")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--batch-size", type=int, default=None)
    evaluate.add_argument("--max-batches", type=int, default=None)
    evaluate.add_argument("--json", default=None, help="also write the metrics to this JSON file")

    predict = sub.add_parser("predict", help="predict colour PNG masks for image files")
    predict.add_argument("checkpoint")
    predict.add_argument("images", nargs="+", help="image files (any format PIL reads)")
    predict.add_argument("--out", default="predictions", help="folder for <stem>.png colour masks")
    predict.add_argument("--device", default="auto")

    download = sub.add_parser("download", help="download a dataset (VOC 2012, SBD)")
    download.add_argument("dataset", help="dataset name, e.g. voc or sbd")
    download.add_argument("--data-root", default=None, help="where to put it (default: $SEGLAB_DATA or data/)")
    return parser


def config_from_args(args: argparse.Namespace):
    """``TrainConfig`` from parsed ``train`` arguments."""
    from seglab.engine import TrainConfig

    names = [f.name for f in dataclasses.fields(TrainConfig)]
    return TrainConfig(**{name: getattr(args, name) for name in names})


def _cmd_train(args) -> int:
    from seglab.engine import fit

    config = config_from_args(args)
    history = fit(config)
    if history:
        best = max(history, key=lambda r: r["val_mIoU"])
        print(f"best val mIoU {best['val_mIoU']:.4f} at epoch {best['epoch']}; outputs in {config.out}/")
    return 0


def _cmd_evaluate(args) -> int:
    from seglab.engine import build_loaders, evaluate, load_model, resolve_device

    device = resolve_device(args.device)
    model, config, state = load_model(args.checkpoint, map_location=device)
    changes = {"device": args.device}
    if args.split:
        changes["val_split"] = args.split
    if args.data_root:
        changes["data_root"] = args.data_root
    if args.batch_size:
        changes["val_batch_size"] = args.batch_size
    config = dataclasses.replace(config, **changes)
    _, loader = build_loaders(config, device)
    result = evaluate(model.to(device), loader, state["num_classes"], device=device,
                      ignore_index=config.ignore_index, max_batches=args.max_batches)
    classes = state["classes"]
    print(f"{config.model} on {config.dataset}/{config.val_split}: mIoU {result['mIoU']:.4f}  "
          f"pixel accuracy {result['pixel_accuracy']:.4f}  mean class accuracy {result['mean_class_accuracy']:.4f}")
    for name, iou in zip(classes, result["iou_per_class"]):
        print(f"  {name:<16} IoU {iou:.4f}")
    if args.json:
        payload = {k: v for k, v in result.items() if k != "confusion_matrix"}
        payload["confusion_matrix"] = result["confusion_matrix"].tolist()
        payload["classes"] = classes
        Path(args.json).write_text(json.dumps(payload, indent=1))
    return 0


def _cmd_predict(args) -> int:
    import numpy as np
    import torch
    from PIL import Image

    from seglab.engine import load_model, resolve_device
    from seglab.transforms import eval_transform
    from seglab.viz import colorize

    device = resolve_device(args.device)
    model, config, state = load_model(args.checkpoint, map_location=device)
    model.to(device)
    colors = [tuple(c) for c in state["colors"]]
    transform = eval_transform(pad_multiple=config.pad_multiple, max_size=config.max_size)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in args.images:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no image at {path}")
        image = np.asarray(Image.open(path).convert("RGB"))
        sample = transform(image=image, mask=np.zeros(image.shape[:2], dtype=np.int64))
        h, w = sample["image"].shape[1:]
        with torch.no_grad():
            logits = model(sample["image"].unsqueeze(0).to(device))  # (1, K, H', W')
        pred = logits.argmax(1)[0].cpu().numpy()
        # remove the bottom/right padding, then map back to the original size (nearest: labels stay labels)
        valid_h, valid_w = _unpadded_size(image.shape[:2], config.max_size)
        pred = pred[:valid_h, :valid_w]
        mask = Image.fromarray(colorize(pred, colors)).resize((image.shape[1], image.shape[0]), Image.NEAREST)
        target = out / f"{path.stem}.png"
        mask.save(target)
        print(f"{path} -> {target}  ({w}x{h} input to the model)")
    return 0


def _unpadded_size(size: tuple[int, int], max_size: int | None) -> tuple[int, int]:
    h, w = size
    if max_size is None:
        return h, w
    scale = max_size / max(h, w)
    return round(h * scale), round(w * scale)


def _cmd_download(args) -> int:
    from seglab.data import download_dataset

    path = download_dataset(args.dataset, args.data_root)
    print(f"{args.dataset} is ready in {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m seglab`` and the ``seglab`` script. Returns the exit code."""
    import os

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    args = build_parser().parse_args(argv)
    commands = {"train": _cmd_train, "evaluate": _cmd_evaluate, "predict": _cmd_predict, "download": _cmd_download}
    try:
        return commands[args.command](args)
    except KeyboardInterrupt:
        return 130
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
