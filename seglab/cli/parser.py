"""The argument parser of ``python -m seglab``: its sub-commands, their flags, and the types argparse checks.

Every flag value that has a range is checked here, by argparse, before any command runs: a bad value
exits with one line ``error: argument --FLAG: needs ..., got '...' (python -m seglab CMD --help lists the
flags)`` and status 2. ``train``'s flags are the fields of ``seglab.engine.TrainConfig`` (``batch_size`` ->
``--batch-size``, booleans as ``--amp`` / ``--no-amp``), so the CLI and the Python API never drift.
"""

from __future__ import annotations

import argparse
import dataclasses
import math

__all__ = ["build_parser", "positive_int", "unit_interval", "names", "json_object"]

_TYPES = {"str": str, "int": int, "float": float}


class _Parser(argparse.ArgumentParser):
    """argparse with seglab's one-line errors: ``error: argument --alpha: needs ...`` and exit status 2."""

    def error(self, message: str):
        message = message.replace("\r", "\\r").replace("\n", "\\n")  # one line, whatever a value held
        self.exit(2, f"error: {message} ({self.prog} --help lists the flags)\n")


# ------------------------------------------------------------------------------------------------
# Types of the flags argparse checks (its message: "argument --FLAG: <what the type says>")
# ------------------------------------------------------------------------------------------------


def positive_int(text: str) -> int:
    """A whole number >= 1 (``--batch-size``, ``--window``, ...)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"needs a whole number >= 1, got {text!r}")
    return value


def unit_interval(text: str) -> float:
    """A finite number in [0, 1] (``--alpha``); nan and inf are refused."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:  # nan fails too
        raise argparse.ArgumentTypeError(f"needs a finite number in [0, 1], e.g. 0.5; got {text!r}")
    return value


def json_object(text: str) -> dict:
    """A JSON object with string keys (``--model-kwargs '{"num_queries": 8}'``)."""
    import json

    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f'needs a JSON object such as {{"num_queries": 8}}; got {text!r}')
    return value


def names(text: str) -> list[str]:
    """Comma-separated non-empty names (``--splits train,val``)."""
    found = [name.strip() for name in text.split(",")]
    if not all(found):
        raise argparse.ArgumentTypeError(f"needs comma-separated names such as train,val; got {text!r}")
    return found


