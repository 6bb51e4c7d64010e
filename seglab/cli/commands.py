"""The sub-commands: parsed flags -> seglab library calls -> a short printed summary; each returns its exit code.

Order inside every command: flag values and combinations (``seglab.cli.options``), then every destination
(``seglab.files.check_target`` / ``seglab.predict.plan_outputs`` / ``seglab.export.check_onnx_destination``:
no existing file without ``--overwrite``, never an input, no symbolic link, a writable folder), and only then
the model is loaded and the work runs. Library modules are imported inside the commands, so ``--help`` stays
fast and each command loads only what it needs.

``COMMANDS`` maps each sub-command name to its function.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from seglab.cli.options import classes_from_args, config_from_args, inference_options

__all__ = ["COMMANDS", "train", "evaluate", "predict", "check_data", "download", "export", "metrics_json"]


def train(args: argparse.Namespace) -> int:
    """``train``: ``seglab.engine.fit`` on the ``TrainConfig`` of the flags."""
    from seglab.engine import fit
    from seglab.files import check_folder

    config = config_from_args(args)
    check_folder(config.out, what="--out")
    history = fit(config)
    if history and os.environ.get("RANK", "0") == "0":  # under torchrun: rank 0 only
        best = max(history, key=lambda r: r["val_mIoU"])
        print(f"best val mIoU {best['val_mIoU']:.4f} at epoch {best['epoch']}; outputs in {config.out}/")
    return 0


# ------------------------------------------------------------------------------------------------
# evaluate: a checkpoint, or torchvision's pretrained weights
# ------------------------------------------------------------------------------------------------


def _evaluate_pretrained(args, device, inference: dict) -> tuple[str, dict, list[str]]:
    """``evaluate --weights NAME``: torchvision's pretrained model on whole images of ``--dataset``/``--split``."""
    import functools

    from torch.utils.data import DataLoader

    from seglab.data import build_dataset, pad_collate
    from seglab.engine import evaluate as evaluate_model
    from seglab.models import PRETRAINED, build_model
    from seglab.models.pretrained import published_metrics
    from seglab.transforms import eval_transform

    dataset = build_dataset(args.dataset, args.split or "val", root=args.data_root, transform=eval_transform())
    model = build_model(args.model, dataset.num_classes, backbone=args.backbone, weights=args.weights)
    backbone = args.backbone or next(b for m, b in PRETRAINED if m == args.model)
    for source, figures in published_metrics(args.model, backbone, args.weights).items():
        print(f"torchvision's published figures for these weights ({source}, not VOC val; not measured by seglab): "
              + ", ".join(f"{k} {v}" for k, v in figures.items()))
    loader = DataLoader(dataset, batch_size=args.batch_size or 1, collate_fn=functools.partial(pad_collate))
    result = evaluate_model(model.to(device), loader, dataset.num_classes, device=device,
                            max_batches=args.max_batches, inference=inference)  # fmt: skip
    header = (f"{args.model}/{backbone} weights={args.weights} on {args.dataset}/{dataset.split} ({len(dataset)} "
              f"images, {dataset.root})")
    return header, result, list(dataset.classes)


def _evaluate_checkpoint(args, device, inference: dict) -> tuple[str, dict, list[str]]:
    """``evaluate CKPT``: the run's model on its validation split (or ``--split`` / ``--data-root``)."""
    from seglab.engine import build_loaders, load_model
    from seglab.engine import evaluate as evaluate_model

    model, config, state = load_model(args.checkpoint, map_location=device)
    changes = {"device": args.device}
    if args.split:
        changes["val_split"] = args.split
    if args.data_root:
        changes["data_root"] = args.data_root
    if args.batch_size is not None:
        changes["val_batch_size"] = args.batch_size
    config = dataclasses.replace(config, **changes)
    _, loader = build_loaders(config, device)
    result = evaluate_model(model.to(device), loader, state["num_classes"], device=device,
                            ignore_index=config.ignore_index, max_batches=args.max_batches,
                            pad_multiple=config.pad_multiple,
                            input_max_size=config.max_size if config.val_full_size else None,  # as fit's validation
                            inference=inference)  # fmt: skip
    return f"{config.model} on {config.dataset}/{config.val_split}", result, list(state["classes"])


def metrics_json(result: dict, classes: list[str]) -> str:
    """The ``--json`` report: every metric of ``seglab.engine.evaluate``, the confusion matrix as lists, the classes.

    NaN scores (a class absent from the split) are written as JSON ``null``, so the file is strict JSON.
    """

    def plain(value):
        if isinstance(value, float) and value != value:  # nan
            return None
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    payload = {k: plain(_as_python(v)) for k, v in result.items() if k != "confusion_matrix"}
    payload["confusion_matrix"] = result["confusion_matrix"].tolist()
    payload["classes"] = classes
    return json.dumps(payload, indent=1, allow_nan=False)


def _as_python(value):
    """numpy / torch scalars and arrays as plain Python floats, ints and lists."""
    return value.tolist() if hasattr(value, "tolist") else value


