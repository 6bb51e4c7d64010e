"""From parsed flags to seglab's own objects: ``TrainConfig``, class names, ``InferenceOptions``.

Each function validates what argparse cannot (combinations of flags, files named by a flag) and raises a
``ValueError`` / ``FileNotFoundError`` whose one-line message names the flag; the commands call them before
any model is loaded or any file is written.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

__all__ = ["config_from_args", "classes_from_args", "inference_options"]


def classes_from_args(args: argparse.Namespace) -> list[str] | None:
    """The class names of ``--classes`` / ``--classes-file`` (None if neither is given).

    Raises:
        ValueError: both flags, an empty or repeated name. FileNotFoundError: ``--classes-file`` missing.
    """
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


def config_from_args(args: argparse.Namespace):
    """``seglab.engine.TrainConfig`` from parsed ``train`` arguments (every field is a flag of the same name).

    Raises:
        ValueError: ``--classes`` with a dataset other than ``folder``, ``--dataset folder`` without class
            names, or a field ``TrainConfig`` refuses (its message names the flag).
    """
    from seglab.engine import TrainConfig

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    if "model_kwargs" in values:
        values["model_kwargs"] = dict(values["model_kwargs"])  # never the parser's shared default
    classes = classes_from_args(args) if hasattr(args, "classes") else None
    if classes is not None:
        if args.dataset != "folder":
            raise ValueError(f"--classes / --classes-file name the classes of --dataset folder; {args.dataset!r} "
                             "has its own: drop them")  # fmt: skip
        values["dataset_kwargs"] = {"classes": classes}
    elif args.dataset == "folder":
        raise ValueError("--dataset folder needs its class names: --classes background,road,car (in class-index "
                         "order) or --classes-file classes.txt (one per line)")  # fmt: skip
    return TrainConfig(**values)


def inference_options(args: argparse.Namespace):
    """The validated ``seglab.inference.InferenceOptions`` of the inference flags (before any model is loaded).

    Raises:
        ValueError: a bad ``--tta-scales`` / ``--window-stride`` / ``--crf-max-size`` (the message names it).
    """
    from seglab.inference import InferenceOptions

    return InferenceOptions(scales=args.tta_scales, flip=args.tta_flip, window=args.window,
                            window_stride=args.window_stride, crf=args.crf, crf_max_size=args.crf_max_size)
