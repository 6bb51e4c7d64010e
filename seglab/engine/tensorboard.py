"""TensorBoard logging of a run (``--tensorboard``): the numbers of ``history.csv`` and predictions, per epoch.

``TensorBoardLogger`` writes into ``<out>/tensorboard/`` (``tensorboard --logdir runs/`` shows every run
folder under ``runs/`` as one run), with the epoch (1-based) as the step:

- every per-epoch number of ``history.csv`` (``seglab.engine.history.SCALAR_KEYS``) under the tag of
  :data:`SCALAR_TAGS` (``loss/train``, ``loss/val``, ``val/mIoU``, ``train/lr``, ...);
- the IoU of each class under ``val_iou/<class>`` (a class absent from the validation images and the
  predictions, IoU nan in the history, gets no point that epoch);
- ``val/predictions``: the same first validation images every epoch, one row each: image | ground truth |
  prediction, masks coloured with the dataset's palette (``seglab.viz.colorize``; ignored pixels magenta),
  the prediction made as ``fit`` scores it (``seglab.inference.infer_logits``).

Only rank 0 writes (a logger built on another rank is inert). A resumed run opens a new event file in the
same folder whose first event purges (``purge_step``) whatever an earlier part logged from the resumed
epoch on, so an epoch logged before a kill but missing from ``last.pt`` is not shown twice; if the folder
had no event file yet (TensorBoard turned on at the resume), the earlier epochs' numbers are written from
the history. ``SummaryWriter`` comes from ``torch.utils.tensorboard`` and needs the ``tensorboard``
package: ``pip install -e ".[tensorboard]"`` (:func:`require_tensorboard` says so before training).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = ["TensorBoardLogger", "require_tensorboard", "prediction_grid", "SCALAR_TAGS", "INSTALL_HINT"]

INSTALL_HINT = 'pip install -e ".[tensorboard]" (or pip install "tensorboard>=2.14")'

#: TensorBoard tag of each per-epoch number of ``history.csv`` (``seglab.engine.history.SCALAR_KEYS`` but
#: ``epoch``, the step; ``tests/test_tensorboard.py`` checks that every column has a tag)
SCALAR_TAGS = {
    "train_loss": "loss/train", "val_loss": "loss/val", "val_mIoU": "val/mIoU",
    "val_pixel_accuracy": "val/pixel_accuracy", "val_mean_class_accuracy": "val/mean_class_accuracy",
    "val_fw_iou": "val/fw_iou", "lr": "train/lr", "seconds": "time/seconds_per_epoch",
    "images_per_s": "time/images_per_s",
}  # fmt: skip


def require_tensorboard():
    """``torch.utils.tensorboard.SummaryWriter``, or one line saying how to install it.

    Raises:
        RuntimeError: the ``tensorboard`` package cannot be imported (the message names the extra).
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RuntimeError(f"--tensorboard (TrainConfig.tensorboard) needs the tensorboard package ({reason}): "
                           f"{INSTALL_HINT}, or drop --tensorboard") from None  # fmt: skip
    return SummaryWriter


def _class_tags(classes: Sequence[str]) -> list[str]:
    """``val_iou/<class>``: characters other than letters, digits, ``_ . -`` become ``_``; repeats get ``_<i>``."""
    tags, seen = [], set()
    for index, name in enumerate(classes):
        tag = "val_iou/" + (re.sub(r"[^A-Za-z0-9_.\-]", "_", str(name)) or f"class_{index}")
        tag = f"{tag}_{index}" if tag in seen else tag
        seen.add(tag)
        tags.append(tag)
    return tags


def _shrink(tile: torch.Tensor, max_side: int, mode: str) -> torch.Tensor:
    """``(3, H, W)`` uint8 -> longer side at most ``max_side`` (aspect kept)."""
    height, width = tile.shape[-2:]
    if max(height, width) <= max_side:
        return tile
    size = (max(1, round(height * max_side / max(height, width))), max(1, round(width * max_side / max(height, width))))
    smooth = mode == "bilinear"
    out = F.interpolate(tile[None].float(), size=size, mode=mode, **({"antialias": True} if smooth else {}))
    return out[0].round().clamp(0, 255).to(torch.uint8)


