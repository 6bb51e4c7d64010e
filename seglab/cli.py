"""Command line: ``python -m seglab {train,evaluate,predict,check-data,download,export}``.

``train`` is a thin wrapper over :class:`seglab.engine.TrainConfig`: every field is a flag of the
same name (``batch_size`` → ``--batch-size``; booleans as ``--amp`` / ``--no-amp``), so the CLI and
the Python API never drift. With no flags it trains a small U-Net on the synthetic shapes on a CPU
in two to three minutes on a 2-core CPU.

Examples::

    python -m seglab train
    python -m seglab train --dataset camvid --data-root ../shared/data/camvid --max-size 240 --crop-size 160
    python -m seglab train --out runs/default --resume
    torchrun --nproc_per_node=4 -m seglab train --batch-size 4   # --batch-size is per process: global batch 16
    python -m seglab evaluate runs/default/best.pt
    python -m seglab evaluate --weights COCO_WITH_VOC_LABELS_V1 --model deeplabv3 --backbone resnet50 --dataset voc
    python -m seglab predict runs/default/best.pt photo1.jpg photo2.jpg --out predictions/
    python -m seglab predict runs/camvid/best.pt ../shared/data/camvid/val --out pred/ --overlay
    python -m seglab check-data --dataset folder --data-root mydata --classes background,road,car
    python -m seglab download voc --data-root data/
    python -m seglab export runs/default/best.pt --format onnx --out model.onnx --input-size 512 512

A failure prints one line ``error: ...`` saying what was wrong and how to fix it, and exits with 2;
``--debug`` (or ``SEGLAB_DEBUG=1``) shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
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
        if annotation == "dict":  # dataset_kwargs: from --classes / --classes-file (config_from_args)
            continue
        if annotation == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                                help=f"(default: {default})")
            continue
        base = annotation.split("|")[0]
        if base not in _TYPES:
            raise TypeError(f"TrainConfig.{f.name} has a type the CLI cannot map: {f.type}")
        parser.add_argument(flag, type=_TYPES[base], default=default, metavar=base.upper(),
                            help=f"(default: {default})")


def _add_class_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--classes", default=None, metavar="A,B,C",
                        help="class names of --dataset folder, comma-separated, in class-index order")
    parser.add_argument("--classes-file", default=None, metavar="FILE",
                        help="class names of --dataset folder, one per line, in class-index order")


def _classes_from_args(args) -> list[str] | None:
    """The class names of ``--classes`` / ``--classes-file`` (None if neither is given)."""
    if args.classes is not None and args.classes_file is not None:
        raise ValueError("give --classes or --classes-file, not both")
    if args.classes is not None:
        names = [name.strip() for name in args.classes.split(",")]
    elif args.classes_file is not None:
        path = Path(args.classes_file)
        if not path.is_file():
            raise FileNotFoundError(f"--classes-file {path} not found: give a text file with one class name per line")
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    else:
        return None
    if not names or any(not name for name in names):
        raise ValueError(f"--classes needs non-empty names such as background,road,car; got {names}")
    if len(set(names)) != len(names):
        raise ValueError(f"--classes holds a name twice: {names}")
    return names


def _add_inference_flags(parser: argparse.ArgumentParser) -> None:
    """Test-time inference flags of ``evaluate`` / ``predict`` (default: the run's TrainConfig fields)."""
    parser.add_argument("--tta-scales", default=None, metavar="S,S,...",
                        help="test-time scales, probabilities averaged, e.g. 0.5,0.75,1,1.25,1.5,1.75")
    parser.add_argument("--tta-flip", action=argparse.BooleanOptionalAction, default=None,
                        help="test-time augmentation: also average over left-right mirrored images")
    parser.add_argument("--window", type=int, default=None, metavar="PX",
                        help="sliding-window inference with square windows of this many pixels (e.g. 512)")
    parser.add_argument("--window-stride", type=int, default=None, metavar="PX",
                        help="pixels between windows, at most --window (default: 2/3 of it, e.g. 341)")
    parser.add_argument("--crf", action=argparse.BooleanOptionalAction, default=None,
                        help="refine the scores with a dense CRF (seglab.crf, method fast)")


def _inference_changes(args) -> dict:
    """The TrainConfig fields given by the inference flags (only those on the command line)."""
    names = ("tta_scales", "tta_flip", "window", "window_stride", "crf")
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m seglab", description="seglab: semantic segmentation workbook")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (also SEGLAB_DEBUG=1; may be given anywhere)")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model (flags = seglab.engine.TrainConfig fields)")
    _add_config_flags(train)
    _add_class_flags(train)

    evaluate = sub.add_parser("evaluate", help="evaluate a checkpoint (or torchvision's pretrained weights) on a split")
    evaluate.add_argument("checkpoint", nargs="?", default=None, help="a last.pt / best.pt written by train")
    evaluate.add_argument("--weights", default=None,
                          help="instead of a checkpoint: torchvision's whole-model weights, e.g. COCO_WITH_VOC_LABELS_V1 "
                               "(downloaded into the torch hub cache; see seglab.models.pretrained)")
    evaluate.add_argument("--model", default="deeplabv3", help="with --weights: deeplabv3, fcn_dilated or lraspp")
    evaluate.add_argument("--backbone", default=None, help="with --weights: e.g. resnet50 (default: the model's)")
    evaluate.add_argument("--dataset", default="voc", help="with --weights: a dataset with the 21 VOC classes")
    evaluate.add_argument("--split", default=None, help="split to evaluate (default: the run's val split)")
    evaluate.add_argument("--data-root", default=None, help="dataset folder (default: the run's)")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--batch-size", type=int, default=None)
    evaluate.add_argument("--max-batches", type=int, default=None)
    evaluate.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    _add_inference_flags(evaluate)

    predict = sub.add_parser("predict", help="predict class-index palette PNG masks for images (files, folders, globs)")
    predict.add_argument("checkpoint", help="a last.pt / best.pt written by train")
    predict.add_argument("images", nargs="+", help="image files, folders of images, or glob patterns ('photos/*.jpg')")
    predict.add_argument("--out", default="predictions",
                         help="folder for <stem>.png: class-index palette PNGs (VOC style), full input size")
    predict.add_argument("--overlay", action="store_true", help="also write <stem>_overlay.png (colours over the photo)")
    predict.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the colours (default: 0.5)")
    predict.add_argument("--overwrite", action="store_true", help="replace predictions that already exist")
    predict.add_argument("--batch-size", type=int, default=4, help="images of one size per forward pass (default: 4)")
    predict.add_argument("--max-size", type=int, default=None,
                         help="shrink the longer side to at most this for the model (default: the run's max_size)")
    predict.add_argument("--device", default="auto")
    predict.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="tqdm bar")
    _add_inference_flags(predict)

    check = sub.add_parser("check-data", help="decode and check every image/mask pair of a dataset, once")
    check.add_argument("--dataset", default="synthetic", help="a name from seglab.data.list_datasets()")
    check.add_argument("--data-root", default=None, help="dataset folder (default: $SEGLAB_DATA/<name> or data/<name>)")
    check.add_argument("--splits", default="train,val", help="comma-separated splits (default: train,val)")
    _add_class_flags(check)

    download = sub.add_parser("download", help="download a dataset (VOC 2012, SBD)")
    download.add_argument("dataset", help="dataset name, e.g. voc or sbd")
    download.add_argument("--data-root", default=None, help="where to put it (default: $SEGLAB_DATA or data/)")

    export = sub.add_parser("export", help="export a checkpoint's model to ONNX and check it with onnxruntime")
    export.add_argument("checkpoint", help="a last.pt / best.pt written by train")
    export.add_argument("--format", default="onnx", help="the export format: onnx (default, the only one)")
    export.add_argument("--out", default=None, help="the .onnx file (default: the checkpoint's path with .onnx)")
    export.add_argument("--input-size", type=int, nargs="+", default=[512, 512], metavar="PX",
                        help="H W (or one size for both) fixed in the graph; the batch size stays free (default: 512 512)")
    export.add_argument("--overwrite", action="store_true", help="replace the .onnx file if it exists")
    return parser