def evaluate(args: argparse.Namespace) -> int:
    """``evaluate``: mIoU, pixel accuracy and per-class IoU of a checkpoint (or ``--weights``); ``--json`` report."""
    from seglab.engine import resolve_device
    from seglab.files import check_target, write_text

    inference = inference_options(args).as_kwargs()  # checked before any loading
    if args.checkpoint and args.weights:
        raise ValueError("give a checkpoint or --weights, not both")
    if not args.checkpoint and not args.weights:
        raise ValueError("evaluate needs a checkpoint (runs/<name>/best.pt) or --weights NAME (torchvision's weights)")
    inputs = [args.checkpoint] if args.checkpoint else []
    if args.json:  # before the work: never the checkpoint, no symlink, no overwrite without --overwrite
        check_target(args.json, overwrite=args.overwrite, inputs=inputs, what="--json")
    device = resolve_device(args.device)
    run = _evaluate_pretrained if args.weights else _evaluate_checkpoint
    header, result, classes = run(args, device, inference)
    print(f"{header}: mIoU {result['mIoU']:.4f}  pixel accuracy {result['pixel_accuracy']:.4f}  "
          f"mean class accuracy {result['mean_class_accuracy']:.4f}")
    for name, iou in zip(classes, result["iou_per_class"]):
        print(f"  {name:<16} IoU {iou:.4f}")
    if args.json:
        path = write_text(args.json, metrics_json(result, classes), overwrite=args.overwrite, inputs=inputs,
                          what="--json")  # fmt: skip
        print(f"wrote the metrics to {path}")
    return 0


# ------------------------------------------------------------------------------------------------
# predict, check-data, download, export
# ------------------------------------------------------------------------------------------------


def predict(args: argparse.Namespace) -> int:
    """``predict``: class-index palette PNGs (and overlays) for files, folders and globs."""
    from seglab.engine import load_model, resolve_device
    from seglab.predict import collect_inputs, plan_outputs, predict_files

    inference = inference_options(args).as_kwargs()
    protected = [args.checkpoint]  # never replaced, like the images
    plan_outputs(collect_inputs(args.images), args.out, overlay=args.overlay, overwrite=args.overwrite,
                 protected=protected)  # fail before loading the model  # fmt: skip
    device = resolve_device(args.device)
    model, config, state = load_model(args.checkpoint, map_location=device)
    model.to(device)
    max_size = config.max_size if args.max_size is None else args.max_size
    plan = predict_files(
        model, args.images, args.out, state["colors"], max_size=max_size, pad_multiple=config.pad_multiple,
        device=device, batch_size=args.batch_size, overlay=args.overlay, alpha=args.alpha, overwrite=args.overwrite,
        progress=args.progress, inference=inference, protected=protected,
    )
    extra = " and colour overlays" if args.overlay else ""
    print(f"wrote {len(plan.masks)} class-index palette PNGs{extra} to {args.out}/ "
          f"(full input size; model input longer side <= {max_size or 'full'})")
    return 0


def check_data(args: argparse.Namespace) -> int:
    """``check-data``: decode every image/mask pair of the splits once; exit 2 if any is bad."""
    from seglab.data import build_dataset, check_dataset

    classes = classes_from_args(args)
    kwargs = {"classes": classes} if classes is not None else {}
    problems = 0
    for split in args.splits:
        dataset = build_dataset(args.dataset, split, root=args.data_root, **kwargs)
        found = check_dataset(dataset, progress=True)
        for message in found:
            print(f"  {message}", file=sys.stderr)
        print(f"{args.dataset}/{split}: {len(dataset)} pairs checked, " + (f"{len(found)} bad" if found else "all good"))
        problems += len(found)
    if problems:
        print(f"error: {problems} bad pairs (listed above): fix or remove those files", file=sys.stderr)
        return 2
    return 0


def download(args: argparse.Namespace) -> int:
    """``download``: ``seglab.data.download_dataset`` (``--from-file``: the user's own copy of the archive)."""
    from seglab.data import download_dataset

    path = download_dataset(args.dataset, args.data_root, from_file=args.from_file)
    print(f"{args.dataset} is ready in {path}")
    return 0


def export(args: argparse.Namespace) -> int:
    """``export``: the checkpoint's model as an ONNX file, checked with onnxruntime before it is put in place."""
    from seglab.engine import load_model
    from seglab.export import check_input_size, check_onnx_destination, export_onnx, require_export_packages

    if args.format.lower() != "onnx":
        raise ValueError(f"--format {args.format!r} is not supported: the one export format is onnx")
    if len(args.input_size) not in (1, 2):
        raise ValueError(f"--input-size takes H W or one size for both, got {len(args.input_size)} numbers")
    size = check_input_size(tuple(args.input_size) * (3 - len(args.input_size)))  # (H, W), bounded
    out = Path(args.out) if args.out else Path(args.checkpoint).with_suffix(".onnx")
    inputs = [args.checkpoint]
    check_onnx_destination(out, overwrite=args.overwrite, inputs=inputs)  # before loading and exporting
    require_export_packages()  # onnx, onnxscript, onnxruntime: before the export, not after it
    model, config, state = load_model(args.checkpoint, map_location="cpu")
    path = export_onnx(model, out, input_size=size, overwrite=args.overwrite, inputs=inputs, log=print)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): {config.model}, images (N, 3, {size[0]}, {size[1]}) "
          f"-> logits (N, {state['num_classes']}, {size[0]}, {size[1]})")
    return 0


COMMANDS = {"train": train, "evaluate": evaluate, "predict": predict, "check-data": check_data,
            "download": download, "export": export}