# ------------------------------------------------------------------------------------------------
# Flag groups shared by several commands
# ------------------------------------------------------------------------------------------------


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per ``TrainConfig`` field, with its default (``train``)."""
    from seglab.engine import TrainConfig

    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        annotation = str(f.type).replace(" ", "")
        default = getattr(defaults, f.name)
        if f.name == "model_kwargs":  # a JSON object: --model-kwargs '{"num_queries": 8, "thing_classes": [1, 2, 3]}'
            parser.add_argument(flag, type=json_object, default={}, metavar="JSON",
                                help="other options of --model as a JSON object (seglab.models.model_options), e.g. "
                                     "'{\"num_queries\": 8, \"thing_classes\": [1, 2, 3]}' (default: {})")
            continue
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
    """``--classes`` / ``--classes-file`` (the class names of ``--dataset folder``)."""
    parser.add_argument("--classes", default=None, metavar="A,B,C",
                        help="class names of --dataset folder, comma-separated, in class-index order")
    parser.add_argument("--classes-file", default=None, metavar="FILE",
                        help="class names of --dataset folder, one per line, in class-index order")


def _add_inference_flags(parser: argparse.ArgumentParser) -> None:
    """Test-time inference flags of ``evaluate`` / ``predict`` (``seglab.inference.InferenceOptions``)."""
    parser.add_argument("--tta-scales", default="1", metavar="S,S,...",
                        help="test-time scales, probabilities averaged, e.g. 0.5,0.75,1,1.25,1.5,1.75 (default: 1)")
    parser.add_argument("--tta-flip", action=argparse.BooleanOptionalAction, default=False,
                        help="test-time augmentation: also average over left-right mirrored images")
    parser.add_argument("--window", type=positive_int, default=None, metavar="PX",
                        help="sliding-window inference with square windows of this many pixels (e.g. 512)")
    parser.add_argument("--window-stride", type=positive_int, default=None, metavar="PX",
                        help="pixels between windows, at most --window (default: 2/3 of it, e.g. 341)")
    parser.add_argument("--crf", action=argparse.BooleanOptionalAction, default=False,
                        help="refine the scores with a dense CRF (seglab.crf, method fast)")
    parser.add_argument("--crf-max-size", type=positive_int, default=None, metavar="PX",
                        help="with --crf: run the CRF with the longer side shrunk to at most PX and upsample its "
                             "scores (less memory and time on large photos; default: full size)")


# ------------------------------------------------------------------------------------------------
# The commands
# ------------------------------------------------------------------------------------------------


def _add_evaluate(sub) -> None:
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
    evaluate.add_argument("--batch-size", type=positive_int, default=None,
                          help="images per batch (default: the run's val_batch_size; 1 with --weights)")
    evaluate.add_argument("--max-batches", type=positive_int, default=None,
                          help="evaluate only the first N batches (default: all)")
    evaluate.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    evaluate.add_argument("--overwrite", action="store_true", help="replace the --json file if it exists")
    _add_inference_flags(evaluate)


def _add_predict(sub) -> None:
    predict = sub.add_parser("predict", help="predict class-index palette PNG masks for images (files, folders, globs)")
    predict.add_argument("checkpoint", help="a last.pt / best.pt written by train")
    predict.add_argument("images", nargs="+", help="image files, folders of images, or glob patterns ('photos/*.jpg')")
    predict.add_argument("--out", default="predictions",
                         help="folder for <stem>.png: class-index palette PNGs (VOC style), full input size")
    predict.add_argument("--overlay", action="store_true", help="also write <stem>_overlay.png (colours over the photo)")
    predict.add_argument("--alpha", type=unit_interval, default=0.5,
                         help="overlay opacity of the colours, in [0, 1] (default: 0.5)")
    predict.add_argument("--overwrite", action="store_true", help="replace predictions that already exist")
    predict.add_argument("--batch-size", type=positive_int, default=4,
                         help="images of one size per forward pass (default: 4)")
    predict.add_argument("--max-size", type=positive_int, default=None,
                         help="shrink the longer side to at most this for the model (default: the run's max_size)")
    predict.add_argument("--device", default="auto")
    predict.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="tqdm bar")
    _add_inference_flags(predict)


def _add_export(sub) -> None:
    export = sub.add_parser("export", help="export a checkpoint's model to ONNX and check it with onnxruntime")
    export.add_argument("checkpoint", help="a last.pt / best.pt written by train")
    export.add_argument("--format", default="onnx", help="the export format: onnx (default, the only one)")
    export.add_argument("--out", default=None, help="the .onnx file (default: the checkpoint's path with .onnx)")
    export.add_argument("--input-size", type=positive_int, nargs="+", default=[512, 512], metavar="PX",
                        help="H W (or one size for both) fixed in the graph; the batch size stays free (default: 512 512)")
    export.add_argument("--overwrite", action="store_true", help="replace the .onnx file if it exists")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m seglab {train,evaluate,predict,check-data,download,export}``.

    ``parse_args`` returns a Namespace whose ``command`` names the sub-command; a bad flag or value
    prints one ``error: ...`` line and raises ``SystemExit(2)``.
    """
    parser = _Parser(prog="python -m seglab", description="seglab: semantic segmentation workbook")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (also SEGLAB_DEBUG=1; may be given anywhere)")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model (flags = seglab.engine.TrainConfig fields)")
    _add_config_flags(train)
    _add_class_flags(train)
    _add_evaluate(sub)
    _add_predict(sub)

    check = sub.add_parser("check-data", help="decode and check every image/mask pair of a dataset, once")
    check.add_argument("--dataset", default="synthetic", help="a name from seglab.data.list_datasets()")
    check.add_argument("--data-root", default=None, help="dataset folder (default: $SEGLAB_DATA/<name> or data/<name>)")
    check.add_argument("--splits", type=names, default=["train", "val"], metavar="A,B",
                       help="comma-separated splits (default: train,val)")
    _add_class_flags(check)

    download = sub.add_parser("download", help="download a dataset (VOC 2012, SBD)")
    download.add_argument("dataset", help="dataset name, e.g. voc or sbd")
    download.add_argument("--data-root", default=None, help="where to put it (default: $SEGLAB_DATA or data/)")
    download.add_argument("--from-file", default=None, metavar="FILE",
                          help="voc / sbd: your own copy of the archive (VOCtrainval_11-May-2012.tar, benchmark.tgz), "
                               "used instead of the mirrors: checked by MD5, linked or copied into place, never moved")
    _add_export(sub)
    return parser