def config_from_args(args: argparse.Namespace):
    """``TrainConfig`` from parsed ``train`` arguments."""
    from seglab.engine import TrainConfig

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    classes = _classes_from_args(args) if hasattr(args, "classes") else None
    if classes is not None:
        if args.dataset != "folder":
            raise ValueError(f"--classes / --classes-file name the classes of --dataset folder; {args.dataset!r} "
                             "has its own: drop them")  # fmt: skip
        values["dataset_kwargs"] = {"classes": classes}
    elif args.dataset == "folder":
        raise ValueError("--dataset folder needs its class names: --classes background,road,car (in class-index "
                         "order) or --classes-file classes.txt (one per line)")  # fmt: skip
    return TrainConfig(**values)


def _cmd_train(args) -> int:
    from seglab.engine import fit

    config = config_from_args(args)
    _check_writable_folder(Path(config.out), "--out")
    history = fit(config)
    if history and os.environ.get("RANK", "0") == "0":  # under torchrun: rank 0 only
        best = max(history, key=lambda r: r["val_mIoU"])
        print(f"best val mIoU {best['val_mIoU']:.4f} at epoch {best['epoch']}; outputs in {config.out}/")
    return 0


def _check_writable_folder(folder: Path, flag: str) -> None:
    """Fail before the work if ``folder`` (or a parent) exists as a file."""
    for path in (folder, *folder.parents):
        if path.exists():
            if not path.is_dir():
                raise NotADirectoryError(f"{flag} {folder}: {path} is a file, not a folder; pass a folder path")
            return