def prediction_grid(images: Sequence[torch.Tensor], masks: Sequence[torch.Tensor], preds: Sequence[torch.Tensor],
                    colors, *, ignore_index: int = 255, max_side: int = 256) -> torch.Tensor:
    """One picture of predictions: a row per image, image | ground truth | prediction.

    Args:
        images: N >= 1 ``(C, H, W)`` float images (a ``(N, C, H, W)`` tensor or a list; sizes may differ), C = 3
            (or 1), ImageNet-normalised (what the validation loader gives).
        masks: N ``(H, W)`` int64 ground truths, values in ``[0, K)`` or ``ignore_index``.
        preds: N ``(H, W)`` int64 predicted classes in ``[0, K)``, each the size of its mask.
        colors: K RGB triples 0..255 (``dataset.colors``).
        ignore_index: ground-truth value painted magenta (``seglab.viz.IGNORE_COLOR``), in both masks.
        max_side: tiles are shrunk so their longer side is at most this many pixels (the image antialiased,
            the masks nearest-neighbour, so no colour is invented).

    Returns:
        ``(3, rows, cols)`` uint8 tensor (``torchvision.utils.make_grid``, 2 px white lines; tiles of other
        sizes padded with white to the largest): ``rows = N * (h + 2) + 2``, ``cols = 3 * (w + 2) + 2``
        for tiles of ``h x w`` pixels.

    Raises:
        ValueError: a mask value outside ``[0, K)`` and ``ignore_index`` (``seglab.viz.colorize``), or images
            that are not channels-first (``seglab.viz.to_rgb``).
    """
    from torchvision.utils import make_grid

    from seglab.viz import colorize, to_rgb

    def chw(picture) -> torch.Tensor:  # (H, W, 3) uint8 numpy -> (3, H, W) uint8 tensor
        return torch.from_numpy(picture).permute(2, 0, 1)

    rows = []
    for image, mask, pred in zip(images, masks, preds):
        truth = colorize(mask, colors, ignore_index)
        guess = colorize(pred, colors, ignore_index, ignore_mask=mask == ignore_index)  # no colour where no label
        rows.append([_shrink(chw(to_rgb(image)), max_side, "bilinear"), _shrink(chw(truth), max_side, "nearest"),
                     _shrink(chw(guess), max_side, "nearest")])  # fmt: skip
    height = max(tile.shape[1] for row in rows for tile in row)
    width = max(tile.shape[2] for row in rows for tile in row)
    tiles = [F.pad(tile, (0, width - tile.shape[2], 0, height - tile.shape[1]), value=255)
             for row in rows for tile in row]  # fmt: skip
    return make_grid(tiles, nrow=3, padding=2, pad_value=255)


