"""``predict_files``: read each image, predict its classes at full size, write its PNG(s) atomically.

The work behind ``python -m seglab predict CKPT INPUT... --out DIR``: the plan first (``plan_outputs``: every
destination checked before the first image is read), then batches of images read with
``seglab.data.read_image``, predicted with ``predict_batch``, and written through ``seglab.files.atomic_path``
(a temp file replaced atomically, never over an input or the checkpoint, never through a symbolic link).
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn
from PIL import Image

from seglab.files import atomic_path
from seglab.predict.arrays import predict_batch
from seglab.predict.pictures import check_alpha, index_png, overlay_image
from seglab.predict.plan import PredictionPlan, collect_inputs, plan_outputs

__all__ = ["predict_files"]


def _frame_count(path: Path) -> int:
    """How many frames (animated GIF / PNG / WebP) or pages (TIFF) the image file holds; 1 if unreadable."""
    try:
        with Image.open(path) as image:
            return int(getattr(image, "n_frames", 1))
    except Exception:  # noqa: BLE001 -- read_image names a bad file with a clear error
        return 1


def predict_files(
    model: nn.Module,
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    colors: Sequence[Sequence[int]],
    *,
    max_size: int | None = None,
    pad_multiple: int = 32,
    device: torch.device | str | None = None,
    batch_size: int = 4,
    overlay: bool = False,
    alpha: float = 0.5,
    overwrite: bool = False,
    progress: bool = True,
    log=print,
    inference: dict | None = None,
    protected: Sequence[str | os.PathLike] = (),
) -> PredictionPlan:
    """Predict every image of ``inputs`` (files, folders, globs) and write its mask (and overlay) under ``out``.

    All output paths are planned and checked first (``plan_outputs``); images are then read
    ``batch_size`` at a time, predicted at full size (``predict_batch``) and written as class-index
    palette PNGs (``index_png``), with a tqdm bar. Each file goes through ``seglab.files.atomic_path``:
    written atomically, never over an input or ``protected`` (pass the checkpoint), never through a
    symbolic link. An animated image (GIF, APNG, WebP) or a multi-page TIFF is predicted from its first
    frame, and a note says so.

    Returns:
        The ``PredictionPlan`` (what was written where).

    Raises:
        ValueError: ``batch_size < 1``, or ``alpha`` not a finite number in [0, 1] (checked first).
        FileNotFoundError: an input missing (``collect_inputs``). FileExistsError / NotADirectoryError /
            PermissionError: see ``plan_outputs``. seglab.data.BadImageError (a ValueError): an input is not a
            readable image (the message names it); the predictions before it are kept. OSError naming the
            file: the disk is full.
    """
    from tqdm.auto import tqdm

    from seglab.data import read_image

    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size (--batch-size) must be an integer >= 1, got {batch_size!r}")
    alpha = check_alpha(alpha)
    plan = plan_outputs(collect_inputs(inputs), out, overlay=overlay, overwrite=overwrite, protected=protected)
    for note in plan.notes:
        log(note)
    keep = [*plan.inputs, *protected]

    def save(image: Image.Image, path: Path) -> None:
        with atomic_path(path, overwrite=overwrite, inputs=keep, what="the prediction") as tmp:
            image.save(tmp, format="PNG")

    Path(out).mkdir(parents=True, exist_ok=True)
    with tqdm(total=len(plan.inputs), desc="predict", unit=" images", disable=not progress or len(plan.inputs) < 2) as bar:
        for start in range(0, len(plan.inputs), batch_size):
            index = range(start, min(start + batch_size, len(plan.inputs)))
            for i in index:
                frames = _frame_count(plan.inputs[i])
                if frames > 1:
                    log(f"note: {plan.inputs[i]} holds {frames} frames (animated or multi-page); predicting its "
                        "first frame only")  # fmt: skip
            images = [read_image(plan.inputs[i]) for i in index]
            preds = predict_batch(model, images, max_size=max_size, pad_multiple=pad_multiple, device=device,
                                  batch_size=batch_size, inference=inference)  # fmt: skip
            for i, image, pred in zip(index, images, preds):
                save(index_png(pred, colors), plan.masks[i])
                if plan.overlays[i] is not None:
                    save(overlay_image(image, pred, colors, alpha), plan.overlays[i])
            bar.update(len(index))
    return plan