def _check_json_target(path: Path) -> None:
    """Fail before the evaluation if the ``--json`` file cannot be written."""
    if path.is_dir():
        raise IsADirectoryError(f"--json {path} is a folder; give a file path such as {path / 'metrics.json'}")
    _check_writable_folder(path.parent, "--json")


def _evaluate_pretrained(args, device) -> int:
    """``evaluate --weights NAME``: torchvision's pretrained model on whole images of ``--dataset``/``--split``."""
    import functools

    from torch.utils.data import DataLoader

    from seglab.data import build_dataset, pad_collate
    from seglab.engine import TrainConfig, evaluate
    from seglab.models import PRETRAINED, build_model
    from seglab.models.pretrained import published_metrics
    from seglab.transforms import eval_transform

    if args.checkpoint:
        raise ValueError("give a checkpoint or --weights, not both")
    inference = TrainConfig(**_inference_changes(args)).inference_options()  # validated in one place
    dataset = build_dataset(args.dataset, args.split or "val", root=args.data_root, transform=eval_transform())
    model = build_model(args.model, dataset.num_classes, backbone=args.backbone, weights=args.weights)
    backbone = args.backbone or next(b for m, b in PRETRAINED if m == args.model)
    for source, figures in published_metrics(args.model, backbone, args.weights).items():
        print(f"torchvision's published figures for these weights ({source}, not VOC val; not measured by seglab): "
              + ", ".join(f"{k} {v}" for k, v in figures.items()))
    loader = DataLoader(dataset, batch_size=args.batch_size or 1, collate_fn=functools.partial(pad_collate))
    result = evaluate(model.to(device), loader, dataset.num_classes, device=device, max_batches=args.max_batches,
                      inference=inference)  # fmt: skip
    print(f"{args.model}/{backbone} weights={args.weights} on {args.dataset}/{dataset.split} ({len(dataset)} images, "
          f"{dataset.root}): mIoU {result['mIoU']:.4f}  pixel accuracy {result['pixel_accuracy']:.4f}  "
          f"mean class accuracy {result['mean_class_accuracy']:.4f}")
    for name, iou in zip(dataset.classes, result["iou_per_class"]):
        print(f"  {name:<16} IoU {iou:.4f}")
    if args.json:
        payload = {k: v for k, v in result.items() if k != "confusion_matrix"}
        payload["confusion_matrix"] = result["confusion_matrix"].tolist()
        payload["classes"] = list(dataset.classes)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(payload, indent=1))
    return 0