class TensorBoardLogger:
    """Writes a run's epochs to ``<config.out>/tensorboard/``; a ``fit`` callback: ``logger(record, history)``.

    Args:
        state: the ``RunState`` of the run (``seglab.engine.prepare``): its model, validation loader, classes,
            colours, precision and ``dist`` (only rank 0 writes; elsewhere the logger does nothing).
        history: the records of the epochs already done (a resumed run's history): their numbers are
            written when the folder has no event file yet.
        num_images: how many validation images the prediction grid shows (the first ones of the loader, fewer
            if the split has fewer; 0 = no grid).
        max_side: longer side of each tile of the grid, pixels (``prediction_grid``).

    Raises:
        RuntimeError: the ``tensorboard`` package is missing (:func:`require_tensorboard`).
        FileExistsError: ``<out>/tensorboard`` is a symbolic link (never written through).
        NotADirectoryError: ``<out>/tensorboard`` is a file.
    """

    def __init__(self, state, *, history: Sequence[dict] = (), num_images: int = 4, max_side: int = 256) -> None:
        self.state, self.writer = state, None
        self.log_dir = Path(state.config.out) / "tensorboard"
        if not state.dist.is_main:
            return
        writer_class = require_tensorboard()
        if self.log_dir.is_symlink():
            raise FileExistsError(f"{self.log_dir} is a symbolic link; refusing to write TensorBoard events through it "
                                  "(they belong inside the run folder): remove the link, or train into another --out")
        if self.log_dir.exists() and not self.log_dir.is_dir():
            raise NotADirectoryError(f"{self.log_dir} is a file where --tensorboard writes its folder: move the file, "
                                     "or train into another --out")  # fmt: skip
        self.log_dir.mkdir(exist_ok=True)  # the run folder exists (fit holds its lock)
        had_events = any(self.log_dir.glob("*tfevents*"))
        self.samples = _first_images(state.val_loader, num_images)  # the same images every epoch
        self.max_side, self.tags = max_side, _class_tags(state.classes)
        self.colors = state.colors or _default_colors(state.num_classes)
        # purge_step: TensorBoard drops what earlier event files logged from this epoch on (a resumed run)
        self.writer = writer_class(log_dir=str(self.log_dir), purge_step=state.epoch + 1)
        if not had_events:  # turned on at a resume: the earlier epochs' numbers, from the history
            for record in history:
                self._scalars(record)
            self.writer.flush()

    def __call__(self, record: dict, history: list | None = None) -> None:
        """Write the epoch of ``record`` (a ``fit`` record): its numbers and the prediction grid; flush."""
        if self.writer is None:
            return
        self._scalars(record)
        if self.samples:
            images, masks = zip(*self.samples)
            grid = prediction_grid(images, masks, self._predict(), self.colors,
                                   ignore_index=self.state.config.ignore_index, max_side=self.max_side)  # fmt: skip
            self.writer.add_image("val/predictions", grid, global_step=record["epoch"], dataformats="CHW")
        self.writer.flush()  # TensorBoard shows the epoch now; a kill loses nothing written

    def _scalars(self, record: dict) -> None:
        step = record["epoch"]
        for key, tag in SCALAR_TAGS.items():
            if record.get(key) is not None:
                self.writer.add_scalar(tag, float(record[key]), global_step=step)
        for tag, iou in zip(self.tags, record.get("val_iou_per_class", [])):
            if iou is not None and not math.isnan(iou):
                self.writer.add_scalar(tag, float(iou), global_step=step)

    @torch.no_grad()
    def _predict(self) -> list[torch.Tensor]:
        """The ``(H, W)`` int64 classes of each grid image, on the CPU, predicted as ``fit`` scores them."""
        from seglab.inference import infer_logits

        state, config = self.state, self.state.config
        model, training = state.model, state.model.training
        model.eval()
        preds = []
        for image, _ in self.samples:  # one at a time: validation images may differ in size
            batch = image[None].to(state.device)  # (1, C, H, W)
            if state.channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            with torch.autocast(state.device.type, dtype=state.amp_dtype, enabled=state.amp_dtype is not None):
                logits = infer_logits(model, batch, max_size=config.max_size if config.val_full_size else None,
                                      pad_multiple=config.pad_multiple)  # (1, K, H, W)
            preds.append(logits[0].float().argmax(0).cpu())
        model.train(training)
        return preds

    def close(self) -> None:
        """Flush and close the event file (``fit`` does it when the run ends, however it ends)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def __enter__(self) -> "TensorBoardLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _first_images(loader, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``count`` ``(image (C, H, W), mask (H, W))`` pairs of ``loader``, on the CPU (fewer if it has
    fewer)."""
    samples = []
    for images, masks in loader if count > 0 else ():
        samples += [(image.cpu(), mask.cpu()) for image, mask in zip(images[: count - len(samples)], masks)]
        if len(samples) >= count:
            break
    return samples


def _default_colors(num_classes: int) -> list[list[int]]:
    """The VOC colour map's first ``num_classes`` colours: for a dataset without a palette."""
    from seglab.data.palettes import voc_colormap

    return voc_colormap(num_classes).tolist()