def _cmd_evaluate(args) -> int:
    from seglab.engine import build_loaders, evaluate, load_model, resolve_device

    if args.json:
        _check_json_target(Path(args.json))
    device = resolve_device(args.device)
    if args.weights:
        return _evaluate_pretrained(args, device)
    if not args.checkpoint:
        raise ValueError("evaluate needs a checkpoint (runs/<name>/best.pt) or --weights NAME (torchvision's weights)")
    model, config, state = load_model(args.checkpoint, map_location=device)
    changes = {"device": args.device}
    if args.split:
        changes["val_split"] = args.split
    if args.data_root:
        changes["data_root"] = args.data_root
    if args.batch_size:
        changes["val_batch_size"] = args.batch_size
    config = dataclasses.replace(config, **changes, **_inference_changes(args))
    _, loader = build_loaders(config, device)
    result = evaluate(model.to(device), loader, state["num_classes"], device=device,
                      ignore_index=config.ignore_index, max_batches=args.max_batches, pad_multiple=config.pad_multiple,
                      input_max_size=config.max_size if config.val_full_size else None,  # as fit's validation
                      inference=config.inference_options())  # fmt: skip
    classes = state["classes"]
    print(f"{config.model} on {config.dataset}/{config.val_split}: mIoU {result['mIoU']:.4f}  "
          f"pixel accuracy {result['pixel_accuracy']:.4f}  mean class accuracy {result['mean_class_accuracy']:.4f}")
    for name, iou in zip(classes, result["iou_per_class"]):
        print(f"  {name:<16} IoU {iou:.4f}")
    if args.json:
        payload = {k: v for k, v in result.items() if k != "confusion_matrix"}
        payload["confusion_matrix"] = result["confusion_matrix"].tolist()
        payload["classes"] = classes
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(payload, indent=1))
    return 0


def _cmd_predict(args) -> int:
    from seglab.engine import load_model, resolve_device
    from seglab.predict import collect_inputs, plan_outputs, predict_files

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.max_size is not None and args.max_size < 1:
        raise ValueError(f"--max-size must be >= 1 pixel, got {args.max_size}")
    plan_outputs(collect_inputs(args.images), args.out, overlay=args.overlay, overwrite=args.overwrite)  # fail fast
    device = resolve_device(args.device)
    model, config, state = load_model(args.checkpoint, map_location=device)
    model.to(device)
    config = dataclasses.replace(config, **_inference_changes(args))  # validates the inference flags
    max_size = config.max_size if args.max_size is None else args.max_size
    plan = predict_files(
        model, args.images, args.out, state["colors"], max_size=max_size, pad_multiple=config.pad_multiple,
        device=device, batch_size=args.batch_size, overlay=args.overlay, alpha=args.alpha, overwrite=args.overwrite,
        progress=args.progress, inference=config.inference_options(),
    )
    extra = " and colour overlays" if args.overlay else ""
    print(f"wrote {len(plan.masks)} class-index palette PNGs{extra} to {args.out}/ "
          f"(full input size; model input longer side <= {max_size or 'full'})")
    return 0


def _cmd_check_data(args) -> int:
    from seglab.data import build_dataset, check_dataset

    classes = _classes_from_args(args)
    kwargs = {"classes": classes} if classes is not None else {}
    problems = 0
    for split in [s.strip() for s in args.splits.split(",") if s.strip()]:
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


def _cmd_download(args) -> int:
    from seglab.data import download_dataset

    path = download_dataset(args.dataset, args.data_root)
    print(f"{args.dataset} is ready in {path}")
    return 0


def _cmd_export(args) -> int:
    import torch

    from seglab.engine import load_model
    from seglab.export import check_onnx_destination, export_onnx, onnx_max_abs_diff

    if args.format.lower() != "onnx":
        raise ValueError(f"--format {args.format!r} is not supported: the one export format is onnx")
    if len(args.input_size) not in (1, 2):
        raise ValueError(f"--input-size takes H W or one size for both, got {len(args.input_size)} numbers")
    size = tuple(args.input_size) * (3 - len(args.input_size))  # (H, W)
    out = Path(args.out) if args.out else Path(args.checkpoint).with_suffix(".onnx")
    check_onnx_destination(out, overwrite=args.overwrite)  # fail before loading and exporting
    model, config, state = load_model(args.checkpoint, map_location="cpu")
    path = export_onnx(model, out, input_size=size, overwrite=args.overwrite)
    images = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
    diff = onnx_max_abs_diff(model, path, images)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): {config.model}, images (N, 3, {size[0]}, {size[1]}) "
          f"-> logits (N, {state['num_classes']}, {size[0]}, {size[1]}); onnxruntime vs PyTorch on a random input: "
          f"max abs diff {diff:.2e}")
    return 0


def _error_message(error: BaseException) -> str:
    """One line for a failed command: what went wrong and how to fix it."""
    from PIL import Image

    text = str(error).strip() or type(error).__name__
    if isinstance(error, KeyError):
        key = error.args[0] if error.args else "?"
        return (f"a required entry {key!r} is missing (KeyError); a checkpoint or file from another program or "
                "version? Use a last.pt / best.pt written by `python -m seglab train`")
    if "Original Traceback" in text:  # re-raised from a DataLoader worker: its last line is the error
        text = text.splitlines()[-1].strip()
    if isinstance(error, FloatingPointError):
        return text if "--lr" in text else f"{text}: training diverged; lower --lr (e.g. by 10x)"
    if isinstance(error, Image.DecompressionBombError):
        return f"{text}. Downscale the image, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust it"
    if isinstance(error, MemoryError):
        return "out of memory: lower --batch-size, --crop-size or --max-size"
    if isinstance(error, OSError) and error.errno is not None:  # raw from the OS: add what to do
        hints = {IsADirectoryError: "a folder is in the way of a file; give a file path instead",
                 NotADirectoryError: "a file is in the way of a folder; give a folder path (or move the file)",
                 FileExistsError: "remove it or choose another path",
                 PermissionError: "no permission; choose a path you can write to"}
        hint = next((h for kind, h in hints.items() if isinstance(error, kind)), None)
        return f"{text}: {hint}" if hint else text
    if isinstance(error, (ValueError, RuntimeError, OSError, FloatingPointError)):
        return " | ".join(line.strip() for line in text.splitlines() if line.strip())
    return f"{type(error).__name__}: {text} (unexpected: rerun with --debug for the traceback and report it)"


def _debug_requested(argv: list[str] | None) -> bool:
    argv = sys.argv[1:] if argv is None else argv
    return "--debug" in argv or os.environ.get("SEGLAB_DEBUG", "") not in ("", "0")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m seglab`` and the ``seglab`` script. Returns the exit code.

    A failure prints one line ``error: ...`` (what went wrong and how to fix it) to stderr and
    returns 2; ``--debug`` (anywhere on the command line) or ``SEGLAB_DEBUG=1`` shows the full
    traceback instead. Ctrl-C returns 130.
    """
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    debug = _debug_requested(argv)
    argv = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--debug"]
    args = build_parser().parse_args(argv)
    commands = {"train": _cmd_train, "evaluate": _cmd_evaluate, "predict": _cmd_predict, "download": _cmd_download,
                "check-data": _cmd_check_data, "export": _cmd_export}
    try:
        return commands[args.command](args)
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # noqa: BLE001 -- every failure becomes one line; --debug shows the traceback
        if debug:
            raise
        print(f"error: {_error_message(error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
